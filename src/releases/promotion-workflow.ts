import { sql } from 'kysely';
import {
  type AttemptContext,
  type AuditEntry,
  appendAudit,
  auditEntryOf,
  prepareAuditAppends,
} from '../audit/append-audit.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import type { Clock } from '../domain/clock.js';
import { assignWaves, budgetSpent, type TenantFacts, windowEnd } from '../domain/promotion-waves.js';
import { compareVersions, judgeRelease, type ReleaseInterfaces } from '../domain/release-compatibility.js';
import { appendEvent, appendEvents, appendEventsSql, type EventInput } from '../events/append-event.js';
import { ProviderError } from '../providers/provider.js';
import { GATES, type StageSpec } from '../registry/kinds/pipeline.js';
import {
  type StepContext,
  StepDeferred,
  type StepDefinition,
  type WorkflowDefinition,
  type WorkflowRegistry,
} from '../workflows/workflow.js';
import { rollOutReleases } from './release-rollout.js';

export const PROMOTION_TYPE = 'release.promotion';

/** What a promotion workflow is asked to do (its id is the promotion's id). */
export interface PromotionInput {
  promotionId: string;
  systemId: string;
  system: string;
  version: string;
  releaseId: string;
  stage: string;
  mode: 'promote' | 'rollback';
}

export interface HealthVerdict {
  healthy: boolean;
  reason: string;
}
/** One tenant deployment to verify after its update: the version it must run, reported since when. */
export interface VerifyTarget {
  tenantId: string;
  deploymentId: string;
  version: string;
  since: Date;
}
/**
 * Verification of a batch of tenants' deployments after their update: the health the runtime
 * reports, one verdict per target (in the targets' order), each within the timeout.
 */
export type Verifier = (
  targets: VerifyTarget[],
  opts: { timeoutMs: number; maxErrorRate: number },
  signal: AbortSignal,
) => Promise<HealthVerdict[]>;

export interface PromotionDeps {
  db: Db;
  clock: Clock;
  /** Longest wait before a waiting promotion looks at the clock again. */
  recheckMs: number;
  verify?: Verifier;
}

export interface PromotionRow {
  id: string;
  system_id: string;
  release_id: string;
  version: string;
  stage: string;
  stage_spec: StageSpec;
  mode: 'promote' | 'rollback';
  state: string;
  requested_by: { principal: string; kind: string };
  author: string | null;
  required_approvals: number;
  approvals: { principal: string; kind: string; at: string }[];
  gates: unknown;
  progress: { waves?: Record<string, { startedAt?: string; finishedAt?: string }> };
  error: string | null;
  request_id: string;
  correlation_id: string;
  pipeline_id: string;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
}

export interface TargetRow {
  tenant_id: string;
  deployment_id: string;
  tenant_slug: string;
  deployment_slug: string;
  wave: number;
  state: 'Pending' | 'Deferred' | 'Updated' | 'Verified' | 'RolledBack' | 'Skipped' | 'Halted';
  reason: string | null;
  from_version: string | null;
  to_version: string;
  deferred_until: Date | null;
  updated_at: Date;
}

interface PlannedTarget {
  tenantId: string;
  deploymentId: string;
  wave: number;
  fromVersion: string | null;
  skip: string | null;
}

const DEFAULT_VERIFY_TIMEOUT_S = 300;
/** Most tenants one roll-out transaction updates (fewer while the failure budget is nearly spent). */
const BATCH_SIZE = 50;

export async function loadPromotion(trx: Trx, id: string): Promise<PromotionRow | undefined> {
  const r = await sql<PromotionRow>`select * from promotions where id = ${id}`.execute(trx);
  return r.rows[0];
}

export async function targetsOf(trx: Trx, promotionId: string): Promise<TargetRow[]> {
  const r = await sql<TargetRow>`
    select pt.*, t.slug as tenant_slug, d.slug as deployment_slug
    from promotion_targets pt
    join tenants t on t.id = pt.tenant_id
    join deployments d on d.tenant_id = pt.tenant_id and d.id = pt.deployment_id
    where pt.promotion_id = ${promotionId}
    order by pt.wave, t.slug, d.slug`.execute(trx);
  return r.rows;
}

const targetKey = (t: { tenant_id: string; deployment_id: string }) => `${t.tenant_id}/${t.deployment_id}`;

/**
 * Targets' new states (each with its reason; `from`, when given, the version it ran before), their
 * audit records and their events, in one statement.
 */
async function recordTargets(
  trx: Trx,
  p: PromotionRow,
  steps: readonly { t: TargetRow; state: TargetRow['state']; reason: string | null; from?: string | null }[],
  audits: readonly AuditEntry[],
  events: readonly EventInput[],
): Promise<void> {
  if (steps.length === 0) return;
  await sql`
    with targets as (
      update promotion_targets pt set state = x.state, reason = x.reason,
          from_version = case when x.set_from then x.from_version else pt.from_version end,
          deferred_until = null, updated_at = now()
      from unnest(${steps.map((s) => s.t.tenant_id)}::uuid[], ${steps.map((s) => s.t.deployment_id)}::uuid[],
                  ${steps.map((s) => s.state)}::text[], ${steps.map((s) => s.reason)}::text[],
                  ${steps.map((s) => s.from !== undefined)}::bool[], ${steps.map((s) => s.from ?? null)}::text[])
        as x(tenant_id, deployment_id, state, reason, set_from, from_version)
      where pt.promotion_id = ${p.id} and pt.tenant_id = x.tenant_id and pt.deployment_id = x.deployment_id
    )${audits.length > 0 ? sql`, audit as (${prepareAuditAppends(audits).insert})` : sql``}${
      events.length > 0 ? sql`, ${appendEventsSql(events)}` : sql``
    }
    select 1`.execute(trx);
}

