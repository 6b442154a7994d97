import { type RawBuilder, sql } from 'kysely';
import { chainOf } from '../audit/audit-hash.js';
import type { Trx } from '../db/database.js';

/** The advisory lock space of tenant write locks (first key of pg_advisory_xact_lock(int, int)). */
const TENANT_WRITES = 0x7465_6e01;

/**
 * The tenant write lock: one transaction-level advisory lock per audit chain (a tenant's id, or
 * 'platform' for platform objects), taken before any row of that tenant is locked for a change and
 * before its audit chain head. Issue 15 found `deadlock detected` under two controllers: the change
 * path locked an object's row and then the tenant's chain head, event sequence and reconcile jobs,
 * and a multi-object apply took those tenant-wide locks before the next object's row, while a
 * controller's status write locked its object's row first and the tenant-wide ones after.
 *
 * Concurrency contract: every writer of a tenant's desired state (the change path, through
 * findById/findBySlug `forUpdate`) and of its status (the controller's status transaction) takes
 * this lock first, so their row, sequence and job locks are taken one transaction at a time per
 * tenant and cannot cross. (The audit append takes no lock at all since issue 17: the record is
 * written unsequenced and the audit sequencer chains it after commit.) Re-entrant within a transaction; released
 * at its end. Distinct tenants never wait on each other (unless their keys collide in the hash).
 */
export function tenantWriteLockSql(chain: string | RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`pg_advisory_xact_lock(${TENANT_WRITES}::int, hashtext(${chain}))`;
}

/**
 * The chains whose write lock a transaction holds, so that taking it again costs no round trip (the
 * lock is held to the transaction's end; nothing in src/ uses savepoints, which could release it).
 */
const held = new WeakMap<Trx, Set<string>>();

/** Notes that `trx` holds the write lock of `chain` (taken by a statement of its own, e.g. findById). */
export function noteTenantWriteLock(trx: Trx, chain: string): void {
  const chains = held.get(trx);
  if (chains) chains.add(chain);
  else held.set(trx, new Set([chain]));
}

/** Takes the tenant write lock of `tenantId` (null: the platform's), unless this transaction holds it. */
export async function lockTenantWrites(trx: Trx, tenantId: string | null): Promise<void> {
  const chain = chainOf(tenantId?.toLowerCase() ?? null);
  if (held.get(trx)?.has(chain)) return;
  await sql`select ${tenantWriteLockSql(chain)}`.execute(trx);
  noteTenantWriteLock(trx, chain);
}
