import { sql } from 'kysely';
import type { Trx } from '../db/database.js';

export interface StoredResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: unknown;
  /** A one-time secret was replaced by a notice before the response was stored. */
  redacted?: boolean;
}

/**
 * Whose record: the whole caller (issuer, subject, application, tenant scope) and the request
 * (method, path, key). Another caller, another scope or another route never sees the record.
 */
export interface IdempotencyRecordKey {
  issuer: string;
  principal: string;
  appId: string;
  /** The caller's tenant, or null for the platform scope. */
  tenantId: string | null;
  method: string;
  path: string;
  key: string;
}

export type Claim =
  | { kind: 'claimed' }
  | { kind: 'replay'; response: StoredResponse }
  | { kind: 'mismatch' }
  | { kind: 'in_progress' };

const where = (k: IdempotencyRecordKey) => ({
  issuer: k.issuer,
  principal: k.principal,
  app_id: k.appId,
  scope: k.tenantId ?? 'platform',
  method: k.method,
  path: k.path,
  key: k.key,
});

/**
 * Idempotency-Key bookkeeping, in the caller's row-level-security scope (`trx` is scoped to the caller).
 * Concurrency: the first request inserts a pending row (insert … on conflict do nothing); a
 * concurrent duplicate sees the row without a response and is told the first is still in progress.
 * An expired record is deleted before the insert, so its key starts afresh.
 */
export async function claimKey(
  trx: Trx,
  k: IdempotencyRecordKey,
  hash: string,
  ttlSeconds: number,
): Promise<Claim> {
  await trx
    .deleteFrom('idempotency_keys')
    .where((eb) => eb.and(where(k)))
    .where('expires_at', '<=', new Date())
    .execute();
  const inserted = await trx
    .insertInto('idempotency_keys')
    .values({
      ...where(k),
      tenant_id: k.tenantId,
      request_hash: hash,
      expires_at: new Date(Date.now() + ttlSeconds * 1000),
    })
    .onConflict((oc) => oc.doNothing())
    .returning('key')
    .executeTakeFirst();
  if (inserted) return { kind: 'claimed' };
  const row = await trx
    .selectFrom('idempotency_keys')
    .select(['request_hash', 'status_code', 'response'])
    .where((eb) => eb.and(where(k)))
    .executeTakeFirst();
  if (!row) return { kind: 'in_progress' };
  if (row.request_hash !== hash) return { kind: 'mismatch' };
  if (row.status_code === null) return { kind: 'in_progress' };
  return { kind: 'replay', response: row.response as StoredResponse };
}

/**
 * The key's record inside the transaction of the write it answers (see idempotent-write.ts): false
 * when a record of the key exists (waits for a concurrent one's transaction to end). An expired
 * record is deleted first, so its key starts afresh.
 */
export async function insertPendingKey(
  trx: Trx,
  k: IdempotencyRecordKey,
  hash: string,
  ttlSeconds: number,
): Promise<boolean> {
  const res = await sql<{ key: string }>`
    with expired as (
      delete from idempotency_keys
      where issuer = ${k.issuer} and principal = ${k.principal} and app_id = ${k.appId}
        and scope = ${k.tenantId ?? 'platform'} and method = ${k.method} and path = ${k.path}
        and key = ${k.key} and expires_at <= now()
    )
    insert into idempotency_keys
      (issuer, principal, app_id, scope, tenant_id, method, path, key, request_hash, expires_at)
    values (${k.issuer}, ${k.principal}, ${k.appId}, ${k.tenantId ?? 'platform'}, ${k.tenantId}, ${k.method},
            ${k.path}, ${k.key}, ${hash}, now() + make_interval(secs => ${ttlSeconds}))
    on conflict do nothing
    returning key`.execute(trx);
  return res.rows.length === 1;
}

/** The record of a key, without claiming it: what a request with the key must do. */
export async function lookupKey(trx: Trx, k: IdempotencyRecordKey, hash: string): Promise<Claim | null> {
  const row = await trx
    .selectFrom('idempotency_keys')
    .select(['request_hash', 'status_code', 'response'])
    .where((eb) => eb.and(where(k)))
    .where('expires_at', '>', new Date())
    .executeTakeFirst();
  if (!row) return null;
  if (row.request_hash !== hash) return { kind: 'mismatch' };
  if (row.status_code === null) return { kind: 'in_progress' };
  return { kind: 'replay', response: row.response as StoredResponse };
}

/** Saves an answer that no write carried (a refusal, a dry run); a record already there wins. */
export async function saveAnswer(
  trx: Trx,
  k: IdempotencyRecordKey,
  hash: string,
  ttlSeconds: number,
  response: StoredResponse,
): Promise<void> {
  await trx
    .insertInto('idempotency_keys')
    .values({
      ...where(k),
      tenant_id: k.tenantId,
      request_hash: hash,
      status_code: response.statusCode,
      response: JSON.stringify(response),
      expires_at: new Date(Date.now() + ttlSeconds * 1000),
    })
    .onConflict((oc) => oc.doNothing())
    .execute();
}

/** Stores the (already redacted) response of a claimed key. */
export async function completeKey(
  trx: Trx,
  k: IdempotencyRecordKey,
  response: StoredResponse,
): Promise<void> {
  await trx
    .updateTable('idempotency_keys')
    .set({ status_code: response.statusCode, response: JSON.stringify(response) })
    .where((eb) => eb.and(where(k)))
    .execute();
}

/** A request that failed on the server side releases its key so that a retry can run. */
export async function releaseKey(trx: Trx, k: IdempotencyRecordKey): Promise<void> {
  await trx
    .deleteFrom('idempotency_keys')
    .where((eb) => eb.and(where(k)))
    .where('status_code', 'is', null)
    .execute();
}

/** Deletes up to `limit` expired records of the transaction's scope; returns how many. */
export async function deleteExpiredKeys(trx: Trx, limit = 1000): Promise<number> {
  const res = await sql`delete from idempotency_keys where ctid in
    (select ctid from idempotency_keys where expires_at <= now() limit ${limit})`.execute(trx);
  return Number(res.numAffectedRows ?? 0);
}