/** The audit context of a promotion's own records: the engine acting for the requester. */
function workflowActor(p: PromotionRow): AttemptContext {
  return {
    actor: { principal: `tenantry-promotion/${p.id}`, kind: 'system' },
    appId: 'tenantry',
    sessionId: null,
    requestId: p.request_id,
    correlationId: p.correlation_id,
  };
}

/**
 * The health the runtime reported for each deployment (`deployment_health`, written by the runtime
 * that runs its replicas, or through `POST /v1/deployments/{ref}/health`): healthy once a report
 * for the new version, made after the update, shows every desired replica ready and an error rate
 * within the stage's limit; unhealthy on an error rate over the limit, or when no such report
 * arrives within the timeout. One read per look covers the whole batch.
 */
export function reportedHealth(db: Db): Verifier {
  return async (targets, opts, signal) => {
    const deadline = Date.now() + opts.timeoutMs;
    const verdicts: (HealthVerdict | undefined)[] = targets.map(() => undefined);
    const last = targets.map(() => 'no health report for the new version');
    for (;;) {
      const open = targets.flatMap((t, i) => (verdicts[i] ? [] : [{ t, i }]));
      if (open.length === 0) return verdicts as HealthVerdict[];
      const r = await asPlatform(db, (trx) =>
        sql<{
          i: number;
          version: string;
          ready_replicas: number;
          desired_replicas: number;
          error_rate: number;
        }>`
          select x.i, h.version, h.ready_replicas, h.desired_replicas, h.error_rate
          from unnest(${open.map((o) => o.i)}::int[], ${open.map((o) => o.t.tenantId)}::uuid[],
                      ${open.map((o) => o.t.deploymentId)}::uuid[], ${open.map((o) => o.t.since.toISOString())}::timestamptz[])
            as x(i, tenant_id, deployment_id, since)
          join deployment_health h on h.tenant_id = x.tenant_id and h.deployment_id = x.deployment_id
            and h.reported_at >= x.since`.execute(trx),
      );
      for (const h of r.rows) {
        const t = targets[h.i];
        if (!t || h.version !== t.version) continue;
        if (h.error_rate > opts.maxErrorRate)
          verdicts[h.i] = { healthy: false, reason: `error rate ${h.error_rate} above ${opts.maxErrorRate}` };
        else if (h.desired_replicas > 0 && h.ready_replicas >= h.desired_replicas)
          verdicts[h.i] = {
            healthy: true,
            reason: `${h.ready_replicas}/${h.desired_replicas} ready, error rate ${h.error_rate}`,
          };
        else last[h.i] = `${h.ready_replicas}/${h.desired_replicas} replicas ready`;
      }
      if (verdicts.every(Boolean)) return verdicts as HealthVerdict[];
      if (Date.now() >= deadline || signal.aborted)
        return verdicts.map(
          (v, i) =>
            v ?? { healthy: false, reason: `not healthy within ${opts.timeoutMs / 1000} s: ${last[i]}` },
        );
      await new Promise((res) => setTimeout(res, 100));
    }
  };
}

/**
 * The promotion workflow (issue 21): gates, tenant waves chosen from the registry, per-tenant
 * update and verification with rollback, soak time between waves, evidence. It runs on the
 * lifecycle orchestrator's engine with the system as the workflow's owner (`workflows.tenant_id`),
 * so one promotion of a system is open at a time (the same partial unique index).
 *
 * Tenants go in batches (up to BATCH_SIZE, never more than the failure budget still allows): one
 * transaction checks their holds and updates them, one read per look verifies them, one
 * transaction settles them — two commits per batch. Both transactions are set-based: a batch
 * costs one statement per Service it changes (the change path) and a fixed few for all its
 * tenants (targets, deployment_releases, audit records and events), where each tenant cost
 * about a dozen. Resumable by construction: each tenant's runtime update (`deployment_releases`)
 * and its target's state change commit in the same transaction under the target's row lock, so a
 * step that runs again after a crash continues with the targets still Pending, Deferred or
 * Updated — no tenant is updated twice or skipped. Waiting (soak time, maintenance windows,
 * freezes) lets go of the lease (`StepDeferred`) and looks again later.
 */
