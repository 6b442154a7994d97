import { sql } from 'kysely';
import { clearSealedOf, remoteAgentCells } from '../agent/agent-commands.js';
import type { ProviderSet } from '../controller/providers.js';
import { desiredResource } from '../controller/reconcilers.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { ConflictError } from '../errors/errors.js';
import { lockCandidateCells } from '../placement/placement.policy.js';
import { chooseCell, type Isolation, isRefusal } from '../placement/placement.rules.js';
import { type DesiredResource, ProviderError } from '../providers/provider.js';
import type { ObjectRow } from '../registry/object.repository.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { workflowKey } from './migration-records.js';
import {
  closeStreams,
  copyBlobs,
  copySchemas,
  openStreams,
  providerIn,
  type RegionAgents,
  type RegionDatabasePlan,
  type RegionMigrationPlan,
  regionSides,
  waitStreamsSynced,
} from './region-migration.js';

/**
 * Region standbys (issue 19, "Region failover"). A tenant whose spec names `standby.region` gets a
 * copy of its databases and blobs in that region's cell, kept in sync until a failover promotes it:
 * - databases: per-tenant logical replication (the embedded PostgreSQL has no `pg_basebackup`):
 *   a reader, publication and slot for the tenant's schema on the primary region's data-plane
 *   server, a subscription in the standby region's (the same building blocks as a region migration,
 *   pg-copy.ts). The standby's role exists with its own credentials but NOLOGIN, so nothing writes
 *   there but the subscription.
 * - blobs: copied and MD5-checked into the standby region's account by the keeper, every tick.
 * Each region's side runs where its cell is served, as for a region migration (region-migration.ts
 * `regionSides`): by the agent holding the cell, as its commands, or here. The primary's side hands
 * the standby's a reader of its own (a migration reader's role, publication and slot), sealed for
 * the standby side's key; the standby's PostgreSQL subscribes with it.
 * The keeper (StandbyKeeper) starts the establishing workflow for a tenant that names a standby and
 * has none, and measures every streaming standby: lag in bytes, the last moment it was seen caught
 * up, and the primary's row counts and sequence values at that moment (what the failover's
 * consistency checks compare with, and what its sequences continue from).
 */

export const ESTABLISH_STANDBY = 'standby.establish';

export interface StandbyInput {
  standbyId: string;
  tenantSlug: string;
  primaryRegion: string;
  standbyRegion: string;
}

/**
 * What is replicated where: a region plan (from = the primary region, to = the standby's), whose
 * databases' `targetKey` holds the standby role's credentials and `sourceKey` is where the primary's
 * are kept once a failover made the standby's the resource's.
 */
export type StandbyPlan = RegionMigrationPlan & { standbyId: string };

export interface LastKnown {
  /** When the primary was read (its snapshot), with the standby confirmed past that point. */
  at: string;
  /** Per database resource: row counts per table and sequence values, on the primary. */
  databases: Record<string, { rows: Record<string, number>; sequences: Record<string, string> }>;
}

export interface StandbyDeps {
  db: Db;
  providers: ProviderSet;
}

/** The standby's role: its own credentials, NOLOGIN (`suspended`) until a failover promotes it. */
export const standbyDesired = (d: RegionDatabasePlan): DesiredResource => ({
  ...d.desired,
  id: d.targetKey,
  suspended: true,
});

/**
 * The cell of `region` a standby of the tenant goes to when an agent of another process holds it
 * (the placement rules' choice there); undefined when the control plane serves that region (its
 * data plane is the region's, whichever cell).
 */
async function standbyAgentCell(trx: Trx, tenantId: string, region: string): Promise<string | undefined> {
  const t = (
    await sql<{ slug: string; environment_type: string; isolation: Isolation }>`
      select slug, environment_type, placement->>'isolation' as isolation from tenants where id = ${tenantId}`.execute(
      trx,
    )
  ).rows[0];
  if (!t) return undefined;
  const cells = await lockCandidateCells(trx, [region], undefined);
  const chosen = chooseCell(
    {
      tenantId,
      tenantSlug: t.slug,
      region,
      environmentType: t.environment_type,
      isolation: t.isolation,
      allowedRegions: [region],
    },
    cells === 'none' ? [] : cells,
  );
  if (isRefusal(chosen)) return undefined;
  const [agent] = await remoteAgentCells(trx, [chosen.cellUuid]);
  return agent ? chosen.cellUuid : undefined;
}

/**
 * The plan of a standby: the tenant's databases (pool or silo) and blob containers, read-only, and
 * who runs each region's side: the agent holding the primary's cell or the standby's (as for a
 * region migration, ./region-migration.ts `regionSides`), or this process.
 */
