import { type RawBuilder, sql } from 'kysely';

/** Anything raw SQL runs on: a Db, a transaction, the owner's connection in a migration. */
export type Executor = Parameters<RawBuilder<unknown>['execute']>[0];

/** A tenant's data key (or the platform's, tenant null) as stored: wrapped by a KEK. */
export interface DataKeyRow {
  id: string;
  tenant_id: string | null;
  key_id: string;
  wrapped: Buffer;
}

/** What a wrapped DEK is bound to: a wrapped key copied to another id or tenant does not unwrap. */
export const wrapContext = (row: { id: string; tenant_id: string | null }): string =>
  `tenantry-dek|${row.id}|${row.tenant_id ?? 'platform'}`;

export async function currentDataKey(db: Executor, tenantId: string | null): Promise<DataKeyRow | undefined> {
  const r = await sql<DataKeyRow>`
    select id, tenant_id, key_id, wrapped from data_keys
    where tenant_id is not distinct from ${tenantId}::uuid and retired_at is null`.execute(db);
  return r.rows[0];
}

export async function dataKeyById(db: Executor, id: string): Promise<DataKeyRow | undefined> {
  const r = await sql<DataKeyRow>`
    select id, tenant_id, key_id, wrapped from data_keys where id = ${id}::uuid`.execute(db);
  return r.rows[0];
}

/**
 * Inserts a tenant's first data key. Concurrency contract: the unique index on the tenant (one
 * live key per tenant) with `on conflict do nothing`; the caller reads the current key again
 * afterwards, so two racing writers both use the one that was inserted first.
 */
export async function insertDataKey(db: Executor, row: DataKeyRow): Promise<void> {
  await sql`
    insert into data_keys (id, tenant_id, key_id, wrapped)
    values (${row.id}::uuid, ${row.tenant_id}::uuid, ${row.key_id}, ${row.wrapped})
    on conflict do nothing`.execute(db);
}

/** Data keys wrapped by any KEK other than `keyId` (what a rotation still has to re-wrap). */
export async function dataKeysNotWrappedBy(db: Executor, keyId: string): Promise<DataKeyRow[]> {
  const r = await sql<DataKeyRow>`
    select id, tenant_id, key_id, wrapped from data_keys where key_id <> ${keyId} order by id`.execute(db);
  return r.rows;
}

/** The KEKs that still wrap some data key. */
export async function kekIdsInUse(db: Executor): Promise<Set<string>> {
  const r = await sql<{ key_id: string }>`select distinct key_id from data_keys`.execute(db);
  return new Set(r.rows.map((x) => x.key_id));
}

/**
 * Replaces one data key's wrapping. Concurrency contract: compare-and-set on the KEK it was read
 * with (`key_id = from`); a concurrent rotation that re-wrapped it first wins and this one is a
 * no-op (false). The DEK itself never changes, so every ciphertext stays readable throughout.
 */
export async function rewrapDataKey(
  db: Executor,
  id: string,
  from: string,
  to: { keyId: string; wrapped: Buffer },
): Promise<boolean> {
  const r = await sql`
    update data_keys set key_id = ${to.keyId}, wrapped = ${to.wrapped}, rewrapped_at = now()
    where id = ${id}::uuid and key_id = ${from}`.execute(db);
  return Number(r.numAffectedRows ?? 0) === 1;
}
