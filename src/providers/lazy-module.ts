/**
 * A client library loaded at its first use rather than with Tenantry's modules: a server that does
 * not use the provider (its cluster or account not configured) does not carry the library's code.
 * `loaded()` is synchronous, for telling the library's errors apart: until `load()` has resolved, no
 * object of the library (client, error) can exist.
 */
export interface LazyModule<T> {
  load(): Promise<T>;
  loaded(): T | undefined;
}

export function lazyModule<T>(importer: () => Promise<T>): LazyModule<T> {
  let loading: Promise<T> | undefined;
  let loaded: T | undefined;
  return {
    load() {
      loading ??= importer().then(
        (m) => {
          loaded = m;
          return m;
        },
        (err: unknown) => {
          loading = undefined;
          throw err;
        },
      );
      return loading;
    },
    loaded: () => loaded,
  };
}
