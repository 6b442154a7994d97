import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, inScope, type Trx } from '../db/database.js';
import type { Clock } from '../domain/clock.js';
import { isUuid } from '../domain/identifiers.js';
import { compareVersions } from '../domain/release-compatibility.js';
import {
  ConflictError,
  ForbiddenError,
  NotFoundError,
  TenantryError,
  ValidationError,
} from '../errors/errors.js';
import { appendEvent } from '../events/append-event.js';
import type { StageSpec } from '../registry/kinds/pipeline.js';
import { startWorkflow } from '../workflows/start-workflow.js';
import { workflowIdOf } from '../workflows/workflow.js';
import {
  loadPromotion,
  PROMOTION_TYPE,
  type PromotionInput,
  type PromotionRow,
  type TargetRow,
  targetsOf,
} from './promotion-workflow.js';

export interface Promotion {
  id: string;
  system: string;
  version: string;
  stage: string;
  pipeline: string;
  mode: 'promote' | 'rollback';
  state: string;
  requestedBy: { principal: string; kind: string };
  author: string | null;
  requiredApprovals: number;
  approvals: { principal: string; kind: string; at: string }[];
  gates: unknown;
  waves: unknown;
  error: string | null;
  createdAt: string;
  finishedAt: string | null;
}

export interface PromotionDetail extends Promotion {
  targets: {
    tenant: string;
    deployment: string;
    wave: number;
    state: string;
    reason: string | null;
    fromVersion: string | null;
    toVersion: string;
    deferredUntil: string | null;
  }[];
}

type Row = PromotionRow & { system_slug: string; pipeline_slug: string };

const toPromotion = (r: Row): Promotion => ({
  id: r.id,
  system: r.system_slug,
  version: r.version,
  stage: r.stage,
  pipeline: r.pipeline_slug,
  mode: r.mode,
  state: r.state,
  requestedBy: r.requested_by,
  author: r.author,
  requiredApprovals: r.required_approvals,
  approvals: r.approvals,
  gates: r.gates,
  waves: r.progress.waves ?? {},
  error: r.error,
  createdAt: r.created_at.toISOString(),
  finishedAt: r.finished_at?.toISOString() ?? null,
});

const toTarget = (t: TargetRow): PromotionDetail['targets'][number] => ({
  tenant: t.tenant_slug,
  deployment: t.deployment_slug,
  wave: t.wave,
  state: t.state,
  reason: t.reason,
  fromVersion: t.from_version,
  toVersion: t.to_version,
  deferredUntil: t.deferred_until?.toISOString() ?? null,
});

function platformOnly(ctx: RequestContext, what: string): void {
  if (ctx.scope.kind !== 'platform')
    throw new ForbiddenError('promotion.platform_only', `Only the platform ${what}.`);
}

const OPEN = ['AwaitingApproval', 'Running'];

/**
 * Promotions as the API asks for them (issue 21): request one (`promote SYSTEM@VERSION --to
 * STAGE`), approve it (four eyes: the approver is neither the release's author nor the requester,
 * as the verified identities say), roll a stage back, read them and their evidence; pins and
 * maintenance windows of tenants; runtime health reports; which release each deployment runs.
 * A promotion's workflow starts when its approvals are complete (at once on an unprotected stage).
 */
