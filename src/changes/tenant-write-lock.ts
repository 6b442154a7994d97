import { type RawBuilder, sql } from 'kysely';
import { chainOf, PLATFORM_CHAIN } from '../audit/audit-hash.js';
import type { Trx } from '../db/database.js';

/** The advisory lock space of tenant write locks (first key of pg_advisory_xact_lock(int, int)). */
const TENANT_WRITES = 0x7465_6e01;

/**
 * How a transaction holds its tenant's write lock: `change` (shared) for the change path, whose
 * writers of one tenant run side by side; `status` (exclusive) for the controller's status writes and
 * the other writers that lock a tenant's rows in an order of their own.
 */
export type TenantLockMode = 'change' | 'status';

/**
 * The tenant write lock: one transaction-level advisory lock per tenant (its id, or 'platform' for
 * platform objects), taken before any row of that tenant is locked for a write. Issue 15 found
 * `deadlock detected` under two controllers: a multi-object apply locked an object's row and its
 * reconcile job before the next object's row, while a controller's status write locked its object's
 * row first and its parents' reconcile jobs after.
 *
 * Concurrency contract: the change path (findById/findBySlug `forUpdate`, recordChange) takes the
 * lock shared; a status write (src/controller, the lease monitor, tenant migrations, release
 * rollouts) takes it exclusive, before any row. So a status write never runs beside a change of its
 * tenant, and their row and job locks cannot cross; changes of one tenant run side by side (issue
 * 17): between them, rows are locked in one order (apply sorts its documents) and each object's job
 * right after its row, and the only tenant-wide lock they share, the event sequence's counter row,
 * is taken at commit, last (src/events/append-event.ts). The audit append takes no lock at all.
 * Re-entrant within a transaction; released at its end. A transaction that holds it shared and asks
 * for it exclusive takes the exclusive lock too (two such upgrades at once would deadlock and be
 * retried; no code path does it today). Distinct tenants never wait on each other (unless their
 * keys collide in the hash).
 */
export function tenantWriteLockSql(
  chain: string | RawBuilder<unknown>,
  mode: TenantLockMode,
): RawBuilder<unknown> {
  return mode === 'change'
    ? sql`pg_advisory_xact_lock_shared(${TENANT_WRITES}::int, hashtext(${chain}))`
    : sql`pg_advisory_xact_lock(${TENANT_WRITES}::int, hashtext(${chain}))`;
}

/**
 * The chains whose write lock a transaction holds, and how, so that taking it again costs no round
 * trip (the lock is held to the transaction's end; nothing in src/ uses savepoints, which could
 * release it).
 */
const held = new WeakMap<Trx, Map<string, TenantLockMode>>();

/** Notes that `trx` holds the write lock of `chain` (taken by a statement of its own, e.g. findById). */
export function noteTenantWriteLock(trx: Trx, chain: string, mode: TenantLockMode): void {
  const chains = held.get(trx) ?? new Map<string, TenantLockMode>();
  held.set(trx, chains);
  if (chains.get(chain) !== 'status') chains.set(chain, mode);
}

/** Takes the tenant write lock of `tenantId` (null: the platform's), unless this transaction holds it so. */
export async function lockTenantWrites(
  trx: Trx,
  tenantId: string | null,
  mode: TenantLockMode = 'status',
): Promise<void> {
  const chain = chainOf(tenantId?.toLowerCase() ?? null);
  const has = held.get(trx)?.get(chain);
  if (has === 'status' || has === mode) return;
  await sql`select ${tenantWriteLockSql(chain, mode)}`.execute(trx);
  noteTenantWriteLock(trx, chain, mode);
}

/**
 * lockTenantWrites of many tenants in one round trip, in the order given (a caller that locks the
 * rows of several tenants in one transaction keeps one order of its own); those this transaction
 * holds so already are left out.
 */
export async function lockTenantsWrites(
  trx: Trx,
  tenantIds: readonly (string | null)[],
  mode: TenantLockMode = 'status',
): Promise<void> {
  const chains = [...new Set(tenantIds.map((id) => chainOf(id?.toLowerCase() ?? null)))].filter((chain) => {
    const has = held.get(trx)?.get(chain);
    return has !== 'status' && has !== mode;
  });
  if (chains.length === 0) return;
  if (chains.length === 1)
    return lockTenantWrites(trx, chains[0] === PLATFORM_CHAIN ? null : chains[0]!, mode);
  await sql`select ${tenantWriteLockSql(sql.ref('x.chain'), mode)}
    from unnest(${chains}::text[]) with ordinality as x(chain, n) order by x.n`.execute(trx);
  for (const chain of chains) noteTenantWriteLock(trx, chain, mode);
}