export async function planStandby(
  deps: StandbyDeps,
  ctx: { tenantId: string; workflowId: string; signal: AbortSignal },
  input: StandbyInput,
): Promise<StandbyPlan> {
  const { db, providers } = deps;
  const { tenantId } = ctx;
  const { primaryRegion: from, standbyRegion: to, standbyId } = input;
  const { rows, agents } = await asPlatform(db, async (trx) => {
    const r = await sql<ObjectRow>`
      select * from integration_resources
      where tenant_id = ${tenantId} and deleted_at is null order by id`.execute(trx);
    const out: DesiredResource[] = [];
    for (const row of r.rows) out.push((await desiredResource(trx, row)).desired);
    const primary = await sql<{
      cell_id: string | null;
    }>`select cell_id from tenants where id = ${tenantId}`.execute(trx);
    const [sourceAgent] = await remoteAgentCells(trx, [primary.rows[0]?.cell_id]);
    const targetAgent = await standbyAgentCell(trx, tenantId, to);
    const agents: RegionAgents = {
      ...(sourceAgent ? { sourceAgent: primary.rows[0]!.cell_id! } : {}),
      ...(targetAgent ? { targetAgent } : {}),
    };
    return { rows: out, agents };
  });
  const plan: StandbyPlan = {
    kind: 'region',
    standbyId,
    mode: 'logical-replication',
    modeReason: 'a standby is kept by logical replication',
    fromRegion: from,
    toRegion: to,
    ...agents,
    databases: [],
    blobs: [],
    topics: [],
  };
  // A storage account both regions use (one provider here) holds the blobs already; an agent's are its own.
  const sharedBlobs =
    !agents.sourceAgent &&
    !agents.targetAgent &&
    providerIn(providers, 'blob-container', from) === providerIn(providers, 'blob-container', to);
  const databases: { d: DesiredResource; isolation: 'pool' | 'silo' }[] = [];
  for (const desired of rows) {
    const { suspended: _s, ...d } = desired;
    if (d.type === 'blob-container') {
      if (!sharedBlobs) plan.blobs.push({ resourceId: d.id, desired: d });
      continue;
    }
    if (d.type !== 'database') continue; // topics: recreated by the reconcile after a failover
    const isolation = d.database?.isolation;
    if (isolation !== 'pool' && isolation !== 'silo')
      throw new ProviderError(
        `database ${d.physicalName} is ${isolation}: a shared-isolation tenant has no schema of its own to replicate`,
        'Ineligible',
        false,
      );
    databases.push({ d, isolation });
  }
  const sides = regionSides(deps, plan, ctx, 'plan');
  const ask = {
    databases: databases.map((x) => ({ isolation: x.isolation, name: x.d.physicalName })),
    blobs: plan.blobs.map((b) => b.desired),
    topics: [],
  };
  const [source, target] = await Promise.all([
    sides.source().inspect({ ...ask, inventories: true }),
    sides.target().inspect({ ...ask, inventories: false }),
  ]);
  if (databases.length > 0 && source.server === target.server)
    throw new ProviderError(
      `regions ${from} and ${to} share one data-plane server: a standby there protects nothing`,
      'Ineligible',
      false,
    );
  if (databases.length > 0 && source.walLevel !== 'logical')
    throw new ProviderError(
      `the primary's wal_level is ${source.walLevel}, not logical: no standby can be streamed`,
      'Ineligible',
      false,
    );
  for (const [i, { d, isolation }] of databases.entries()) {
    const inv = source.inventories[i]!;
    const bad = [
      ...inv.unsupported,
      ...inv.withoutIdentity.map((t) => `${inv.schema}.${t} (no replica identity)`),
    ];
    if (bad.length > 0)
      throw new ProviderError(
        `schema ${inv.schema} cannot be streamed: ${bad.join(', ')}`,
        'Ineligible',
        false,
      );
    plan.databases.push({
      resourceId: d.id,
      desired: d,
      database: inv.database,
      targetDatabase: isolation === 'pool' ? target.home : d.physicalName,
      schema: inv.schema,
      role: d.physicalName,
      targetKey: workflowKey(standbyId, d.id, 'standby'),
      sourceKey: workflowKey(standbyId, d.id, 'primary'),
      replication: `tenantry_s_${standbyId.replace(/-/g, '').slice(0, 12)}_${plan.databases.length}`,
      tables: inv.tables,
    });
  }
  return plan;
}

/**
 * The two sides of a standby (the primary's, the standby's), run here or by the agents holding
 * their cells; commands keyed by the standby (`standbyId`, its establishing workflow's id) and `step`.
 */
export const standbySides = (deps: StandbyDeps, p: StandbyPlan, step: string, signal: AbortSignal) =>
  regionSides(deps, p, { workflowId: p.standbyId, signal }, step);