export class PromotionsService {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    /** Called after a workflow was started (the engine of this process looks at once). */
    private readonly started: () => void = () => {},
  ) {}

  /** Requests a promotion of release `system@version` to `stage`. */
  async request(
    ctx: RequestContext,
    q: { system: string; version: string; stage: string; mode?: 'promote' | 'rollback' },
  ): Promise<Promotion> {
    platformOnly(ctx, 'promotes releases');
    const id = await asPlatform(this.db, async (trx) => {
      const system = await this.systemOf(trx, q.system);
      const rel = (
        await sql<{ id: string; slug: string }>`select id, slug from releases
          where system_id = ${system.id} and version = ${q.version} and deleted_at is null`.execute(trx)
      ).rows[0];
      if (!rel)
        throw new NotFoundError('release.not_found', `No release ${q.version} of system "${q.system}".`, {
          system: q.system,
          version: q.version,
        });
      const pipe = await this.pipelineOf(trx, q.system);
      const stage = pipe.spec.stages.find((s) => s.name === q.stage);
      if (!stage)
        throw ValidationError.field(
          '/stage',
          'pipeline.stage_unknown',
          `pipeline "${pipe.slug}" has no stage "${q.stage}"; stages: ${pipe.spec.stages.map((s) => s.name).join(', ')}`,
        );
      await sql`select id from systems where id = ${system.id} for update`.execute(trx);
      const open = (
        await sql<{ id: string; state: string }>`select id, state from promotions
          where system_id = ${system.id} and state = any(${OPEN}) limit 1`.execute(trx)
      ).rows[0];
      if (open)
        throw new ConflictError(
          'promotion.in_progress',
          `System "${q.system}" has a promotion in progress (${open.id}, ${open.state}); wait for it or cancel it.`,
          { details: { promotionId: open.id, state: open.state } },
        );
      const mode = q.mode ?? 'promote';
      const required = mode === 'rollback' ? 0 : (stage.approvals ?? (stage.protected ? 1 : 0));
      const author = (
        await sql<{ principal: string }>`select actor->>'principal' as principal from object_versions
          where object_kind = 'Release' and object_id = ${rel.id} order by generation limit 1`.execute(trx)
      ).rows[0]?.principal;
      const id = workflowIdOf('promotion', rel.id, q.stage, ctx.requestId);
      await sql`insert into promotions (id, system_id, release_id, version, pipeline_id, stage, stage_spec, mode, state,
          requested_by, author, required_approvals, request_id, correlation_id)
        values (${id}, ${system.id}, ${rel.id}, ${q.version}, ${pipe.id}, ${q.stage}, ${JSON.stringify(stage)}, ${mode},
          'AwaitingApproval', ${JSON.stringify(ctx.actor)}, ${author ?? null}, ${required}, ${ctx.requestId},
          ${ctx.correlationId})`.execute(trx);
      const p = (await loadPromotion(trx, id))!;
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: null,
          action: mode === 'rollback' ? 'promotion.rollback' : 'promotion.request',
          target: { kind: 'Promotion', id, slug: `${rel.slug}/${q.stage}` },
          before: null,
          after: {
            system: q.system,
            version: q.version,
            stage: q.stage,
            mode,
            requiredApprovals: required,
            author,
          },
          outcome: 'success',
          decision: null,
        }),
      );
      await this.event(trx, p, q.system, 'promotion.requested', { actor: ctx.actor });
      if (required === 0) await this.start(trx, ctx, p, q.system);
      return id;
    });
    this.started();
    return this.get(ctx, id);
  }

  /** Rolls `stage` back: to `to`, or to the version the stage ran before its last promotion. */
  async rollback(ctx: RequestContext, q: { system: string; stage: string; to?: string }): Promise<Promotion> {
    platformOnly(ctx, 'rolls releases back');
    const version =
      q.to ??
      (await asPlatform(this.db, async (trx) => {
        const system = await this.systemOf(trx, q.system);
        const done = (
          await sql<{ version: string }>`select version from promotions
            where system_id = ${system.id} and stage = ${q.stage} and state = 'Succeeded'
            order by finished_at desc`.execute(trx)
        ).rows.map((r) => r.version);
        const current = done[0];
        const previous = done.find((v) => v !== current);
        if (!current || !previous)
          throw new ConflictError(
            'promotion.no_previous',
            `Stage "${q.stage}" of "${q.system}" has no earlier version to roll back to; name one with --to.`,
          );
        return previous;
      }));
    return this.request(ctx, { system: q.system, version, stage: q.stage, mode: 'rollback' });
  }

  /** Approves a promotion awaiting approval; the last approval needed starts it. */
  async approve(ctx: RequestContext, id: string, comment?: string): Promise<Promotion> {
    platformOnly(ctx, 'approves promotions');
    await asPlatform(this.db, async (trx) => {
      const p = await this.row(trx, id, true);
      const me = ctx.actor.principal;
      const refuse = (code: string, message: string) => {
        throw new ForbiddenError(code, message);
      };
      if (p.state !== 'AwaitingApproval')
        throw new ConflictError('promotion.not_awaiting_approval', `The promotion is ${p.state}.`, {
          details: { state: p.state },
        });
      if (me === p.requested_by.principal)
        refuse('promotion.four_eyes', 'Four eyes: the requester of a promotion cannot approve it.');
      if (p.author !== null && me === p.author)
        refuse('promotion.four_eyes', "Four eyes: the release's author cannot approve its promotion.");
      if (p.approvals.some((a) => a.principal === me))
        refuse('promotion.already_approved', 'You have approved this promotion already.');
      const approval = {
        principal: me,
        kind: ctx.actor.kind,
        sessionId: ctx.sessionId,
        at: new Date(this.clock.now()).toISOString(),
        ...(comment ? { comment } : {}),
      };
      await sql`update promotions set approvals = approvals || ${JSON.stringify([approval])}::jsonb, updated_at = now()
        where id = ${p.id}`.execute(trx);
      const system = await this.slugOfSystem(trx, p.system_id);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: null,
          action: 'promotion.approve',
          target: { kind: 'Promotion', id: p.id, slug: `${system}@${p.version}/${p.stage}` },
          before: { approvals: p.approvals.length },
          after: { approvals: p.approvals.length + 1, required: p.required_approvals, approval },
          outcome: 'success',
          decision: null,
        }),
      );
      await this.event(trx, p, system, 'promotion.approved', { actor: ctx.actor });
      if (p.approvals.length + 1 >= p.required_approvals) await this.start(trx, ctx, p, system);
    });
    this.started();
    return this.get(ctx, id);
  }

  /**
   * Cancels a promotion: one awaiting approval ends Cancelled at once; a running one's workflow is
   * cancelled (it stops at its next checkpoint and puts the tenants it updated back).
   */
  async cancel(ctx: RequestContext, id: string): Promise<Promotion> {
    platformOnly(ctx, 'cancels promotions');
    await asPlatform(this.db, async (trx) => {
      const p = await this.row(trx, id, true);
      if (!OPEN.includes(p.state))
        throw new ConflictError('promotion.not_cancellable', `A ${p.state} promotion cannot be cancelled.`, {
          details: { state: p.state },
        });
      if (p.state === 'AwaitingApproval')
        await sql`update promotions set state = 'Cancelled', error = ${`cancelled by ${ctx.actor.principal}`},
            finished_at = now(), updated_at = now() where id = ${p.id}`.execute(trx);
      else
        await sql`update workflows set cancel_requested = ${JSON.stringify(ctx.actor)},
            state = case when state in ('Pending', 'Waiting') then 'Compensating' else state end,
            run_after = now(), updated_at = now()
          where id = ${p.id} and state in ('Pending', 'Running', 'Waiting')`.execute(trx);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: null,
          action: 'promotion.cancel',
          target: { kind: 'Promotion', id: p.id, slug: `${p.system_slug}@${p.version}/${p.stage}` },
          before: { state: p.state },
          after: { state: p.state === 'AwaitingApproval' ? 'Cancelled' : 'Cancelling' },
          outcome: 'success',
          decision: null,
        }),
      );
    });
    return this.get(ctx, id);
  }

  /**
   * Newest first, a page of `limit` with a keyset cursor: the id of the page's last promotion, whose
   * (created_at, id) the next page continues below (promotions_recent, migration 0047).
   */
  async list(
    ctx: RequestContext,
    q: { system?: string; state?: string; limit: number; cursor?: string | undefined },
  ): Promise<{ items: Promotion[]; nextCursor: string | null }> {
    if (q.cursor !== undefined && !isUuid(q.cursor))
      throw ValidationError.field(
        '/cursor',
        'cursor.invalid',
        'The cursor is the id of a promotion of a page.',
      );
    // Promotions are platform records: a tenant's principals see none (row-level security).
    return inScope(this.db, ctx.scope, async (trx) => {
      const systemId = q.system ? (await this.systemOf(trx, q.system)).id : undefined;
      const r = await sql<Row>`
        select p.*, s.slug as system_slug, pl.slug as pipeline_slug from (
          select * from promotions p
          where true ${systemId ? sql`and p.system_id = ${systemId}` : sql``}
            ${q.state ? sql`and p.state = ${q.state}` : sql``}
            ${
              q.cursor
                ? sql`and (p.created_at, p.id) < (select c.created_at, c.id from promotions c where c.id = ${q.cursor.toLowerCase()})`
                : sql``
            }
          order by p.created_at desc, p.id desc limit ${q.limit + 1}
        ) p
        join systems s on s.id = p.system_id join pipelines pl on pl.id = p.pipeline_id
        order by p.created_at desc, p.id desc`.execute(trx);
      const items = r.rows.slice(0, q.limit).map(toPromotion);
      return { items, nextCursor: r.rows.length > q.limit ? (items.at(-1)?.id ?? null) : null };
    });
  }

  async get(ctx: RequestContext, id: string): Promise<PromotionDetail> {
    return inScope(this.db, ctx.scope, async (trx) => {
      const p = await this.row(trx, id);
      return { ...toPromotion(p), targets: (await targetsOf(trx, p.id)).map(toTarget) };
    });
  }

  /** The audit records of every promotion of a release: requests, approvals, tenant steps, evidence. */
  async evidence(ctx: RequestContext, releaseRef: string): Promise<{ release: string; records: unknown[] }> {
    platformOnly(ctx, 'reads promotion evidence');
    return asPlatform(this.db, async (trx) => {
      const rel = (
        await sql<{ id: string; slug: string }>`select id, slug from releases
          where ${isUuid(releaseRef) ? sql`id = ${releaseRef.toLowerCase()}` : sql`slug = ${releaseRef}`}
          order by deleted_at nulls first limit 1`.execute(trx)
      ).rows[0];
      if (!rel) throw new NotFoundError('release.not_found', `No release "${releaseRef}".`);
      const r = await sql<Record<string, unknown>>`
        select a.id, a.time, a.tenant_id, a.actor_principal, a.actor_kind, a.action, a.target_kind, a.target_id,
               a.target_slug, a.before, a.after, a.outcome, a.correlation_id
        from audit_records a
        where a.action like 'promotion.%'
          and a.id in (
            -- Two index lookups (target, correlation): an OR of the two scans the whole log.
            select x.id from audit_records x join promotions p on x.target_id = p.id
            where p.release_id = ${rel.id}
            union
            select x.id from audit_records x join promotions p on x.correlation_id = p.correlation_id
            where p.release_id = ${rel.id})
        order by a.time, a.id`.execute(trx);
      return { release: rel.slug, records: r.rows };
    });
  }

  // ---- Pins, maintenance windows, health, running versions ----------------------------------

  async pin(
    ctx: RequestContext,
    tenantRef: string,
    p: { system: string; version: string; reason: string; until: string },
  ): Promise<unknown> {
    if (Date.parse(p.until) <= this.clock.now())
      throw ValidationError.field('/until', 'pin.expired', 'until must be in the future');
    return inScope(this.db, ctx.scope, async (trx) => {
      const tenant = await this.tenantOf(trx, tenantRef);
      const system = await this.systemOf(trx, p.system);
      const known = await sql`select 1 from releases where system_id = ${system.id} and version = ${p.version}
        and deleted_at is null`.execute(trx);
      if (known.rows.length === 0)
        throw ValidationError.field(
          '/version',
          'release.not_found',
          `no release ${p.version} of "${p.system}"`,
        );
      await sql`insert into release_pins (tenant_id, system_id, version, reason, until, created_by)
        values (${tenant.id}, ${system.id}, ${p.version}, ${p.reason}, ${p.until}, ${JSON.stringify(ctx.actor)})
        on conflict (tenant_id, system_id) do update set version = excluded.version, reason = excluded.reason,
          until = excluded.until, created_by = excluded.created_by, created_at = now()`.execute(trx);
      const pin = { tenant: tenant.slug, ...p };
      await this.audit(trx, ctx, tenant, 'pin.set', null, pin);
      return pin;
    });
  }

  async unpin(ctx: RequestContext, tenantRef: string, systemRef: string): Promise<void> {
    await inScope(this.db, ctx.scope, async (trx) => {
      const tenant = await this.tenantOf(trx, tenantRef);
      const system = await this.systemOf(trx, systemRef);
      const r =
        await sql`delete from release_pins where tenant_id = ${tenant.id} and system_id = ${system.id}`.execute(
          trx,
        );
      if (Number(r.numAffectedRows ?? 0) === 0)
        throw new NotFoundError('pin.not_found', `Tenant "${tenant.slug}" is not pinned for "${systemRef}".`);
      await this.audit(trx, ctx, tenant, 'pin.remove', { system: systemRef }, null);
    });
  }

  async putWindow(
    ctx: RequestContext,
    tenantRef: string,
    name: string,
    w: { startsAt: string; endsAt: string; reason: string },
  ): Promise<unknown> {
    if (Date.parse(w.endsAt) <= Date.parse(w.startsAt))
      throw ValidationError.field('/endsAt', 'window.empty', 'endsAt must be after startsAt');
    return inScope(this.db, ctx.scope, async (trx) => {
      const tenant = await this.tenantOf(trx, tenantRef);
      await sql`insert into maintenance_windows (tenant_id, name, starts_at, ends_at, reason, created_by)
        values (${tenant.id}, ${name}, ${w.startsAt}, ${w.endsAt}, ${w.reason}, ${JSON.stringify(ctx.actor)})
        on conflict (tenant_id, name) do update set starts_at = excluded.starts_at, ends_at = excluded.ends_at,
          reason = excluded.reason, created_by = excluded.created_by`.execute(trx);
      const window = { tenant: tenant.slug, name, ...w };
      await this.audit(trx, ctx, tenant, 'maintenance_window.set', null, window);
      return window;
    });
  }

  async deleteWindow(ctx: RequestContext, tenantRef: string, name: string): Promise<void> {
    await inScope(this.db, ctx.scope, async (trx) => {
      const tenant = await this.tenantOf(trx, tenantRef);
      const r =
        await sql`delete from maintenance_windows where tenant_id = ${tenant.id} and name = ${name}`.execute(
          trx,
        );
      if (Number(r.numAffectedRows ?? 0) === 0)
        throw new NotFoundError('window.not_found', `Tenant "${tenant.slug}" has no window "${name}".`);
      await this.audit(trx, ctx, tenant, 'maintenance_window.remove', { name }, null);
    });
  }

  /** A tenant's deployments with the release each runs, its pins and maintenance windows. */
  async tenantReleases(ctx: RequestContext, tenantRef: string): Promise<unknown> {
    return inScope(this.db, ctx.scope, async (trx) => {
      const tenant = await this.tenantOf(trx, tenantRef);
      const deployments = await sql<Record<string, unknown>>`
        select d.slug as deployment, s.slug as system, dr.version, dr.previous_version as "previousVersion",
               dr.promotion_id as "promotionId", dr.updated_at as "updatedAt"
        from deployments d join systems s on s.id = d.system_id
        left join deployment_releases dr on dr.tenant_id = d.tenant_id and dr.deployment_id = d.id
        where d.tenant_id = ${tenant.id} and d.deleted_at is null order by d.slug`.execute(trx);
      const pins = await sql<Record<string, unknown>>`
        select s.slug as system, p.version, p.reason, p.until from release_pins p join systems s on s.id = p.system_id
        where p.tenant_id = ${tenant.id} order by s.slug`.execute(trx);
      const windows = await sql<Record<string, unknown>>`
        select name, starts_at as "startsAt", ends_at as "endsAt", reason from maintenance_windows
        where tenant_id = ${tenant.id} order by starts_at`.execute(trx);
      const iso = (r: Record<string, unknown>) =>
        Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]));
      return {
        tenant: tenant.slug,
        deployments: deployments.rows.map(iso),
        pins: pins.rows.map(iso),
        maintenanceWindows: windows.rows.map(iso),
      };
    });
  }

  /** The runtime's health report for a deployment (what verification reads). */
  async reportHealth(
    ctx: RequestContext,
    deploymentRef: string,
    h: { version: string; readyReplicas: number; desiredReplicas: number; errorRate: number },
  ): Promise<void> {
    await inScope(this.db, ctx.scope, async (trx) => {
      const d = (
        await sql<{ id: string; tenant_id: string }>`select id, tenant_id from deployments
          where ${isUuid(deploymentRef) ? sql`id = ${deploymentRef.toLowerCase()}` : sql`slug = ${deploymentRef}`}
          and deleted_at is null`.execute(trx)
      ).rows[0];
      if (!d) throw new NotFoundError('deployment.not_found', `No deployment "${deploymentRef}".`);
      await sql`insert into deployment_health (tenant_id, deployment_id, version, ready_replicas, desired_replicas, error_rate)
        values (${d.tenant_id}, ${d.id}, ${h.version}, ${h.readyReplicas}, ${h.desiredReplicas}, ${h.errorRate})
        on conflict (tenant_id, deployment_id) do update set version = excluded.version,
          ready_replicas = excluded.ready_replicas, desired_replicas = excluded.desired_replicas,
          error_rate = excluded.error_rate, reported_at = now()`.execute(trx);
    });
  }

  // ---- Internals ------------------------------------------------------------------------------

  /** Starts the promotion's workflow (refused under a platform freeze that does not allow it). */
  private async start(trx: Trx, ctx: RequestContext, p: PromotionRow, system: string): Promise<void> {
    const frozen = (
      await sql<{ name: string; reason: string }>`select name, reason from workflow_freezes
        where scope = 'platform' and lifted_at is null and starts_at <= now()
          and (ends_at is null or ends_at > now()) and not (${PROMOTION_TYPE} = any (allow))
        order by created_at limit 1`.execute(trx)
    ).rows[0];
    if (frozen)
      throw new TenantryError(
        'workflow.frozen',
        423,
        `Freeze "${frozen.name}" (platform) holds new promotions: ${frozen.reason}`,
        { details: { freeze: frozen.name, scope: 'platform', reason: frozen.reason } },
      );
    const input: PromotionInput = {
      promotionId: p.id,
      systemId: p.system_id,
      system,
      version: p.version,
      releaseId: p.release_id,
      stage: p.stage,
      mode: p.mode,
    };
    await startWorkflow(trx, {
      id: p.id,
      tenantId: p.system_id,
      type: PROMOTION_TYPE,
      input,
      actor: ctx.actor,
      requestId: ctx.requestId,
      correlationId: p.correlation_id,
    });
    await sql`update promotions set state = 'Running', updated_at = now() where id = ${p.id}`.execute(trx);
  }

  private event(
    trx: Trx,
    p: PromotionRow,
    system: string,
    name: 'promotion.requested' | 'promotion.approved',
    extra: Record<string, unknown>,
  ) {
    return appendEvent(trx, {
      tenantId: null,
      name,
      subject: `promotions/${p.id}`,
      data: { promotionId: p.id, system, version: p.version, stage: p.stage, mode: p.mode, ...extra },
      correlationId: p.correlation_id,
    });
  }

  private async audit(
    trx: Trx,
    ctx: RequestContext,
    tenant: { id: string; slug: string },
    action: string,
    before: unknown,
    after: unknown,
  ) {
    await appendAudit(
      trx,
      auditEntryOf(ctx, {
        tenantId: tenant.id,
        action,
        target: { kind: 'Tenant', id: tenant.id, slug: tenant.slug },
        before,
        after,
        outcome: 'success',
        decision: null,
      }),
    );
  }

  private async row(trx: Trx, id: string, forUpdate = false): Promise<Row> {
    const r = isUuid(id)
      ? await sql<Row>`select p.*, s.slug as system_slug, pl.slug as pipeline_slug from promotions p
          join systems s on s.id = p.system_id join pipelines pl on pl.id = p.pipeline_id
          where p.id = ${id.toLowerCase()} ${forUpdate ? sql`for update of p` : sql``}`.execute(trx)
      : { rows: [] };
    const p = r.rows[0];
    if (!p) throw new NotFoundError('promotion.not_found', `No promotion ${id}.`);
    return p;
  }

  private async systemOf(trx: Trx, ref: string): Promise<{ id: string; slug: string }> {
    const r = await sql<{ id: string; slug: string }>`select id, slug from systems
      where ${isUuid(ref) ? sql`id = ${ref.toLowerCase()}` : sql`slug = ${ref}`} and deleted_at is null`.execute(
      trx,
    );
    const s = r.rows[0];
    if (!s) throw new NotFoundError('system.not_found', `No system "${ref}".`);
    return s;
  }

  private async slugOfSystem(trx: Trx, id: string): Promise<string> {
    return (
      (await sql<{ slug: string }>`select slug from systems where id = ${id}`.execute(trx)).rows[0]?.slug ??
      id
    );
  }

  private async tenantOf(trx: Trx, ref: string): Promise<{ id: string; slug: string }> {
    const r = await sql<{ id: string; slug: string }>`select id, slug from tenants
      where ${isUuid(ref) ? sql`id = ${ref.toLowerCase()}` : sql`slug = ${ref}`} and deleted_at is null`.execute(
      trx,
    );
    const t = r.rows[0];
    if (!t) throw new NotFoundError('tenant.not_found', `No tenant "${ref}".`);
    return t;
  }

  /** The pipeline that names the system, else the one named "default". */
  private async pipelineOf(
    trx: Trx,
    system: string,
  ): Promise<{ id: string; slug: string; spec: { stages: StageSpec[] } }> {
    const r = await sql<{ id: string; slug: string; spec: { stages: StageSpec[] } }>`
      select id, slug, spec from pipelines
      where deleted_at is null and (spec->'systems' ? ${system} or slug = 'default')
      order by (spec->'systems' ? ${system}) desc, slug limit 1`.execute(trx);
    const p = r.rows[0];
    if (!p)
      throw new NotFoundError(
        'pipeline.not_found',
        `No pipeline promotes "${system}" (name it in a pipeline's systems, or create the pipeline "default").`,
      );
    return p;
  }
}

/** Newest first by semantic version (for listing a system's releases). */
export const byVersionDesc = (a: { version: string }, b: { version: string }): number =>
  compareVersions(b.version, a.version);
