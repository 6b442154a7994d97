import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import { systemContext } from '../context/request-context.js';
import type { JobHandler } from '../controller/queue/job-types.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import type { Clock } from '../domain/clock.js';
import { type DataClass, DEFAULT_RETENTION_DAYS } from '../workflows/retention.js';

/** The job type of the retention sweep on the leased queue (`reconcile_jobs`), and its one key. */
export const RETENTION_SWEEP = 'retention.sweep';
const SWEEP_KEY = '00000000-0000-4000-8000-000000000020';
/** How often the sweep runs by default. */
export const SWEEP_INTERVAL_MS = 3600_000;

/** What one data class lost in one sweep, per tenant, under which window (and exception). */
export interface ClassSweep {
  swept: number;
  tenants: { tenant: string; windowDays: number; swept: number; exception: string | null }[];
}
export interface SweepReport {
  /** The moment the windows were judged by (the clock's). */
  at: string;
  classes: Record<DataClass, ClassSweep>;
  /** Tenants under legal hold: nothing of theirs was looked at. */
  legalHolds: string[];
}

/**
 * Per tenant not under legal hold: the window of `cls` in days (the tenant's retention record once
 * archived, else its plan's `spec.retention.<class>Days`, else seed 002's default) and the approved,
 * unused governance exception that waives the window, if any.
 */
const windowsOf = (cls: DataClass) => sql`
  select t.id as tenant_id, t.slug,
    coalesce((r.windows ->> ${cls})::int, (p.spec -> 'retention' ->> ${`${cls}Days`})::int,
             ${DEFAULT_RETENTION_DAYS[cls]}::int) as days,
    (select x.id from purge_exceptions x where x.tenant_id = t.id and x.used_at is null
       and x.approved_at is not null) as exception_id
  from tenants t
  left join tenant_retention r on r.tenant_id = t.id
  left join plans p on p.slug = t.spec ->> 'plan' and p.deleted_at is null
  where not exists (select 1 from legal_holds h where h.tenant_id = t.id and h.released_at is null)`;

/** The delete of one class's records past their window, given `w` (windowsOf) and the cut-off `at`. */
function sweepOf(cls: DataClass, at: Date) {
  // Past the window, or under an approved governance exception (which the audit record names).
  const past = (column: ReturnType<typeof sql>) =>
    sql`(w.exception_id is not null or ${column} < ${at.toISOString()}::timestamptz - make_interval(days => w.days))`;
  switch (cls) {
    // Retired services: finalised tombstones, with their scaling policies' tombstones and queue rows.
    case 'retiredServices':
      return sql`
        gone as (
          select s.tenant_id, s.id from services s join w on w.tenant_id = s.tenant_id
          where s.deleted_at is not null and s.phase = 'Deleted' and ${past(sql`s.deleted_at`)}),
        policies as (
          delete from scaling_policies p using gone
          where p.tenant_id = gone.tenant_id and p.service_id = gone.id returning p.id),
        policy_jobs as (
          delete from reconcile_jobs j using policies
          where j.object_kind = 'ScalingPolicy' and j.object_id = policies.id returning 1),
        service_jobs as (
          delete from reconcile_jobs j using gone
          where j.object_kind = 'Service' and j.object_id = gone.id returning 1),
        swept as (
          delete from services s using gone
          where s.tenant_id = gone.tenant_id and s.id = gone.id
            and (select count(*) from policies) >= 0 and (select count(*) from policy_jobs) >= 0
            and (select count(*) from service_jobs) >= 0
          returning s.tenant_id)`;
    // Deployment history: earlier desired-state versions of deployments and services (the lineage);
    // each object's newest version, what it is now, stays.
    case 'deploymentHistory':
      return sql`
        swept as (
          delete from object_versions v using w
          where v.tenant_id = w.tenant_id and v.object_kind in ('Deployment', 'Service')
            and ${past(sql`v.created_at`)}
            and v.generation < (select max(n.generation) from object_versions n
                                where n.object_kind = v.object_kind and n.object_id = v.object_id)
          returning v.tenant_id)`;
    // Configuration versions: no longer active (superseded or deleted) for longer than the window,
    // counted from the next version's creation (or the deletion); a version a live service is
    // pinned to stays.
    case 'configurationVersions':
      return sql`
        gone as (
          select c.tenant_id, c.id from configurations c join w on w.tenant_id = c.tenant_id
          where (c.deleted_at is not null or c.version_state = 'superseded')
            and ${past(sql`coalesce(c.deleted_at, (select min(n.created_at) from configurations n
                     where n.tenant_id = c.tenant_id and n.config_name = c.config_name and n.version > c.version))`)}
            and not exists (select 1 from services s where s.tenant_id = c.tenant_id and s.deleted_at is null
                            and s.spec -> 'configuration' ->> 'name' = c.config_name
                            and (s.spec -> 'configuration' ->> 'version')::int = c.version)),
        jobs as (
          delete from reconcile_jobs j using gone
          where j.object_kind = 'Configuration' and j.object_id = gone.id returning 1),
        swept as (
          delete from configurations c using gone
          where c.tenant_id = gone.tenant_id and c.id = gone.id and (select count(*) from jobs) >= 0
          returning c.tenant_id)`;
    // Drift findings: resolved ones past the window; open ones are kept indefinitely.
    case 'driftFindings':
      return sql`
        swept as (
          delete from drift_findings f using w
          where f.tenant_id = w.tenant_id and f.resolved_at is not null and ${past(sql`f.resolved_at`)}
          returning f.tenant_id)`;
  }
}

