import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';

type Client = PostgresPoolClient & {
  query: (sql: string, parameters?: readonly unknown[]) => Promise<unknown>;
};

const NOTHING = { command: 'SELECT', rowCount: 0, rows: [] } as unknown as PostgresQueryResult<never>;

/**
 * The pool Kysely uses, with `begin` sent together with the transaction's first statement when that
 * statement has no parameters (e.g. `inScope`'s scope statement): one round trip instead of two
 * for every transaction. node-postgres sends a statement without parameters as a simple query, where
 * `begin; select …` runs as two statements of one message, with their results in order; the first
 * statement's result is the caller's. A first statement with parameters (extended protocol, one
 * statement per message) is preceded by its own `begin`, as before; a transaction that ends with no
 * statement sends nothing. Errors are those of separate statements: a failing first statement leaves
 * the transaction begun and aborted, and Kysely rolls it back.
 *
 * Written by hand: node-postgres does not pipeline, and Kysely's driver sends `begin` on its own.
 */
export function deferBegin(pool: PostgresPool): PostgresPool {
  const wrapped = new WeakMap<PostgresPoolClient, PostgresPoolClient>();
  return {
    end: () => pool.end(),
    async connect() {
      const client = (await pool.connect()) as Client;
      let wrapper = wrapped.get(client);
      if (!wrapper) {
        wrapper = withDeferredBegin(client);
        wrapped.set(client, wrapper);
      }
      return wrapper;
    },
  };
}

function withDeferredBegin(client: Client): PostgresPoolClient {
  let pending = false;
  const query = async (text: string, parameters: readonly unknown[] = []): Promise<unknown> => {
    if (text === 'begin' && parameters.length === 0) {
      pending = true;
      return NOTHING;
    }
    if (!pending) return client.query(text, parameters);
    pending = false;
    if (text === 'commit' || text === 'rollback') return NOTHING;
    if (parameters.length > 0) {
      await client.query('begin');
      return client.query(text, parameters);
    }
    const results = (await client.query(`begin;\n${text}`)) as unknown[];
    return results[results.length - 1];
  };
  return {
    query: query as PostgresPoolClient['query'],
    release: () => {
      pending = false;
      client.release();
    },
  };
}