/** The standby's resources in its region: the role (NOLOGIN, its own credentials), schema or database, and blob containers. */
export const standbyResources = (p: StandbyPlan) => ({
  databases: p.databases.map(standbyDesired),
  blobs: p.blobs.map((b) => b.desired),
  topics: [],
});

/** The establishing workflow: standby resources, schema, subscription, initial copy, blobs. */
export function establishStandbyWorkflow(deps: StandbyDeps): WorkflowDefinition<StandbyInput> {
  const planOf = (ctx: StepContext<StandbyInput>) => ctx.outputs.plan as StandbyPlan;
  const sides = (ctx: StepContext<StandbyInput>, step: string) =>
    standbySides(deps, planOf(ctx), step, ctx.signal);
  const steps: StepDefinition<StandbyInput>[] = [
    {
      name: 'plan',
      async run(ctx) {
        return planStandby(deps, ctx, ctx.input);
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_standbys set plan = ${JSON.stringify(output)}, updated_at = now()
          where tenant_id = ${ctx.tenantId} and workflow_id = ${ctx.workflowId}`.execute(trx);
      },
    },
    {
      name: 'create-standby',
      // The standby role (NOLOGIN, own credentials under the standby key) and schema or database,
      // and the blob container, in the standby region.
      async run(ctx) {
        const p = planOf(ctx);
        await sides(ctx, 'create-standby').target().createResources(standbyResources(p));
        return { databases: p.databases.length, blobs: p.blobs.length };
      },
      async undo(ctx) {
        await sides(ctx, 'create-standby:undo')
          .target()
          .removeResources(standbyResources(planOf(ctx)));
      },
    },
    {
      name: 'copy-schema',
      async run(ctx) {
        return { statements: await copySchemas(planOf(ctx), sides(ctx, 'copy-schema')) };
      },
    },
    {
      name: 'start-replication',
      // The primary's side hands out a reader (sealed for the standby's side); the standby subscribes.
      async run(ctx) {
        return { replicating: await openStreams(planOf(ctx), sides(ctx, 'start-replication')) };
      },
      async undo(ctx) {
        await closeStreams(planOf(ctx), sides(ctx, 'start-replication:undo'));
      },
    },
    {
      name: 'wait-synced',
      timeoutMs: 30 * 60_000,
      async run(ctx) {
        return { lagBytes: await waitStreamsSynced(planOf(ctx), sides(ctx, 'wait-synced'), ctx.signal) };
      },
    },
    {
      name: 'copy-blobs',
      timeoutMs: 30 * 60_000,
      async run(ctx) {
        const p = planOf(ctx);
        const s = sides(ctx, 'copy-blobs');
        const sealTo = await s.sealFor('target');
        const out: Record<string, { blobs: number; copied: number }> = {};
        for (const b of p.blobs) {
          const r = await copyBlobs(s.source(b.resourceId), s.target(b.resourceId), b.desired, sealTo);
          out[b.resourceId] = { blobs: r.source.length, copied: r.copied };
        }
        return out;
      },
    },
  ];
  return {
    type: ESTABLISH_STANDBY,
    steps,
    succeeded: async (trx, ctx) => {
      await clearSealedOf(trx, ctx.workflowId);
      await sql`update tenant_standbys set state = 'Streaming', error = null, updated_at = now()
        where tenant_id = ${ctx.tenantId} and workflow_id = ${ctx.workflowId}`.execute(trx);
    },
    compensated: async (trx, ctx, reason) => {
      await clearSealedOf(trx, ctx.workflowId);
      await sql`update tenant_standbys set state = 'Failed', error = ${reason.slice(0, 2000)}, updated_at = now()
        where tenant_id = ${ctx.tenantId} and workflow_id = ${ctx.workflowId}`.execute(trx);
    },
  };
}

/** Rejects after `ms` (the promise itself runs on; its result is dropped). */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * A migration (isolation or region) of a tenant with a live standby is refused: the standby
 * replicates the schema the migration replaces, and a region migration into the standby's region
 * would land on its copy. The standby goes first (the spec names none; the keeper retires it).
 */
export async function refuseWithStandby(trx: Trx, tenantId: string): Promise<void> {
  const r = await sql<{ region: string; state: string }>`
    select region, state from tenant_standbys
    where tenant_id = ${tenantId} and state in ('Establishing', 'Streaming')`.execute(trx);
  const s = r.rows[0];
  if (s)
    throw new ConflictError(
      'migration.standby_exists',
      `The tenant has a standby in ${s.region} (${s.state}); remove standby from its spec and let the keeper retire it before migrating.`,
      { details: { standby: s } },
    );
}
