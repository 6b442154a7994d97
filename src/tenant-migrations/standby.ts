import { sql } from 'kysely';
import type { ProviderSet } from '../controller/providers.js';
import { desiredResource } from '../controller/reconcilers.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { ConflictError } from '../errors/errors.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import { type DesiredResource, ProviderError } from '../providers/provider.js';
import type { ObjectRow } from '../registry/object.repository.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { workflowKey } from './migration-records.js';
import {
  connectingRoleLacks,
  createSchema,
  databaseUrl,
  inventory,
  replicationLag,
  schemaDdl,
  startReplication,
  stopReplication,
  syncState,
  walLevel,
  withClient,
} from './pg-copy.js';
import {
  dataplaneOf,
  providerIn,
  type RegionDatabasePlan,
  type RegionMigrationPlan,
  syncBlobs,
} from './region-migration.js';
import { waitSynced } from './sync-wait.js';

/**
 * Region standbys (issue 19, "Region failover"). A tenant whose spec names `standby.region` gets a
 * copy of its databases and blobs in that region's cell, kept in sync until a failover promotes it:
 * - databases: per-tenant logical replication (the embedded PostgreSQL has no `pg_basebackup`):
 *   publication and slot for the tenant's schema on the primary region's data-plane server, a
 *   subscription in the standby region's (the same building blocks as a region migration,
 *   pg-copy.ts). The standby's role exists with its own credentials but NOLOGIN, so nothing writes
 *   there but the subscription.
 * - blobs: copied and MD5-checked into the standby region's account by the keeper, every tick.
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

const serverOf = (providers: ProviderSet, region: string, database: string) =>
  databaseUrl(dataplaneOf(providers, region), database);
export const primaryUrl = (providers: ProviderSet, p: RegionMigrationPlan, d: RegionDatabasePlan) =>
  serverOf(providers, p.fromRegion, d.database);
export const standbyUrl = (providers: ProviderSet, p: RegionMigrationPlan, d: RegionDatabasePlan) =>
  serverOf(providers, p.toRegion, d.targetDatabase);
/** The standby's role: its own credentials, NOLOGIN (`suspended`) until a failover promotes it. */
export const standbyDesired = (d: RegionDatabasePlan): DesiredResource => ({
  ...d.desired,
  id: d.targetKey,
  suspended: true,
});

