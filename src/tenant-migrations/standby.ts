import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { ProviderSet } from '../controller/providers.js';
import { desiredResource } from '../controller/reconcilers.js';
import { asPlatform, type Db } from '../db/database.js';
import { ConflictError } from '../errors/errors.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import { type DesiredResource, ProviderError } from '../providers/provider.js';
import type { ObjectRow } from '../registry/object.repository.js';
import { startWorkflow } from '../workflows/start-workflow.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { workflowKey } from './migration-records.js';
import {
  createSchema,
  databaseUrl,
  inventory,
  replicationLag,
  schemaDdl,
  startReplication,
  stopReplication,
  tablesSyncing,
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

/** The establishing workflow: standby resources, schema, subscription, initial copy, blobs. */
export function establishStandbyWorkflow(deps: StandbyDeps): WorkflowDefinition<StandbyInput> {
  const { providers } = deps;
  const planOf = (ctx: StepContext<StandbyInput>) => ctx.outputs.plan as StandbyPlan;
  const stop = async (p: StandbyPlan) => {
    for (const d of p.databases)
      await withClient(primaryUrl(providers, p, d), async (s) => {
        const there = await withClient(serverOf(providers, p.toRegion, 'postgres'), async (c) => {
          const r = await c.query('select 1 from pg_database where datname = $1', [d.targetDatabase]);
          return (r.rowCount ?? 0) > 0;
        });
        if (there) await withClient(standbyUrl(providers, p, d), (t) => stopReplication(s, t, d.replication));
        else await stopReplication(s, undefined, d.replication);
      });
  };
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
        for (const d of p.databases)
          for (;;) {
            const left = await withClient(standbyUrl(providers, p, d), (t) =>
              tablesSyncing(t, d.replication, d.tables.length),
            );
            lag[d.replication] = await withClient(primaryUrl(providers, p, d), (s) =>
              replicationLag(s, d.replication),
            );
            if (left === 0) break;
            if (ctx.signal.aborted)
              throw new ProviderError('the initial copy is not done in time', 'NotSynced', true);
            await new Promise((res) => setTimeout(res, 200));
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

/** Tenants naming a standby region that have none (or a failed one, retried after 5 minutes). */
async function standbysToStart(db: Db) {
  return asPlatform(
    db,
    async (trx) =>
      (
        await sql<{ id: string; slug: string; region: string; standby: string }>`
        select t.id, t.slug, t.region, t.spec->'standby'->>'region' as standby
        from tenants t left join tenant_standbys s on s.tenant_id = t.id
        where t.deleted_at is null and t.lifecycle = 'Active' and t.placement is not null
          and t.spec->'standby'->>'region' is not null and t.spec->'standby'->>'region' <> t.region
          and (s.tenant_id is null or s.state = 'FailedOver'
               or (s.state = 'Failed' and s.updated_at < now() - interval '5 minutes'))
        order by t.id limit 100`.execute(trx)
      ).rows,
  );
}

/**
 * Keeps every standby: starts establishing the missing ones, then measures and syncs the
 * streaming ones (`measure`). One tick is safe to run in several processes at once: the start is
 * one workflow per tenant (`workflow.in_progress` otherwise, skipped), measuring writes last-wins.
 */
export class StandbyKeeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly deps: StandbyDeps & { logger?: Logger; intervalMs?: number }) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.tick()
        .then(() => undefined)
        .catch((err: Error) => this.deps.logger?.warn({ err }, 'standby keeper tick failed'))
        .finally(() => {
          this.running = undefined;
        });
    }, this.deps.intervalMs ?? 15_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One round: what was started, and what each streaming standby measured. */
  async tick(): Promise<{ started: string[]; measured: Record<string, StandbyMeasure>; fenced: string[] }> {
    const { db } = this.deps;
    const started: string[] = [];
    for (const t of await standbysToStart(db)) {
      const standbyId = randomUUID();
      const input: StandbyInput = {
        standbyId,
        tenantSlug: t.slug,
        primaryRegion: t.region,
        standbyRegion: t.standby,
      };
      try {
        await asPlatform(db, async (trx) => {
          await sql`delete from tenant_standbys where tenant_id = ${t.id}`.execute(trx);
          await sql`insert into tenant_standbys (tenant_id, region, workflow_id)
            values (${t.id}, ${t.standby}, ${standbyId})`.execute(trx);
          await startWorkflow(trx, {
            id: standbyId,
            tenantId: t.id,
            type: ESTABLISH_STANDBY,
            input,
            actor: { principal: 'tenantry-standby-keeper', kind: 'system' },
            requestId: standbyId,
            correlationId: standbyId,
          });
        });
        started.push(t.slug);
      } catch (err) {
        // Another workflow of the tenant runs: the next tick tries again.
        if (!(err instanceof ConflictError)) throw err;
      }
    }
    const measured: Record<string, StandbyMeasure> = {};
    const streaming = await asPlatform(
      db,
      async (trx) =>
        (
          await sql<{ tenant_id: string; plan: StandbyPlan }>`
          select tenant_id, plan from tenant_standbys where state = 'Streaming' order by tenant_id limit 1000`.execute(
            trx,
          )
        ).rows,
    );
    for (const s of streaming) measured[s.tenant_id] = await this.measure(s.tenant_id, s.plan);
    return { started, measured, fenced: await this.fenceReturned() };
  }

  /**
   * Old primaries that were down at their failover and answer again: the tenant's role there loses
   * LOGIN (its sessions ended), so nothing writes to the stale copy, and the replication slot and
   * publication go (a slot nobody reads keeps WAL forever). The schema stays, for a failback.
   */
  async fenceReturned(): Promise<string[]> {
    const { db, providers } = this.deps;
    const open = await asPlatform(
      db,
      async (trx) =>
        (
          await sql<{ id: string; plan: StandbyPlan }>`
          select id, plan from tenant_failovers
          where state = 'FailedOver' and fenced_at is null and plan is not null order by id limit 100`.execute(
            trx,
          )
        ).rows,
    );
    const fenced: string[] = [];
    for (const f of open) {
      try {
        for (const d of f.plan.databases)
          await withTimeout(
            withClient(primaryUrl(providers, f.plan, d), async (c) => {
              const role = await c.query('select 1 from pg_roles where rolname = $1', [d.role]);
              if ((role.rowCount ?? 0) > 0) {
                await c.query(`alter role ${esc(d.role)} nologin`);
                await c.query(
                  'select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()',
                  [d.role],
                );
              }
              await stopReplication(c, undefined, d.replication);
            }),
            15_000,
          );
      } catch {
        continue; // still down: the next tick tries again
      }
      await asPlatform(db, (trx) =>
        sql`update tenant_failovers set fenced_at = now(),
              fence = coalesce(fence, '{}'::jsonb) || jsonb_build_object('returnedAt', now()::text), updated_at = now()
            where id = ${f.id}`.execute(trx),
      );
      fenced.push(f.id);
    }
    return fenced;
  }

  /**
   * Measures one standby and records it: the primary's row counts and sequence values in one
   * snapshot, then its WAL position, then whether the standby confirmed that position (at most 3 s);
   * if so the snapshot is the new "last known" and the standby was caught up at that moment. Blobs
   * are synced and checked. A primary that cannot be reached leaves the lag unknown (null) and the
   * last known as it was: the data-loss window grows from the last catch-up.
   */
  async measure(tenantId: string, plan: StandbyPlan): Promise<StandbyMeasure> {
    const { providers, db } = this.deps;
    const at = new Date();
    let lag: number | null = 0;
    let caughtUp = true;
    let error: string | null = null;
    const known: LastKnown = { at: at.toISOString(), databases: {} };
    try {
      for (const d of plan.databases) {
        const r = await withClient(primaryUrl(providers, plan, d), async (s) => {
          await s.query('begin isolation level repeatable read read only');
          const rows: Record<string, number> = {};
          for (const t of d.tables)
            rows[t] = Number(
              (await s.query<{ n: string }>(`select count(*)::text as n from ${esc(d.schema)}.${esc(t)}`))
                .rows[0]!.n,
            );
          const seqs = await s.query<{ name: string; last: string | null }>(
            'select sequencename as name, last_value::text as last from pg_sequences where schemaname = $1',
            [d.schema],
          );
          await s.query('commit');
          const lsn = (await s.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!
            .lsn;
          const deadline = Date.now() + 3_000;
          let behind: number | null = null;
          for (;;) {
            const q = await s.query<{ behind: string | null }>(
              `select greatest(pg_wal_lsn_diff($2::pg_lsn, confirmed_flush_lsn), 0)::text as behind
               from pg_replication_slots where slot_name = $1`,
              [d.replication, lsn],
            );
            behind = q.rows[0]?.behind == null ? null : Number(q.rows[0].behind);
            if (behind === 0 || behind === null || Date.now() > deadline) break;
            await new Promise((res) => setTimeout(res, 50));
          }
          return {
            rows,
            sequences: Object.fromEntries(
              seqs.rows.filter((x) => x.last !== null).map((x) => [x.name, x.last!]),
            ),
            behind,
          };
        });
        known.databases[d.resourceId] = { rows: r.rows, sequences: r.sequences };
        if (r.behind === null) {
          lag = null;
          caughtUp = false;
          error = `replication slot ${d.replication} is missing on the primary`;
        } else {
          if (lag !== null) lag += r.behind;
          if (r.behind > 0) caughtUp = false;
        }
      }
    } catch (err) {
      lag = null;
      caughtUp = false;
      error = `primary ${plan.fromRegion} unreachable: ${(err as Error).message}`.slice(0, 2000);
    }
    let blobs: Record<
      string,
      { blobs: number; bytes: number; copied: number; equal: boolean; at: string }
    > | null = null;
    if (plan.blobs.length > 0 && error === null)
      try {
        blobs = {};
        for (const b of plan.blobs) {
          const r = await withTimeout(syncBlobs(providers, plan, b.desired), 60_000);
          blobs[b.resourceId] = {
            blobs: r.source.length,
            bytes: r.source.reduce((n, x) => n + x.bytes, 0),
            copied: r.copied,
            equal: JSON.stringify(r.source) === JSON.stringify(r.target),
            at: new Date().toISOString(),
          };
        }
      } catch (err) {
        blobs = null;
        error = `blob sync: ${(err as Error).message}`.slice(0, 2000);
      }
    await asPlatform(db, (trx) =>
      sql`update tenant_standbys set lag_bytes = ${lag}, measured_at = ${at.toISOString()}::timestamptz,
            caught_up_at = case when ${caughtUp} then ${at.toISOString()}::timestamptz else caught_up_at end,
            last_known = case when ${caughtUp} then ${JSON.stringify(known)}::jsonb else last_known end,
            blobs = coalesce(${blobs === null ? null : JSON.stringify(blobs)}::jsonb, blobs),
            error = ${error}, updated_at = now()
          where tenant_id = ${tenantId} and state = 'Streaming'`.execute(trx),
    );
    return { lagBytes: lag, caughtUp, error };
  }
}

export interface StandbyMeasure {
  lagBytes: number | null;
  caughtUp: boolean;
  error: string | null;
}

const esc = pg.escapeIdentifier;

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