export function promotionWorkflow(deps: PromotionDeps): WorkflowDefinition<PromotionInput> {
  const { db, clock } = deps;
  const verify = deps.verify ?? reportedHealth(db);
  const nowIso = () => new Date(clock.now()).toISOString();

  const promotionOf = async (id: string): Promise<PromotionRow> => {
    const p = await asPlatform(db, (trx) => loadPromotion(trx, id));
    if (!p) throw new ProviderError(`promotion ${id} is gone`, 'PromotionGone', false);
    return p;
  };

  /** One of the promotion's events (a tenant's, in that tenant's stream; else the platform's). */
  const eventOf = (
    p: PromotionRow,
    input: PromotionInput,
    name: EventInput['name'],
    extra: Record<string, unknown>,
    tenantId: string | null = null,
  ): EventInput => ({
    tenantId,
    name,
    subject: `promotions/${p.id}`,
    data: {
      promotionId: p.id,
      system: input.system,
      version: input.version,
      stage: input.stage,
      mode: input.mode,
      ...extra,
    },
    correlationId: p.correlation_id,
  });
  const event = (
    trx: Trx,
    p: PromotionRow,
    input: PromotionInput,
    name: EventInput['name'],
    extra: Record<string, unknown>,
  ) => appendEvent(trx, eventOf(p, input, name, extra));

  const gates: StepDefinition<PromotionInput> = {
    name: 'check-gates',
    async run(ctx) {
      const p = await promotionOf(ctx.input.promotionId);
      return asPlatform(db, async (trx) => {
        const results: { gate: string; passed: boolean; detail: string }[] = [];
        const enabled = p.mode === 'rollback' ? ['rollback-readiness'] : (p.stage_spec.gates ?? [...GATES]);
        const rel = (
          await sql<{ spec: ReleaseInterfaces & { validations?: { name: string; passed: boolean }[] } }>`
            select spec from releases where id = ${p.release_id} and deleted_at is null`.execute(trx)
        ).rows[0];
        if (!rel) throw new ProviderError('the release no longer exists', 'ReleaseGone', false);
        if (enabled.includes('validations')) {
          const v = rel.spec.validations ?? [];
          const failed = v.filter((x) => !x.passed).map((x) => x.name);
          results.push({
            gate: 'validations',
            passed: v.length > 0 && failed.length === 0,
            detail:
              v.length === 0
                ? 'no validation results are attached to the release'
                : failed.length > 0
                  ? `failed: ${failed.join(', ')}`
                  : `${v.length} passed: ${v.map((x) => x.name).join(', ')}`,
          });
        }
        const others = (
          await sql<{ version: string; spec: ReleaseInterfaces }>`
            select version, spec from releases where system_id = ${p.system_id} and deleted_at is null`.execute(
            trx,
          )
        ).rows;
        if (enabled.includes('compatibility')) {
          const prev = others
            .filter((o) => compareVersions(o.version, p.version) < 0)
            .sort((a, b) => compareVersions(b.version, a.version))[0];
          if (!prev)
            results.push({ gate: 'compatibility', passed: true, detail: 'first release of the system' });
          else {
            const v = judgeRelease(prev, { version: p.version, spec: rel.spec });
            results.push({
              gate: 'compatibility',
              passed: v.refused.length === 0,
              detail:
                v.refused.length === 0
                  ? `${v.bump} over ${prev.version}; the changes need a ${v.required}`
                  : v.refused.map((f) => f.message).join('; '),
            });
          }
        }
        if (enabled.includes('rollback-readiness')) {
          // Every version a target runs now (what a rollback restores) still has its release.
          const running = (
            await sql<{ version: string }>`
              select distinct version from deployment_releases where system_id = ${p.system_id}`.execute(trx)
          ).rows.map((r) => r.version);
          const have = new Set(others.map((o) => o.version));
          const missing = running.filter((v) => !have.has(v));
          results.push({
            gate: 'rollback-readiness',
            passed: missing.length === 0,
            detail:
              missing.length === 0
                ? `releases present for ${running.length ? running.join(', ') : 'no running version'}`
                : `no release for running version(s) ${missing.join(', ')}`,
          });
        }
        if (enabled.includes('previous-stage')) {
          const pipe = (
            await sql<{
              spec: { stages: StageSpec[] };
            }>`select spec from pipelines where id = ${p.pipeline_id}`.execute(trx)
          ).rows[0];
          const stages = pipe?.spec.stages ?? [];
          const i = stages.findIndex((s) => s.name === p.stage);
          const before = i > 0 ? stages[i - 1]?.name : undefined;
          if (!before) results.push({ gate: 'previous-stage', passed: true, detail: 'first stage' });
          else {
            const ok =
              await sql`select 1 from promotions where release_id = ${p.release_id} and stage = ${before}
              and mode = 'promote' and state = 'Succeeded' limit 1`.execute(trx);
            results.push({
              gate: 'previous-stage',
              passed: ok.rows.length > 0,
              detail: ok.rows.length > 0 ? `promoted to ${before}` : `not yet promoted to ${before}`,
            });
          }
        }
        return { results };
      });
    },
    async checkpoint(trx, ctx, output) {
      await sql`update promotions set gates = ${JSON.stringify((output as { results: unknown }).results)},
        updated_at = now() where id = ${ctx.input.promotionId}`.execute(trx);
      const failed = (
        output as { results: { gate: string; passed: boolean; detail: string }[] }
      ).results.filter((r) => !r.passed);
      if (failed.length > 0)
        // Recorded with the gates' results; the next step refuses to go on.
        await sql`update promotions set error = ${failed.map((f) => `${f.gate}: ${f.detail}`).join('; ')}
          where id = ${ctx.input.promotionId}`.execute(trx);
    },
  };

  const plan: StepDefinition<PromotionInput> = {
    name: 'plan-waves',
    async run(ctx) {
      const gateResults = (
        ctx.outputs['check-gates'] as { results: { gate: string; passed: boolean; detail: string }[] }
      ).results;
      const failed = gateResults.filter((g) => !g.passed);
      if (failed.length > 0)
        throw new ProviderError(
          `gates failed: ${failed.map((f) => `${f.gate} (${f.detail})`).join('; ')}`,
          'GateFailed',
          false,
        );
      const p = await promotionOf(ctx.input.promotionId);
      const stage = p.stage_spec;
      const rows = await asPlatform(
        db,
        async (trx) =>
          (
            await sql<{
              deployment_id: string;
              tenant_id: string;
              region: string;
              plan: string | null;
              labels: Record<string, string>;
              lifecycle: string;
              current: string | null;
              pin_version: string | null;
              pin_reason: string | null;
              pin_until: Date | null;
            }>`
            select d.id as deployment_id, t.id as tenant_id, t.region, t.spec->>'plan' as plan, t.labels,
                   t.lifecycle, dr.version as current, pin.version as pin_version, pin.reason as pin_reason,
                   pin.until as pin_until
            from deployments d
            join tenants t on t.id = d.tenant_id and t.deleted_at is null
            left join deployment_releases dr on dr.tenant_id = d.tenant_id and dr.deployment_id = d.id
            left join release_pins pin on pin.tenant_id = t.id and pin.system_id = d.system_id
              and pin.until > ${nowIso()}
            where d.system_id = ${p.system_id} and d.deleted_at is null
              and t.environment_type = any(${stage.environmentTypes})
              ${
                stage.cells
                  ? sql`and t.cell_id in (select id from cells where slug = any(${stage.cells}) and deleted_at is null)`
                  : sql``
              }
            order by t.slug, d.slug`.execute(trx)
          ).rows,
      );
      const waves = p.mode === 'rollback' ? [] : (stage.waves ?? []);
      const facts: TenantFacts[] = rows.map((r) => ({
        id: r.tenant_id,
        region: r.region,
        plan: r.plan,
        labels: r.labels ?? {},
      }));
      const waveOf = assignWaves(waves, facts);
      const targets: PlannedTarget[] = rows.map((r) => ({
        tenantId: r.tenant_id,
        deploymentId: r.deployment_id,
        wave: waveOf.get(r.tenant_id) ?? 0,
        fromVersion: r.current,
        skip:
          r.lifecycle !== 'Active'
            ? `tenant is ${r.lifecycle}`
            : r.pin_version
              ? `pinned to ${r.pin_version} until ${r.pin_until?.toISOString()}: ${r.pin_reason}`
              : r.current === p.version
                ? `already runs ${p.version}`
                : null,
      }));
      return { targets };
    },
    async checkpoint(trx, ctx, output) {
      const p = await loadPromotion(trx, ctx.input.promotionId);
      if (!p) return;
      const { targets } = output as { targets: PlannedTarget[] };
      if (targets.length === 0) return;
      // Every target in one insert; the skipped ones it inserted (not those of an earlier run) get
      // their event, all in one more.
      const inserted = await sql<{ tenant_id: string; deployment_id: string }>`
        insert into promotion_targets (promotion_id, tenant_id, deployment_id, wave, state, reason, from_version, to_version)
        select ${p.id}, x.tenant_id, x.deployment_id, x.wave, x.state, x.reason, x.from_version, ${p.version}
        from unnest(${targets.map((t) => t.tenantId)}::uuid[], ${targets.map((t) => t.deploymentId)}::uuid[],
                    ${targets.map((t) => t.wave)}::int[], ${targets.map((t) => (t.skip ? 'Skipped' : 'Pending'))}::text[],
                    ${targets.map((t) => t.skip)}::text[], ${targets.map((t) => t.fromVersion)}::text[])
          as x(tenant_id, deployment_id, wave, state, reason, from_version)
        on conflict do nothing
        returning tenant_id, deployment_id`.execute(trx);
      const fresh = new Set(inserted.rows.map(targetKey));
      const skipped = targets.filter(
        (t) => t.skip && fresh.has(targetKey({ tenant_id: t.tenantId, deployment_id: t.deploymentId })),
      );
      await appendEvents(
        trx,
        skipped.map((t) =>
          eventOf(
            p,
            ctx.input,
            'promotion.tenant_skipped',
            { tenantId: t.tenantId, deploymentId: t.deploymentId, wave: t.wave, reason: t.skip },
            t.tenantId,
          ),
        ),
      );
    },
  };

  /**
   * Why each of `tenantIds` must wait now, and until when: its maintenance window, or a freeze
   * covering it (two reads for the whole batch, inside the batch's transaction).
   */
  const holdsOf = async (trx: Trx, tenantIds: string[]) => {
    const now = clock.now();
    const holds = new Map<string, { until: number; reason: string }>();
    if (tenantIds.length === 0) return holds;
    const windows = (
      await sql<{ tenant_id: string; starts_at: Date; ends_at: Date }>`
        select tenant_id, starts_at, ends_at from maintenance_windows where tenant_id = any(${tenantIds}::uuid[])`.execute(
        trx,
      )
    ).rows;
    for (const id of tenantIds) {
      const end = windowEnd(
        windows
          .filter((w) => w.tenant_id === id)
          .map((w) => ({ startsAt: w.starts_at.getTime(), endsAt: w.ends_at.getTime() })),
        now,
      );
      if (end !== undefined) holds.set(id, { until: end, reason: 'in a maintenance window' });
    }
    const frozen = (
      await sql<{ tenant_id: string; name: string; ends_at: Date | null }>`
        select t.id as tenant_id, f.name, f.ends_at from tenants t
        cross join lateral (
          select f.name, f.ends_at, f.created_at from workflow_freezes f
          where f.lifted_at is null and f.starts_at <= now()
            and (f.ends_at is null or f.ends_at > now()) and not (${PROMOTION_TYPE} = any (f.allow))
            and (f.scope = 'platform' or (f.scope = 'region' and f.target = t.region)
                 or (f.scope = 'cell' and f.target = t.cell_id::text))
          order by f.created_at limit 1) f
        where t.id = any(${tenantIds}::uuid[])`.execute(trx)
    ).rows;
    for (const f of frozen)
      if (!holds.has(f.tenant_id))
        holds.set(f.tenant_id, {
          until: f.ends_at?.getTime() ?? now + deps.recheckMs,
          reason: `freeze "${f.name}"`,
        });
    return holds;
  };

  /**
   * The promotion's targets in `keys` locked (`for update`, in one order) and re-read: their state
   * and the version each ran before (a target another run already moved on is left to its caller).
   */
  const lockTargets = async (trx: Trx, p: PromotionRow, keys: readonly TargetRow[]) =>
    new Map(
      (
        await sql<{ tenant_id: string; deployment_id: string; state: string; from_version: string | null }>`
          select tenant_id, deployment_id, state, from_version from promotion_targets
          where promotion_id = ${p.id} and (tenant_id, deployment_id) in (
            select * from unnest(${keys.map((t) => t.tenant_id)}::uuid[], ${keys.map((t) => t.deployment_id)}::uuid[]))
          order by tenant_id, deployment_id
          for update`.execute(trx)
      ).rows.map((r) => [targetKey(r), r]),
    );

  /** A tenant step's audit record: the deployment, its version before and after, and `after`'s details. */
  const tenantAudit = (
    p: PromotionRow,
    t: TargetRow,
    action: string,
    versions: { before: string | null; after: string | null },
    detail: Record<string, unknown>,
    outcome: 'success' | 'failure' = 'success',
  ): AuditEntry =>
    auditEntryOf(workflowActor(p), {
      tenantId: t.tenant_id,
      action,
      target: { kind: 'Deployment', id: t.deployment_id, slug: t.deployment_slug },
      before: { version: versions.before },
      after: { version: versions.after, promotionId: p.id, ...detail },
      outcome,
      decision: null,
    });

  /**
   * One batch of due targets in one transaction: the targets' rows are locked and re-read (a target
   * another run already moved on is left alone); a tenant held by its maintenance window or a
   * freeze is Deferred; every other one gets its runtime update (`deployment_releases`, the
   * services' release through the change path), its target state Updated, its audit record and its
   * event — all in the same commit, so a crash either keeps the whole batch or none of it.
   * Set-based: besides one statement per changed service (the change path), the batch costs the
   * same few statements whatever its size. Returns the targets it updated and those it deferred
   * (with until when).
   */
  const updateBatch = (p: PromotionRow, input: PromotionInput, batch: TargetRow[]) =>
    asPlatform(db, async (trx) => {
      const state = await lockTargets(trx, p, batch);
      const due = batch.filter((t) => ['Pending', 'Deferred'].includes(state.get(targetKey(t))?.state ?? ''));
      const holds = await holdsOf(trx, [...new Set(due.map((t) => t.tenant_id))]);
      const deferred = due.flatMap((t) => {
        const hold = holds.get(t.tenant_id);
        return hold ? [{ t, ...hold }] : [];
      });
      await deferAll(trx, p, input, deferred);
      const updated = due.filter((t) => !holds.has(t.tenant_id));
      if (updated.length === 0) return { updated, deferred };
      const previous = new Map(
        (
          await sql<{ tenant_id: string; deployment_id: string; previous_version: string | null }>`
            insert into deployment_releases as dr (tenant_id, deployment_id, system_id, version, promotion_id)
            select x.tenant_id, x.deployment_id, ${p.system_id}, ${p.version}, ${p.id}
            from unnest(${updated.map((t) => t.tenant_id)}::uuid[], ${updated.map((t) => t.deployment_id)}::uuid[])
              as x(tenant_id, deployment_id)
            on conflict (tenant_id, deployment_id) do update
              set previous_version = dr.version, version = excluded.version, promotion_id = excluded.promotion_id,
                  updated_at = now()
            returning tenant_id, deployment_id, previous_version`.execute(trx)
        ).rows.map((r) => [targetKey(r), r.previous_version]),
      );
      // The tenants' services of these deployments take the release's images: the runtime rolls them out.
      await rollOutReleases(
        trx,
        systemContext(`tenantry-promotion ${p.id}`),
        { systemId: p.system_id, version: p.version },
        updated.map((t) => ({ tenantId: t.tenant_id, deploymentId: t.deployment_id })),
      );
      const steps = updated.map((t) => ({ t, from: previous.get(targetKey(t)) ?? null }));
      await recordTargets(
        trx,
        p,
        steps.map(({ t, from }) => ({ t, state: 'Updated', reason: null, from })),
        steps.map(({ t, from }) =>
          tenantAudit(
            p,
            t,
            'promotion.tenant_update',
            { before: from, after: p.version },
            { stage: p.stage, wave: t.wave, mode: p.mode },
          ),
        ),
        steps.map(({ t, from }) =>
          eventOf(
            p,
            input,
            'promotion.tenant_updated',
            {
              tenantId: t.tenant_id,
              deploymentId: t.deployment_id,
              wave: t.wave,
              fromVersion: from,
              toVersion: p.version,
            },
            t.tenant_id,
          ),
        ),
      );
      return { updated, deferred };
    });

  /**
   * Ends a batch of Updated targets in one transaction: each Verified, or RolledBack to the version
   * it ran before, with its audit record (and a rolled-back one with its event). A cancelled
   * promotion's undo also rolls Verified targets back (`from`). A target no longer in one of the
   * `from` states is left alone. Set-based like updateBatch: one statement per service a rollback
   * changes, the rest a few statements for the batch.
   */
  const settleBatch = (
    p: PromotionRow,
    input: PromotionInput,
    batch: { t: TargetRow; verdict: HealthVerdict }[],
    from: readonly string[] = ['Updated'],
  ) =>
    asPlatform(db, async (trx) => {
      if (batch.length === 0) return;
      const rows = await lockTargets(
        trx,
        p,
        batch.map((b) => b.t),
      );
      const live = batch.flatMap(({ t, verdict }) => {
        const row = rows.get(targetKey(t));
        return row && from.includes(row.state) ? [{ t, verdict, before: row.from_version }] : [];
      });
      if (live.length === 0) return;
      const failed = live.filter((x) => !x.verdict.healthy);
      await restore(trx, p, failed);
      await recordTargets(
        trx,
        p,
        live.map(({ t, verdict }) => ({
          t,
          state: verdict.healthy ? 'Verified' : 'RolledBack',
          reason: verdict.reason,
        })),
        live.map(({ t, verdict, before }) =>
          tenantAudit(
            p,
            t,
            verdict.healthy ? 'promotion.tenant_verified' : 'promotion.tenant_rollback',
            { before: p.version, after: verdict.healthy ? p.version : before },
            { verification: verdict },
            verdict.healthy ? 'success' : 'failure',
          ),
        ),
        failed.map(({ t, verdict, before }) =>
          eventOf(
            p,
            input,
            'promotion.tenant_rolled_back',
            {
              tenantId: t.tenant_id,
              deploymentId: t.deployment_id,
              wave: t.wave,
              fromVersion: p.version,
              toVersion: before ?? 'none',
              reason: verdict.reason,
            },
            t.tenant_id,
          ),
        ),
      );
    });

  /**
   * Puts deployments back on the version each ran before (none recorded before: they have none
   * again): their services on that release's images (none recorded: they stay), one roll-out per
   * version, and their `deployment_releases` in one statement.
   */
  const restore = async (
    trx: Trx,
    p: PromotionRow,
    targets: readonly { t: TargetRow; before: string | null }[],
  ) => {
    if (targets.length === 0) return;
    const ctx = systemContext(`tenantry-promotion ${p.id}`);
    for (const version of new Set(targets.flatMap((x) => (x.before === null ? [] : [x.before]))))
      await rollOutReleases(
        trx,
        ctx,
        { systemId: p.system_id, version },
        targets
          .filter((x) => x.before === version)
          .map(({ t }) => ({ tenantId: t.tenant_id, deploymentId: t.deployment_id })),
      );
    await sql`
      with x as (
        select * from unnest(${targets.map((x) => x.t.tenant_id)}::uuid[], ${targets.map((x) => x.t.deployment_id)}::uuid[],
                             ${targets.map((x) => x.before)}::text[]) as x(tenant_id, deployment_id, before)
      ), gone as (
        delete from deployment_releases dr using x
        where x.before is null and dr.tenant_id = x.tenant_id and dr.deployment_id = x.deployment_id
          and dr.version = ${p.version}
      )
      update deployment_releases dr set version = x.before, previous_version = ${p.version},
          promotion_id = ${p.id}, updated_at = now()
      from x
      where x.before is not null and dr.tenant_id = x.tenant_id and dr.deployment_id = x.deployment_id
        and dr.version = ${p.version}`.execute(trx);
  };

  /**
   * Defers targets (in the batch's transaction) until their hold ends; an unchanged deferral records
   * no new event. One statement for the targets, one for the events of those that changed.
   */
  const deferAll = async (
    trx: Trx,
    p: PromotionRow,
    input: PromotionInput,
    held: readonly { t: TargetRow; until: number; reason: string }[],
  ) => {
    if (held.length === 0) return;
    const changed = await sql<{ tenant_id: string; deployment_id: string }>`
      update promotion_targets pt set state = 'Deferred', deferred_until = x.until, reason = x.reason, updated_at = now()
      from unnest(${held.map((h) => h.t.tenant_id)}::uuid[], ${held.map((h) => h.t.deployment_id)}::uuid[],
                  ${held.map((h) => new Date(h.until).toISOString())}::timestamptz[], ${held.map((h) => h.reason)}::text[])
        as x(tenant_id, deployment_id, until, reason)
      where pt.promotion_id = ${p.id} and pt.tenant_id = x.tenant_id and pt.deployment_id = x.deployment_id
        and pt.state in ('Pending', 'Deferred')
        and (pt.deferred_until is distinct from x.until or pt.reason is distinct from x.reason)
      returning pt.tenant_id, pt.deployment_id`.execute(trx);
    const fresh = new Set(changed.rows.map(targetKey));
    await appendEvents(
      trx,
      held
        .filter((h) => fresh.has(targetKey(h.t)))
        .map(({ t, until, reason }) =>
          eventOf(
            p,
            input,
            'promotion.tenant_deferred',
            {
              tenantId: t.tenant_id,
              deploymentId: t.deployment_id,
              wave: t.wave,
              reason,
              until: new Date(until).toISOString(),
            },
            t.tenant_id,
          ),
        ),
    );
  };

  const setWave = (p: PromotionRow, wave: number, field: 'startedAt' | 'finishedAt') =>
    asPlatform(db, async (trx) => {
      const r = await sql`update promotions
        set progress = jsonb_set(jsonb_set(progress, '{waves}', coalesce(progress->'waves', '{}')),
                                 ${`{waves,${wave}}`}::text[],
                                 coalesce(progress->'waves'->${String(wave)}, '{}') || jsonb_build_object(${field}::text, ${nowIso()}::text)),
            updated_at = now()
        where id = ${p.id} and not coalesce(progress->'waves'->${String(wave)} ? ${field}, false)`.execute(
        trx,
      );
      return Number(r.numAffectedRows ?? 0) > 0;
    });

  const waitFor = (until: number, reason: string): never => {
    throw new StepDeferred(Math.min(Math.max(until - clock.now(), 0), deps.recheckMs), reason);
  };

  /**
   * How many more tenants may be updated before their verification is seen without changing which
   * tenants the budget lets through: the failures still allowed before the budget is spent. A
   * batch never holds more, so the wave stops after exactly the tenants a one-by-one roll-out
   * would have updated.
   */
  const headroom = (budget: StageSpec['budget'], failed: number, total: number) => {
    for (let k = 1; k < BATCH_SIZE; k++) if (budgetSpent(budget, failed + k, total)) return k;
    return BATCH_SIZE;
  };

  const rollOut: StepDefinition<PromotionInput> = {
    name: 'roll-out',
    timeoutMs: 6 * 3600_000,
    async run(ctx: StepContext<PromotionInput>) {
      const input = ctx.input;
      let p = await promotionOf(input.promotionId);
      const stage = p.stage_spec;
      const all = await asPlatform(db, (trx) => targetsOf(trx, p.id));
      const live = all.filter((t) => t.state !== 'Skipped');
      const total = live.length;
      let failed = live.filter((t) => t.state === 'RolledBack').length;
      const waves = [...new Set(all.map((t) => t.wave))].sort((a, b) => a - b);
      const verifyOpts = {
        timeoutMs: (stage.verification?.timeoutSeconds ?? DEFAULT_VERIFY_TIMEOUT_S) * 1000,
        maxErrorRate: stage.verification?.maxErrorRate ?? 0.05,
      };
      const soakMs = p.mode === 'rollback' ? 0 : (stage.soakSeconds ?? 0) * 1000;
      for (const [i, wave] of waves.entries()) {
        if (await setWave(p, wave, 'startedAt'))
          await asPlatform(db, (trx) => event(trx, p, input, 'promotion.wave_started', { wave }));
        // Open targets in order: Updated ones left by an earlier run first go through verification.
        const open = all.filter(
          (x) =>
            x.wave === wave &&
            (x.state === 'Updated' ||
              x.state === 'Pending' ||
              (x.state === 'Deferred' && !(x.deferred_until && x.deferred_until.getTime() > clock.now()))),
        );
        while (open.length > 0) {
          if (ctx.signal.aborted) throw new Error('the roll-out step ran out of time; it resumes');
          const batch = open.splice(0, headroom(stage.budget, failed, total));
          const due = batch.filter((t) => t.state === 'Pending' || t.state === 'Deferred');
          const done = due.length > 0 ? await updateBatch(p, input, due) : { updated: [], deferred: [] };
          const now = new Date();
          for (const t of done.updated) {
            t.state = 'Updated';
            t.updated_at = now;
          }
          for (const { t, until } of done.deferred) {
            t.state = 'Deferred';
            t.deferred_until = new Date(until);
          }
          const toVerify = batch.filter((t) => t.state === 'Updated');
          if (toVerify.length === 0) continue;
          const verdicts = await verify(
            toVerify.map((t) => ({
              tenantId: t.tenant_id,
              deploymentId: t.deployment_id,
              version: p.version,
              since: new Date(t.updated_at.getTime() - 1000),
            })),
            verifyOpts,
            ctx.signal,
          );
          const settled = toVerify.map((t, j) => ({
            t,
            verdict: verdicts[j] ?? { healthy: false, reason: 'no verdict' },
          }));
          await settleBatch(p, input, settled);
          for (const { t, verdict } of settled) {
            t.state = verdict.healthy ? 'Verified' : 'RolledBack';
            if (!verdict.healthy) failed++;
          }
          if (budgetSpent(stage.budget, failed, total)) {
            await asPlatform(db, (trx) =>
              sql`update promotion_targets set state = 'Halted',
                  reason = ${`failure budget spent: ${failed} of ${total} failed verification`}, updated_at = now()
                where promotion_id = ${p.id} and state in ('Pending', 'Deferred')`.execute(trx),
            );
            throw new ProviderError(
              `failure budget spent in wave ${wave}: ${failed} of ${total} tenants failed verification`,
              'BudgetSpent',
              false,
            );
          }
        }
        // The wave is done but for its deferred tenants, which do not hold the next wave back.
        await setWave(p, wave, 'finishedAt');
        const next = waves[i + 1];
        if (next !== undefined && soakMs > 0) {
          p = await promotionOf(p.id);
          const finished = Date.parse(p.progress.waves?.[String(wave)]?.finishedAt ?? nowIso());
          if (clock.now() < finished + soakMs)
            waitFor(
              finished + soakMs,
              `soaking wave ${wave} until ${new Date(finished + soakMs).toISOString()}`,
            );
        }
      }
      const deferred = all.filter((t) => t.state === 'Deferred');
      if (deferred.length > 0) {
        const until = Math.min(...deferred.map((t) => t.deferred_until?.getTime() ?? clock.now()));
        waitFor(until, `${deferred.length} tenant(s) deferred until ${new Date(until).toISOString()}`);
      }
      const count = (s: string) => all.filter((t) => t.state === s).length;
      return {
        verified: count('Verified'),
        rolledBack: count('RolledBack'),
        skipped: count('Skipped'),
        waves: waves.length,
      };
    },
    // A cancelled promotion puts every tenant it updated back on the version it ran before.
    async undo(ctx) {
      const p = await promotionOf(ctx.input.promotionId);
      const done = (await asPlatform(db, (trx) => targetsOf(trx, p.id))).filter(
        (t) => t.state === 'Verified' || t.state === 'Updated',
      );
      for (let i = 0; i < done.length; i += BATCH_SIZE)
        await settleBatch(
          p,
          ctx.input,
          done.slice(i, i + BATCH_SIZE).map((t) => ({
            t,
            verdict: { healthy: false, reason: 'promotion cancelled' },
          })),
          ['Updated', 'Verified'],
        );
    },
  };

  const evidence: StepDefinition<PromotionInput> = {
    name: 'record-evidence',
    run: async (ctx) => ({ outcome: 'succeeded', at: nowIso(), rollOut: ctx.outputs['roll-out'] ?? null }),
    async checkpoint(trx, ctx, output) {
      await recordEvidence(trx, ctx.input.promotionId, 'success', (output as { outcome: string }).outcome);
    },
  };

  return {
    type: PROMOTION_TYPE,
    steps: [gates, plan, rollOut, evidence],
    async succeeded(trx, ctx) {
      const p = await loadPromotion(trx, ctx.input.promotionId);
      if (!p) return;
      await sql`update promotions set state = 'Succeeded', finished_at = now(), updated_at = now(), error = null
        where id = ${p.id}`.execute(trx);
      await event(trx, p, ctx.input, 'promotion.succeeded', {});
    },
    async compensated(trx, ctx, reason) {
      const p = await loadPromotion(trx, ctx.input.promotionId);
      if (!p) return;
      const cancelled = reason.startsWith('cancelled');
      await sql`update promotions set state = ${cancelled ? 'Cancelled' : 'Failed'}, error = ${reason},
          finished_at = now(), updated_at = now()
        where id = ${p.id}`.execute(trx);
      await recordEvidence(trx, p.id, 'failure', reason);
      await event(trx, p, ctx.input, 'promotion.failed', { reason });
    },
  };
}