/** The plan of a standby: the tenant's databases (pool or silo) and blob containers, read-only. */
export async function planStandby(
  deps: StandbyDeps,
  tenantId: string,
  input: StandbyInput,
): Promise<StandbyPlan> {
  const { db, providers } = deps;
  const { primaryRegion: from, standbyRegion: to, standbyId } = input;
  const rows = await asPlatform(db, async (trx) => {
    const r = await sql<ObjectRow>`
      select * from integration_resources
      where tenant_id = ${tenantId} and deleted_at is null order by id`.execute(trx);
    const out: DesiredResource[] = [];
    for (const row of r.rows) out.push((await desiredResource(trx, row)).desired);
    return out;
  });
  const plan: StandbyPlan = {
    kind: 'region',
    standbyId,
    mode: 'logical-replication',
    modeReason: 'a standby is kept by logical replication',
    fromRegion: from,
    toRegion: to,
    databases: [],
    blobs: [],
    topics: [],
  };
  for (const desired of rows) {
    const { suspended: _s, ...d } = desired;
    if (d.type === 'blob-container') {
      if (providerIn(providers, 'blob-container', from) !== providerIn(providers, 'blob-container', to))
        plan.blobs.push({ resourceId: d.id, desired: d });
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
    const source = dataplaneOf(providers, from);
    const target = dataplaneOf(providers, to);
    if (new URL(source).host === new URL(target).host)
      throw new ProviderError(
        `regions ${from} and ${to} share one data-plane server: a standby there protects nothing`,
        'Ineligible',
        false,
      );
    const dbOf = (u: string) => decodeURIComponent(new URL(u).pathname.slice(1)) || 'postgres';
    const database = isolation === 'pool' ? dbOf(source) : d.physicalName;
    const schema = isolation === 'pool' ? d.physicalName : 'public';
    const inv = await withClient(databaseUrl(source, database), async (c) => {
      const level = await walLevel(c);
      if (level !== 'logical')
        throw new ProviderError(
          `the primary's wal_level is ${level}, not logical: no standby can be streamed`,
          'Ineligible',
          false,
        );
      const exists = await c.query('select 1 from pg_namespace where nspname = $1', [schema]);
      if ((exists.rowCount ?? 0) === 0)
        throw new ProviderError(`schema ${schema} does not exist yet`, 'SourceMissing', true);
      return inventory(c, schema);
    });
    const bad = [
      ...inv.unsupported,
      ...inv.withoutIdentity.map((t) => `${schema}.${t} (no replica identity)`),
    ];
    if (bad.length > 0)
      throw new ProviderError(`schema ${schema} cannot be streamed: ${bad.join(', ')}`, 'Ineligible', false);
    plan.databases.push({
      resourceId: d.id,
      desired: d,
      database,
      targetDatabase: isolation === 'pool' ? dbOf(target) : d.physicalName,
      schema,
      role: d.physicalName,
      targetKey: workflowKey(standbyId, d.id, 'standby'),
      sourceKey: workflowKey(standbyId, d.id, 'primary'),
      replication: `tenantry_s_${standbyId.replace(/-/g, '').slice(0, 12)}_${plan.databases.length}`,
      tables: inv.tables,
    });
  }
  return plan;
}

/** Subscription, slot and publication of a standby ended (parts already gone skipped). */
export async function stopStandbyReplication(providers: ProviderSet, p: StandbyPlan): Promise<void> {
  for (const d of p.databases)
    await withClient(primaryUrl(providers, p, d), async (s) => {
      const there = await withClient(serverOf(providers, p.toRegion, 'postgres'), async (c) => {
        const r = await c.query('select 1 from pg_database where datname = $1', [d.targetDatabase]);
        return (r.rowCount ?? 0) > 0;
      });
      if (there) await withClient(standbyUrl(providers, p, d), (t) => stopReplication(s, t, d.replication));
      else await stopReplication(s, undefined, d.replication);
    });
}

/** The establishing workflow: standby resources, schema, subscription, initial copy, blobs. */
export function establishStandbyWorkflow(deps: StandbyDeps): WorkflowDefinition<StandbyInput> {
  const { providers } = deps;
  const planOf = (ctx: StepContext<StandbyInput>) => ctx.outputs.plan as StandbyPlan;
  const stop = (p: StandbyPlan) => stopStandbyReplication(providers, p);
  const steps: StepDefinition<StandbyInput>[] = [
    {
      name: 'plan',
      async run(ctx) {
        return planStandby(deps, ctx.tenantId, ctx.input);
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
        for (const d of p.databases)
          await providerIn(providers, 'database', p.toRegion).ensure(standbyDesired(d));
        for (const b of p.blobs) await providerIn(providers, 'blob-container', p.toRegion).ensure(b.desired);
        return { databases: p.databases.length, blobs: p.blobs.length };
      },
      async undo(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases)
          await providerIn(providers, 'database', p.toRegion).delete(standbyDesired(d));
        for (const b of p.blobs) await providerIn(providers, 'blob-container', p.toRegion).delete(b.desired);
      },
    },
    {
      name: 'copy-schema',
      async run(ctx) {
        const p = planOf(ctx);
        let statements = 0;
        for (const d of p.databases) {
          const ddl = await withClient(primaryUrl(providers, p, d), (c) => schemaDdl(c, d.schema));
          await withClient(standbyUrl(providers, p, d), (c) => createSchema(c, d.schema, d.role, ddl));
          statements += ddl.length;
        }
        return { statements };
      },
    },
    {
      name: 'start-replication',
      async run(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases)
          await withClient(primaryUrl(providers, p, d), (s) =>
            withClient(standbyUrl(providers, p, d), (t) =>
              startReplication(s, t, {
                name: d.replication,
                schema: d.schema,
                sourceUrl: primaryUrl(providers, p, d),
              }),
            ),
          );
        return { replicating: p.databases.map((d) => d.replication) };
      },
      async undo(ctx) {
        await stop(planOf(ctx));
      },
    },
    {
      name: 'wait-synced',
      timeoutMs: 30 * 60_000,
      async run(ctx) {
        const p = planOf(ctx);
        const lag: Record<string, number | null> = {};
        for (const d of p.databases) {
          const r = await waitSynced(
            {
              syncing: () =>
                withClient(standbyUrl(providers, p, d), (t) => syncState(t, d.replication, d.tables.length)),
              lagBytes: () =>
                withClient(primaryUrl(providers, p, d), (s) => replicationLag(s, d.replication)),
              // The subscription connects to the primary as its data plane's role (start-replication).
              readerLacks: () => connectingRoleLacks(primaryUrl(providers, p, d), d.schema, d.tables),
            },
            {
              subscription: `the standby's subscription ${d.replication} in ${p.toRegion}`,
              reader: `the role it reads the primary in ${p.fromRegion} as`,
              log: `the ${p.toRegion} data-plane PostgreSQL`,
              signal: ctx.signal,
            },
          );
          lag[d.replication] = r.lagBytes;
        }
        return { lagBytes: lag };
      },
    },
    {
      name: 'copy-blobs',
      timeoutMs: 30 * 60_000,
      async run(ctx) {
        const p = planOf(ctx);
        const out: Record<string, { blobs: number; copied: number }> = {};
        for (const b of p.blobs) {
          const r = await syncBlobs(providers, p, b.desired);
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
      await sql`update tenant_standbys set state = 'Streaming', error = null, updated_at = now()
        where tenant_id = ${ctx.tenantId} and workflow_id = ${ctx.workflowId}`.execute(trx);
    },
    compensated: async (trx, ctx, reason) => {
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

/** The database provider of a region, as PostgreSQL (a failover talks to its server directly). */
export function postgresIn(providers: ProviderSet, region: string): PostgresDatabaseProvider {
  const p = providerIn(providers, 'database', region);
  if (!(p instanceof PostgresDatabaseProvider))
    throw new ProviderError(`region ${region}: the database provider is not PostgreSQL`, 'Ineligible', false);
  return p;
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
