import type { Db } from '../db/database.js';

export interface StoredResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: unknown;
}

export type Claim =
  | { kind: 'claimed' }
  | { kind: 'replay'; response: StoredResponse }
  | { kind: 'mismatch' }
  | { kind: 'in_progress' };

/**
 * Idempotency-Key bookkeeping.
 * Concurrency: the first request inserts a pending row (insert … on conflict do nothing); a
 * concurrent duplicate sees the row without a response and is told the first is still in progress.
 */
export async function claimKey(
  db: Db,
  principal: string,
  key: string,
  method: string,
  path: string,
  hash: string,
): Promise<Claim> {
  const inserted = await db
    .insertInto('idempotency_keys')
    .values({ principal, key, method, path, request_hash: hash })
    .onConflict((oc) => oc.doNothing())
    .returning('key')
    .executeTakeFirst();
  if (inserted) return { kind: 'claimed' };
  const row = await db
    .selectFrom('idempotency_keys')
    .select(['method', 'path', 'request_hash', 'status_code', 'response'])
    .where('principal', '=', principal)
    .where('key', '=', key)
    .executeTakeFirst();
  if (!row) return claimKey(db, principal, key, method, path, hash);
  if (row.request_hash !== hash || row.method !== method || row.path !== path) return { kind: 'mismatch' };
  if (row.status_code === null) return { kind: 'in_progress' };
  return { kind: 'replay', response: row.response as StoredResponse };
}

export async function completeKey(
  db: Db,
  principal: string,
  key: string,
  response: StoredResponse,
): Promise<void> {
  await db
    .updateTable('idempotency_keys')
    .set({ status_code: response.statusCode, response: JSON.stringify(response) })
    .where('principal', '=', principal)
    .where('key', '=', key)
    .execute();
}

/** A request that failed on the server side releases its key so that a retry can run. */
export async function releaseKey(db: Db, principal: string, key: string): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where('principal', '=', principal)
    .where('key', '=', key)
    .where('status_code', 'is', null)
    .execute();
}
