import { sql } from 'kysely';
import { clearSealedOf } from '../agent/agent-commands.js';
import { recordChange } from '../changes/change-path.js';
import { systemContext } from '../context/request-context.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import type { Trx } from '../db/database.js';
import type { Placement } from '../placement/placement.policy.js';
import { ProviderError } from '../providers/provider.js';
import { findById, updateObject } from '../registry/object.repository.js';
import type { StepContext } from '../workflows/workflow.js';
import { type Arrival, settleArrivals } from './arrived-status.js';
import { bindingOf, changeOf, readMigration, recordSwitch } from './migration-records.js';

/**
 * Moves a tenant between the two regions of a region migration, in the caller's transaction: the
 * cut-over (`forward`, source → target region) and the rollback (`back`, target → source) are the
 * same move in opposite directions.
 * - the database resources' secret references resolve to the arriving side's credentials (the
 *   leaving side's are kept under their key: the source's for a rollback, the target's until dropped);
 * - the tenant's region, placement and cell; the cells' allocations;
 * - the migration record (CutOver with its freeze and rollback window, or RolledBack with the
 *   rollback's freeze);
 * - the tenant's change (event `tenant.region_migrated` or `tenant.migration_rolled_back`, with the
 *   previous and new placement) and the audit record;
 * - the databases' status: Ready with the arriving side's details (./arrived-status.ts), so their
 *   credentials name the arriving side's server from the commit on;
 * - a reconcile of every moved resource.
 */
/** A switching step's output: the arriving side as observed for the status the switch writes. */
export interface Switched {
  /** Absent in a step recorded before the switch wrote status (the reconcile writes it then). */
  arrived?: Arrival[];
}

/** What of a region migration's plan (region-migration.ts) the switch needs. */
export interface RegionSwitchPlan {
  fromRegion: string;
  toRegion: string;
  databases: { resourceId: string; sourceKey: string; targetKey: string }[];
  blobs: { resourceId: string }[];
  topics: { resourceId: string }[];
}

export async function switchTenantRegion(
  trx: Trx,
  { tenantId, workflowId, input: { migrationId } }: StepContext<{ migrationId: string }>,
  plan: RegionSwitchPlan,
  direction: 'forward' | 'back',
  /** The switching step's output: the arriving databases as it observed them (./arrived-status.ts). */
  { arrived = [] }: Switched,
): Promise<void> {
  // The readers handed over are done with: what a crash left sealed in the commands goes.
  await clearSealedOf(trx, workflowId);
  const m = await readMigration(trx, migrationId);
  const ctx = systemContext(`tenantry-workflow ${migrationId}`);
  const forward = direction === 'forward';
  const [from, to] = forward ? [m.source, m.target] : [m.target, m.source];
  const region = forward ? plan.toRegion : plan.fromRegion;
  for (const d of plan.databases) {
    // Keys swap in two statements (a primary key is checked row by row).
    const [away, home] = forward ? [d.sourceKey, d.targetKey] : [d.targetKey, d.sourceKey];
    await sql`update resource_secrets set resource_id = ${away} where resource_id = ${d.resourceId}`.execute(
      trx,
    );
    await sql`update resource_secrets set resource_id = ${d.resourceId} where resource_id = ${home}`.execute(
      trx,
    );
  }
  const t = await findById(trx, 'Tenant', tenantId, { forUpdate: true });
  if (!t) throw new ProviderError('the tenant no longer exists', 'TenantGone', false);
  const placement: Placement = { ...(t.placement as Placement), ...bindingOf(to) };
  const updated = await updateObject(trx, 'Tenant', t.id, {
    spec: JSON.stringify({ ...(t.spec as object), region }),
    placement: JSON.stringify(placement),
    cell_id: to.cellUuid,
    region,
  });
  await recordChange(
    trx,
    ctx,
    changeOf('Tenant', t, updated, forward ? 'migrate_region' : 'revert_migration'),
  );
  await sql`update cells set allocated = greatest(allocated - 1, 0) where id = ${from.cellUuid}`.execute(trx);
  await sql`update cells set allocated = allocated + 1 where id = ${to.cellUuid}`.execute(trx);
  await recordSwitch(trx, ctx, { tenantId, tenantSlug: t.slug, migrationId, from, to }, direction);
  await settleArrivals(
    trx,
    ctx,
    plan.databases.map((d) => d.resourceId),
    arrived,
  );
  for (const r of [...plan.databases, ...plan.blobs, ...plan.topics])
    await enqueueJob(trx, { kind: 'IntegrationResource', objectId: r.resourceId, tenantId, generation: 0 });
}