/**
 * Enforces seed 002's retention table once, in one transaction, as of `clock.now()`: for each data
 * class, the records past their tenant's window are deleted — never those of a tenant under legal
 * hold, never before the window unless a second principal approved a governance exception for the
 * tenant (src/workflows/retention.ts) — and one audit record says what went: per class, how many,
 * per tenant under which window and exception. Safe to run twice (a second run finds nothing new).
 */
export async function sweepRetention(trx: Trx, clock: Clock): Promise<SweepReport> {
  const at = new Date(clock.now());
  const classes = {} as Record<DataClass, ClassSweep>;
  for (const cls of Object.keys(DEFAULT_RETENTION_DAYS) as DataClass[]) {
    const r = await sql<{ slug: string; days: number; exception_id: string | null; n: number }>`
      with w as (${windowsOf(cls)}), ${sweepOf(cls, at)}
      select w.slug, w.days, w.exception_id, count(*)::int as n
      from swept join w on w.tenant_id = swept.tenant_id
      group by w.slug, w.days, w.exception_id order by w.slug`.execute(trx);
    classes[cls] = {
      swept: r.rows.reduce((a, x) => a + x.n, 0),
      tenants: r.rows.map((x) => ({
        tenant: x.slug,
        windowDays: x.days,
        swept: x.n,
        exception: x.exception_id,
      })),
    };
  }
  const holds = await sql<{ slug: string }>`
    select distinct t.slug from legal_holds h join tenants t on t.id = h.tenant_id
    where h.released_at is null order by t.slug`.execute(trx);
  const report: SweepReport = { at: at.toISOString(), classes, legalHolds: holds.rows.map((h) => h.slug) };
  await appendAudit(
    trx,
    auditEntryOf(systemContext('tenantry-retention-sweep'), {
      tenantId: null,
      action: 'retention.sweep',
      target: { kind: 'RetentionPolicy', id: null, slug: 'runtime-inventory' },
      before: null,
      after: { ...report, defaults: DEFAULT_RETENTION_DAYS } as never,
      outcome: 'success',
      decision: null,
    }),
  );
  return report;
}

/** Puts the sweep on the queue if it is not there (at start; one row whatever the number of processes). */
export async function scheduleRetentionSweep(trx: Trx): Promise<void> {
  await sql`insert into reconcile_jobs (object_kind, object_id, tenant_id, generation)
    values (${RETENTION_SWEEP}, ${SWEEP_KEY}, null, 0) on conflict do nothing`.execute(trx);
}

/**
 * The sweep's job handler: sweeps in the job's own transaction and comes back after `intervalMs`.
 * Concurrency contract: the queue's lease keeps two processes from sweeping at once; the next run
 * is set only on the row this worker just released (`locked_by is null`) and not when an enqueue
 * raced with the run (completeJob left it due now).
 */
export function retentionSweepHandler(db: Db, clock: Clock, intervalMs = SWEEP_INTERVAL_MS): JobHandler {
  return {
    async run(job, finish) {
      await asPlatform(db, async (trx) => {
        await sweepRetention(trx, clock);
        await finish(trx, false);
        await sql`update reconcile_jobs set run_after = now() + make_interval(secs => ${intervalMs / 1000})
          where object_kind = ${job.kind} and object_id = ${job.objectId} and locked_by is null
            and run_after > now()`.execute(trx);
      });
      return { finalised: false, finished: true };
    },
  };
}