/**
 * The promotion's evidence record in the audit log (what an auditor asks for): the release, its
 * artifact digests and SHA lineage, the pipeline run, gates and their results, requester, author,
 * approvers, waves, and every tenant that was not simply updated and verified (per-tenant updates,
 * verifications and rollbacks have audit records of their own, under the same correlation id).
 */
export async function recordEvidence(
  trx: Trx,
  promotionId: string,
  outcome: 'success' | 'failure',
  detail: string,
): Promise<void> {
  const p = await loadPromotion(trx, promotionId);
  if (!p) return;
  const rel = (
    await sql<{ slug: string; spec: Record<string, unknown> & { provenance: Record<string, unknown> } }>`
      select slug, spec from releases where id = ${p.release_id}`.execute(trx)
  ).rows[0];
  const targets = await targetsOf(trx, p.id);
  const counts: Record<string, number> = {};
  for (const t of targets) counts[t.state] = (counts[t.state] ?? 0) + 1;
  const prov = rel?.spec.provenance ?? {};
  const evidence = {
    promotionId: p.id,
    release: { id: p.release_id, slug: rel?.slug ?? null, version: p.version },
    stage: p.stage,
    mode: p.mode,
    pipelineRunId: prov.pipelineRunId ?? null,
    builder: prov.builder ?? null,
    repository: prov.repository ?? null,
    shaLineage: [prov.commit, ...((prov.lineage as string[] | undefined) ?? [])].filter(Boolean),
    artifacts: rel?.spec.artifacts ?? [],
    configuration: rel?.spec.configuration ?? [],
    requestedBy: p.requested_by,
    author: p.author,
    approvals: p.approvals,
    gates: p.gates,
    waves: p.progress.waves ?? {},
    targets: counts,
    exceptions: targets
      .filter((t) => t.state !== 'Verified')
      .map((t) => ({
        tenant: t.tenant_slug,
        deployment: t.deployment_slug,
        wave: t.wave,
        state: t.state,
        reason: t.reason,
      })),
    outcome: detail,
  };
  await appendAudit(
    trx,
    auditEntryOf(workflowActor(p), {
      tenantId: null,
      action: 'promotion.evidence',
      target: { kind: 'Promotion', id: p.id, slug: `${rel?.slug ?? p.version}/${p.stage}` },
      before: null,
      after: evidence,
      outcome,
      decision: null,
    }),
  );
}

/** `registry` with the promotion workflow type added (the engine runs it; the API describes it). */
export function withPromotions(registry: WorkflowRegistry, deps: PromotionDeps): WorkflowRegistry {
  return new Map([...registry, [PROMOTION_TYPE, promotionWorkflow(deps) as WorkflowDefinition<never>]]);
}
