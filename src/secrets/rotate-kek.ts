import { dataKeysNotWrappedBy, type Executor, kekIdsInUse, rewrapDataKey, wrapContext } from './data-keys.js';
import type { KeyProvider } from './key-provider.js';

export interface Rewrapped {
  /** The KEK that now wraps every data key. */
  keyId: string;
  /** Data keys re-wrapped by this run. */
  rewrapped: number;
  /** KEKs that still wrap a data key (only the current one once the run is through). */
  inUse: string[];
}

/**
 * Re-wraps every data key under the provider's current KEK, one compare-and-set each. Data is not
 * re-encrypted: the DEKs stay the same, so every ciphertext stays readable throughout, and running
 * processes keep working (they hold unwrapped DEKs, and the local file provider reads a KEK id it
 * does not know from the file again). Safe to run again, and concurrently with itself.
 */
export async function rewrapDataKeys(
  keys: KeyProvider,
  access: <T>(work: (db: Executor) => Promise<T>) => Promise<T>,
): Promise<Rewrapped> {
  const keyId = await keys.currentKeyId();
  let rewrapped = 0;
  for (const row of await access((db) => dataKeysNotWrappedBy(db, keyId))) {
    const context = wrapContext(row);
    const dek = await keys.unwrap(row.key_id, row.wrapped, context);
    const next = await keys.wrap(dek, context);
    if (await access((db) => rewrapDataKey(db, row.id, row.key_id, next))) rewrapped++;
  }
  return { keyId, rewrapped, inUse: [...(await access((db) => kekIdsInUse(db)))] };
}
