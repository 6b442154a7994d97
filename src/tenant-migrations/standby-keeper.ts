import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { clearSealedOf } from '../agent/agent-commands.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, type Db } from '../db/database.js';
import { ConflictError, TenantryError } from '../errors/errors.js';
import { startWorkflow } from '../workflows/start-workflow.js';
import { keepPrimarySecrets } from './failover.js';
import { FailoverService } from './failover.service.js';
import { closeStreams, copyBlobs, sideOf } from './region-migration.js';
import {
  ESTABLISH_STANDBY,
  type LastKnown,
  type StandbyDeps,
  type StandbyInput,
  type StandbyPlan,
  standbyResources,
  standbySides,
  withTimeout,
} from './standby.js';

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
          -- A migration's kept source in that region (its rollback window) is not overwritten.
          and not exists (select 1 from tenant_migrations m where m.tenant_id = t.id and m.state = 'CutOver'
                          and m.source->>'region' = t.spec->'standby'->>'region')
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
  async tick(): Promise<{
    started: string[];
    measured: Record<string, StandbyMeasure>;
    retired: string[];
    failedOver: string[];
    fenced: string[];
  }> {
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
          // Two keepers at once: the second's insert finds the first's row and starts nothing.
          await sql`delete from tenant_standbys where tenant_id = ${t.id} and state in ('FailedOver', 'Failed')`.execute(
            trx,
          );
          const mine = await sql`insert into tenant_standbys (tenant_id, region, workflow_id)
            values (${t.id}, ${t.standby}, ${standbyId}) on conflict (tenant_id) do nothing returning tenant_id`.execute(
            trx,
          );
          if (mine.rows.length === 0) throw new ConflictError('standby.started', 'another keeper started it');
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
    const retired = await this.retireUnnamed();
    for (const s of streaming)
      if (!retired.includes(s.tenant_id)) measured[s.tenant_id] = await this.measure(s.tenant_id, s.plan);
    return {
      started,
      measured,
      retired,
      failedOver: await this.failoverPolicy(),
      fenced: await this.fenceReturned(),
    };
  }

  /**
   * Standbys no longer named (the tenant's spec names none or another region, or the tenant is
   * deleted): subscription, slot and publication end, the standby's schema or database, role and
   * credentials and its blob container go, then the record (so a newly named region is established
   * at the next tick). A primary that does not answer leaves it for a later tick.
   */
  async retireUnnamed(): Promise<string[]> {
    const { db } = this.deps;
    const rows = await asPlatform(
      db,
      async (trx) =>
        (
          await sql<{ tenant_id: string; plan: StandbyPlan | Record<string, never> }>`
          select s.tenant_id, s.plan from tenant_standbys s left join tenants t on t.id = s.tenant_id
          where s.state in ('Streaming', 'Failed')
            and (t.id is null or t.deleted_at is not null or coalesce(t.spec->'standby'->>'region', '') <> s.region)
            -- Never where the tenant itself lives (the standby region's copy would be its data).
            and (t.id is null or t.region <> s.region)
          order by s.tenant_id limit 100`.execute(trx)
        ).rows,
    );
    const retired: string[] = [];
    for (const r of rows) {
      const plan = r.plan as StandbyPlan;
      if (plan.databases)
        try {
          const s = standbySides(this.deps, plan, 'retire', AbortSignal.timeout(60_000));
          await withTimeout(closeStreams(plan, s), 30_000);
          await s.target().removeResources(standbyResources(plan));
        } catch (err) {
          this.deps.logger?.warn({ err, tenantId: r.tenant_id }, 'standby not retired yet');
          continue;
        }
      await asPlatform(db, (trx) =>
        sql`delete from tenant_standbys where tenant_id = ${r.tenant_id} and state in ('Streaming', 'Failed')`.execute(
          trx,
        ),
      );
      retired.push(r.tenant_id);
    }
    return retired;
  }

  /**
   * The failover policy: a tenant whose spec says `standby.failoverAfterChecks: N` fails over once N
   * measurements in a row found its primary's data plane unreachable. The failover is asked for
   * like an operator's (every rule of FailoverService applies, audited as the keeper's); a refusal
   * is recorded on the standby and asked again at the next tick.
   */
  async failoverPolicy(): Promise<string[]> {
    const { db } = this.deps;
    const due = await asPlatform(
      db,
      async (trx) =>
        (
          await sql<{ id: string; slug: string; region: string; checks: number }>`
          select t.id, t.slug, s.region, s.unreachable_checks as checks
          from tenant_standbys s join tenants t on t.id = s.tenant_id
          where s.state = 'Streaming' and t.deleted_at is null
            and (t.spec->'standby'->>'failoverAfterChecks')::int <= s.unreachable_checks
          order by t.id limit 100`.execute(trx)
        ).rows,
    );
    const started: string[] = [];
    const service = new FailoverService(db);
    for (const t of due) {
      try {
        await service.start(
          systemContext('tenantry-failover-policy'),
          t.id,
          { region: t.region },
          { dryRun: false, reason: `policy: primary unreachable for ${t.checks} checks` },
        );
        started.push(t.slug);
      } catch (err) {
        if (!(err instanceof TenantryError)) throw err;
        await asPlatform(db, (trx) =>
          sql`update tenant_standbys set error = ${`failover policy refused: ${err.code}: ${err.message}`.slice(0, 2000)}
              where tenant_id = ${t.id}`.execute(trx),
        );
      }
    }
    return started;
  }

  /**
   * Old primaries that were down at their failover and answer again: the tenant's role there loses
   * LOGIN (its sessions ended), so nothing writes to the stale copy, and the replication slot and
   * publication go (a slot nobody reads keeps WAL forever). The schema stays, for a failback.
   */
  async fenceReturned(): Promise<string[]> {
    const { db } = this.deps;
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
      const p = f.plan;
      try {
        const s = standbySides(this.deps, p, 'fence', AbortSignal.timeout(15_000));
        await withTimeout(
          s.source().setLogin({ roles: p.databases.map((d) => d.role), login: false }),
          15_000,
        );
        // The reader the standby subscribed with: its slot, publication and role.
        for (const d of p.databases)
          await s.source(d.resourceId).closeReader({ ...sideOf(d, 'source'), name: d.replication });
        // An agent keeps the old primary's credentials under the source key (as the failover would have).
        if (p.sourceAgent) await keepPrimarySecrets(s, p);
      } catch {
        continue; // still down: the next tick tries again
      }
      await asPlatform(db, async (trx) => {
        // What the failover asked of the agent while it was down (a blob reader) answered since: cleared.
        await clearSealedOf(trx, f.id);
        await sql`update tenant_failovers set fenced_at = now(),
              fence = coalesce(fence, '{}'::jsonb) || jsonb_build_object('returnedAt', now()::text), updated_at = now()
            where id = ${f.id}`.execute(trx);
      });
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
    const { db } = this.deps;
    const at = new Date();
    let lag: number | null = 0;
    let caughtUp = true;
    let error: string | null = null;
    let unreachable = false;
    const known: LastKnown = { at: at.toISOString(), databases: {} };
    const s = standbySides(this.deps, plan, 'measure', AbortSignal.timeout(60_000));
    try {
      await agentConnected(db, plan.sourceAgent);
      for (const d of plan.databases) {
        const r = await s.source(d.resourceId).measure({
          database: d.database,
          schema: d.schema,
          tables: d.tables,
          name: d.replication,
          waitMs: 3_000,
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
      unreachable = true;
      error = `primary ${plan.fromRegion} unreachable: ${(err as Error).message}`.slice(0, 2000);
    }
    let blobs: Record<
      string,
      { blobs: number; bytes: number; copied: number; equal: boolean; at: string }
    > | null = null;
    if (plan.blobs.length > 0 && error === null)
      try {
        blobs = {};
        const sealTo = await s.sealFor('target');
        for (const b of plan.blobs) {
          const r = await withTimeout(
            copyBlobs(s.source(b.resourceId), s.target(b.resourceId), b.desired, sealTo),
            60_000,
          );
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
    await asPlatform(db, async (trx) => {
      // A blob reader's SAS URLs an agent's failed or late command still holds, sealed: cleared.
      await clearSealedOf(trx, plan.standbyId);
      // The agents' commands of earlier measurements (a few every tick) go after 10 minutes.
      await sql`delete from cell_agent_commands where starts_with(key, ${`${plan.standbyId}:measure:`})
        and state in ('Succeeded', 'Failed') and completed_at < now() - interval '10 minutes'`.execute(trx);
      await sql`update tenant_standbys set lag_bytes = ${lag}, measured_at = ${at.toISOString()}::timestamptz,
            caught_up_at = case when ${caughtUp} then ${at.toISOString()}::timestamptz else caught_up_at end,
            last_known = case when ${caughtUp} then ${JSON.stringify(known)}::jsonb else last_known end,
            blobs = coalesce(${blobs === null ? null : JSON.stringify(blobs)}::jsonb, blobs),
            unreachable_checks = case when ${unreachable} then unreachable_checks + 1 else 0 end,
            error = ${error}, updated_at = now()
          where tenant_id = ${tenantId} and state = 'Streaming'`.execute(trx);
    });
    return { lagBytes: lag, caughtUp, error };
  }
}

export interface StandbyMeasure {
  lagBytes: number | null;
  caughtUp: boolean;
  error: string | null;
}

/**
 * Throws when the agent of `cellId` (the primary's side) is `Unknown` (its lease ran out): it is not
 * asked (its command would wait for it), the primary counts as unreachable at once.
 */
async function agentConnected(db: Db, cellId: string | undefined): Promise<void> {
  if (!cellId) return;
  const r = await asPlatform(db, (trx) =>
    sql<{ connection: string; since: Date }>`
      select connection, connection_since as since from cell_agents where cell_id = ${cellId}`.execute(trx),
  );
  const a = r.rows[0];
  if (a && a.connection !== 'Connected')
    throw new Error(`the agent of its cell is ${a.connection} since ${a.since.toISOString()}`);
}
