import { sql } from 'kysely';
import { chainOf } from '../audit/audit-hash.js';
import { noteTenantWriteLock, tenantWriteLockSql } from '../changes/tenant-write-lock.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import type { Kind } from '../registry/kinds/index.js';
import type { ObjectRow } from '../registry/object.repository.js';
import type { Condition } from '../registry/representation.js';
import { type ChildTransition, pokeParentsOf } from './queue/poke-parents.js';
import {
  type ObservedStatus,
  recordStatusEvents,
  type StatusEvent,
  type StatusTarget,
  type StatusTransition,
  writeStatuses,
} from './status.js';

/** One object's status to write at the end of its reconcile. */
export interface Settlement {
  kind: Kind;
  /** The row as the reconcile read it (its generation, phase and conditions before). */
  row: ObjectRow;
  status: ObservedStatus;
  /** More writes of the same transaction (e.g. a `drifted` event), after the status. */
  extra?: (trx: Trx, ctx: RequestContext) => Promise<void>;
  /**
   * A resource's provider call acted on the tenant being suspended (true) or not (false): when the
   * committed lifecycle says otherwise under the tenant's write lock, nothing is written for it
   * (`moved`), and the reconcile acts again (see reconcileResource).
   */
  actedSuspended?: boolean;
}

/** What became of one settlement. */
export interface Settled {
  /** The tenant's lifecycle moved during the provider call: nothing was written. */
  moved: boolean;
  transition: StatusTransition | undefined;
}

export const target = (kind: Kind, row: ObjectRow): StatusTarget => ({
  kind,
  id: row.id,
  slug: row.slug,
  tenantId: kind === 'Tenant' ? row.id : (row.tenant_id ?? null),
  generation: row.generation,
  phase: row.phase,
  conditions: (row.conditions as Condition[]) ?? [],
});

/** SQL: the tenant `t` is suspended for its resources (suspended, archived, or its writes frozen by a migration). */
export const suspendedSql = sql`(t.lifecycle in ('Suspended', 'Archived')
    or exists (select from tenant_migrations m where m.tenant_id = t.id and m.writes_frozen))`;

/**
 * Takes the write locks of many tenants (null: the platform's) in one statement, in the order of
 * their chain names: every holder of more than one takes them in that order, so none waits in a
 * circle (src/changes/tenant-write-lock.ts; re-entrant within the transaction).
 */
export async function lockTenantsWrites(trx: Trx, tenantIds: (string | null)[]): Promise<void> {
  const chains = [...new Set(tenantIds.map((id) => chainOf(id?.toLowerCase() ?? null)))].sort();
  await sql`select count(${tenantWriteLockSql(sql`s.c`, 'status')}) from (select c from unnest(${chains}::text[]) c order by c) s`.execute(
    trx,
  );
  for (const c of chains) noteTenantWriteLock(trx, c, 'status');
}

/**
 * Writes the status of any number of objects in the caller's transaction, set-based: one statement
 * takes the write locks of all their tenants, one checks the lifecycle resources acted on, one per
 * table writes the statuses, one records the ready/failed events with their audit records, one pokes
 * the parents of the children that changed. `extra` writes run one by one (they are rare: drift).
 *
 * Concurrency contract (lock order, src/changes/tenant-write-lock.ts): the tenants' write locks
 * first, in one statement and in the order of their chain names, so two batches that share tenants
 * wait for each other instead of deadlocking; then the objects' rows, the tenants' audit chain and
 * event sequences, the parents' jobs. Everything a single settlement read under its tenant's lock
 * (the lifecycle, the siblings' phases for pokeParents) it reads here under the same lock.
 */
export async function settleAll(
  trx: Trx,
  items: Settlement[],
  context: () => RequestContext,
  opts: { jobLockTimeoutMs?: number } = {},
): Promise<Settled[]> {
  if (items.length === 0) return [];
  await lockTenantsWrites(
    trx,
    items.map((it) => target(it.kind, it.row).tenantId),
  );

  const moved = new Set<number>();
  const guarded = items.flatMap((it, i) => (it.actedSuspended === undefined ? [] : [i]));
  if (guarded.length > 0) {
    const r = await sql<{ id: string; suspended: boolean }>`
      select r.id, ${suspendedSql} as suspended
      from integration_resources r join tenants t on t.id = r.tenant_id
      where r.id = any(${guarded.map((i) => items[i]!.row.id)}::uuid[])`.execute(trx);
    const now = new Map(r.rows.map((x) => [String(x.id).toLowerCase(), x.suspended]));
    for (const i of guarded) {
      const it = items[i]!;
      const s = now.get(it.row.id.toLowerCase());
      if (s !== undefined && s !== it.actedSuspended) moved.add(i);
    }
  }

  const live = items.flatMap((it, i) => (moved.has(i) ? [] : [{ it, i }]));
  const transitions = await writeStatuses(
    trx,
    live.map(({ it }) => ({ target: target(it.kind, it.row), status: it.status })),
  );
  const events: StatusEvent[] = [];
  const children: ChildTransition[] = [];
  const result: Settled[] = items.map(() => ({ moved: true, transition: undefined }));
  for (const [n, { it, i }] of live.entries()) {
    const tr = transitions[n]!;
    result[i] = { moved: false, transition: tr };
    const t = target(it.kind, it.row);
    const ctx = context();
    if (it.extra) await it.extra(trx, ctx);
    const event = {
      previousPhase: t.phase,
      phase: it.status.phase,
      reason: it.status.ready.reason,
      message: it.status.ready.message,
    };
    if (tr.becameReady) events.push({ ctx, target: t, what: 'ready', event });
    if (tr.becameFailed) events.push({ ctx, target: t, what: 'failed', event });
    if (tr.changed && (it.kind === 'IntegrationResource' || it.kind === 'Deployment') && it.row.tenant_id)
      children.push({
        tenantId: String(it.row.tenant_id),
        deploymentId:
          it.kind === 'IntegrationResource' && it.row.deployment_id ? String(it.row.deployment_id) : null,
        force: tr.becameFailed,
      });
  }
  await recordStatusEvents(trx, events);
  // A batch writes many jobs' rows (parents, its own), where a writer that holds some of them without
  // the tenants' write locks (a heartbeat, a test's loop of enqueues) may wait on others of ours: the
  // batch gives up first (and its settlements are written one by one) rather than deadlock.
  if (opts.jobLockTimeoutMs)
    await sql`select set_config('lock_timeout', ${`${opts.jobLockTimeoutMs}ms`}, true)`.execute(trx);
  await pokeParentsOf(trx, children);
  return result;
}
