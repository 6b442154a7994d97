import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { agentCellOfTenant, runOnAgent } from '../agent/agent-commands.js';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import { type RequestContext, systemContext } from '../context/request-context.js';
import { type ProviderSet, slotFor } from '../controller/providers.js';
import { desiredResource } from '../controller/reconcilers.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { type Clock, systemClock } from '../domain/clock.js';
import { isUuid } from '../domain/identifiers.js';
import { ConflictError, ForbiddenError, NotFoundError, type TenantryError } from '../errors/errors.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { ProviderError } from '../providers/provider.js';
import type { ObjectRow } from '../registry/object.repository.js';
import { startWorkflow } from './start-workflow.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from './workflow.js';
import { workflowIdOf } from './workflow.js';

/** Seed 002's data classes and their default windows (days); a plan's `spec.retention` overrides them. */
export const DEFAULT_RETENTION_DAYS = {
  retiredServices: 90,
  deploymentHistory: 365,
  configurationVersions: 365,
  driftFindings: 365,
} as const;
export type DataClass = keyof typeof DEFAULT_RETENTION_DAYS;
type Windows = Record<DataClass, number>;

export interface LegalHold {
  id: string;
  reason: string;
  placedBy: { principal: string; kind: string };
  placedAt: string;
}

/**
 * A governance exception to the retention window: requested by one principal, approved by another
 * (four eyes); an approved one lets a purge run before the window ends (never under a legal hold).
 */
export interface PurgeException {
  id: string;
  reason: string;
  requestedBy: { principal: string; kind: string };
  requestedAt: string;
  approvedBy: { principal: string; kind: string } | null;
  approvedAt: string | null;
}

export interface RetentionStanding {
  tenantId: string;
  tenantSlug: string;
  lifecycle: string;
  /** Null until the tenant is archived (or deleted). */
  retention: {
    startedAt: string;
    windows: Windows;
    /** Per data class: when its window ends. */
    ends: Record<DataClass, string>;
    /** When the provider resources and secrets may be purged (the `retiredServices` window). */
    purgeAfter: string;
    purgedAt: string | null;
  } | null;
  legalHold: LegalHold | null;
  /** The governance exception not yet used by a purge, if any. */
  exception: PurgeException | null;
}

const DAY_MS = 86_400_000;

/**
 * Starts a tenant's retention clock in the caller's transaction (archive's last step): the windows
 * of its plan, defaults for the classes the plan leaves out. A second start keeps the first.
 */
export async function startRetentionClock(trx: Trx, tenantId: string): Promise<void> {
  const r = await sql<{ retention: Partial<Record<string, number>> | null }>`
    select p.spec -> 'retention' as retention from tenants t
    left join plans p on p.slug = t.spec ->> 'plan' and p.deleted_at is null
    where t.id = ${tenantId}`.execute(trx);
  const plan = r.rows[0]?.retention ?? {};
  const windows = Object.fromEntries(
    Object.entries(DEFAULT_RETENTION_DAYS).map(([k, d]) => [k, plan[`${k}Days`] ?? d]),
  ) as Windows;
  await sql`
    insert into tenant_retention (tenant_id, windows, resources_purge_after)
    values (${tenantId}, ${JSON.stringify(windows)},
            now() + make_interval(days => ${windows.retiredServices}))
    on conflict (tenant_id) do nothing`.execute(trx);
}

/** Where a tenant stands: its retention record and the legal hold in force, if any. */
export async function standingOf(trx: Trx, tenant: ObjectRow): Promise<RetentionStanding> {
  const r = await sql<{
    started_at: Date;
    windows: Windows;
    resources_purge_after: Date;
    purged_at: Date | null;
  }>`select * from tenant_retention where tenant_id = ${tenant.id}`.execute(trx);
  const h = await sql<{ id: string; reason: string; placed_by: LegalHold['placedBy']; placed_at: Date }>`
    select id, reason, placed_by, placed_at from legal_holds
    where tenant_id = ${tenant.id} and released_at is null`.execute(trx);
  const x = await sql<{
    id: string;
    reason: string;
    requested_by: PurgeException['requestedBy'];
    requested_at: Date;
    approved_by: PurgeException['approvedBy'];
    approved_at: Date | null;
  }>`
    select id, reason, requested_by, requested_at, approved_by, approved_at from purge_exceptions
    where tenant_id = ${tenant.id} and used_at is null`.execute(trx);
  const rec = r.rows[0];
  const hold = h.rows[0];
  const ex = x.rows[0];
  return {
    tenantId: tenant.id,
    tenantSlug: tenant.slug,
    lifecycle: String(tenant.lifecycle),
    retention: rec
      ? {
          startedAt: rec.started_at.toISOString(),
          windows: rec.windows,
          ends: Object.fromEntries(
            Object.entries(rec.windows).map(([k, d]) => [
              k,
              new Date(rec.started_at.getTime() + d * DAY_MS).toISOString(),
            ]),
          ) as Record<DataClass, string>,
          purgeAfter: rec.resources_purge_after.toISOString(),
          purgedAt: rec.purged_at?.toISOString() ?? null,
        }
      : null,
    legalHold: hold
      ? { id: hold.id, reason: hold.reason, placedBy: hold.placed_by, placedAt: hold.placed_at.toISOString() }
      : null,
    exception: ex
      ? {
          id: ex.id,
          reason: ex.reason,
          requestedBy: ex.requested_by,
          requestedAt: ex.requested_at.toISOString(),
          approvedBy: ex.approved_by,
          approvedAt: ex.approved_at?.toISOString() ?? null,
        }
      : null,
  };
}

/**
 * Why a purge may not run now, or null when it may: a legal hold (423 `tenant.legal_hold`), a tenant
 * not deleted (409 `tenant.not_deleted`), a retention window still open (409
 * `tenant.retention_active`, with the moment it ends), a purge already done (409 `tenant.purged`).
 * A deleted tenant that was never archived has no retention record and no window. An approved
 * governance exception waives the window (and nothing else: a legal hold still refuses).
 */
export function purgeRefusal(s: RetentionStanding, now: Date): TenantryError | null {
  const details = { tenant: s.tenantSlug };
  if (s.legalHold)
    return new ConflictError(
      'tenant.legal_hold',
      `Tenant ${s.tenantSlug} is under legal hold (${s.legalHold.reason}); nothing of it is purged until the hold is released.`,
      { status: 423, details: { ...details, legalHold: s.legalHold } },
    );
  if (s.lifecycle !== 'Deleted')
    return new ConflictError(
      'tenant.not_deleted',
      `Tenant ${s.tenantSlug} is ${s.lifecycle}; only a deleted tenant is purged.`,
      { details },
    );
  if (s.retention?.purgedAt)
    return new ConflictError(
      'tenant.purged',
      `Tenant ${s.tenantSlug} was purged at ${s.retention.purgedAt}.`,
      {
        details: { ...details, purgedAt: s.retention.purgedAt },
      },
    );
  if (s.retention && new Date(s.retention.purgeAfter) > now && !s.exception?.approvedAt)
    return new ConflictError(
      'tenant.retention_active',
      `Tenant ${s.tenantSlug} is retained until ${s.retention.purgeAfter} (retired services: ${s.retention.windows.retiredServices} days from archival); purge after that, or with a governance exception approved by a second principal.`,
      { details: { ...details, purgeAfter: s.retention.purgeAfter, exception: s.exception } },
    );
  return null;
}

async function tenantRow(trx: Trx, ref: string, forUpdate = false): Promise<ObjectRow> {
  const r = await sql<ObjectRow>`
    select * from tenants where ${isUuid(ref) ? sql`id = ${ref.toLowerCase()}` : sql`slug = ${ref}`}
    order by deleted_at desc nulls first limit 1 ${forUpdate ? sql`for update` : sql``}`.execute(trx);
  const row = r.rows[0];
  if (!row) throw new NotFoundError('tenant.not_found', `No tenant "${ref}".`);
  return row;
}

export const PURGE_TYPE = 'tenant.purge';
export interface PurgeInput {
  tenantSlug: string;
}
/** A purge request's workflow id: the same while one is open or succeeded; a new one after a failed one. */
export const purgeWorkflowId = (tenantId: string, failedBefore: number) =>
  workflowIdOf('purge', tenantId, String(failedBefore));

function platformOnly(ctx: RequestContext): void {
  if (ctx.scope.kind !== 'platform')
    throw new ForbiddenError(
      'retention.platform_only',
      'Only the platform places or releases legal holds and purges tenants.',
    );
}

/** Legal holds and purges, audited with the actor; only the platform may. */
export class RetentionService {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock = systemClock,
  ) {}

  get(ctx: RequestContext, ref: string): Promise<RetentionStanding> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => standingOf(trx, await tenantRow(trx, ref)));
  }

  /** Places a legal hold (409 `legal_hold.exists` when one is in force). */
  placeHold(ctx: RequestContext, ref: string, reason: string): Promise<RetentionStanding> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const t = await tenantRow(trx, ref, true);
      const before = await standingOf(trx, t);
      if (before.legalHold)
        throw new ConflictError(
          'legal_hold.exists',
          `Tenant ${t.slug} is already under legal hold (${before.legalHold.reason}).`,
          { details: { legalHold: before.legalHold } },
        );
      await sql`insert into legal_holds (tenant_id, reason, placed_by)
        values (${t.id}, ${reason}, ${JSON.stringify(ctx.actor)})`.execute(trx);
      const after = await standingOf(trx, t);
      await this.audit(trx, ctx, t, 'tenant.legal_hold.place', before.legalHold, after.legalHold);
      return after;
    });
  }

  /** Releases the hold in force (404 `legal_hold.not_found` when there is none). */
  releaseHold(ctx: RequestContext, ref: string, reason: string): Promise<RetentionStanding> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const t = await tenantRow(trx, ref, true);
      const before = await standingOf(trx, t);
      if (!before.legalHold)
        throw new NotFoundError('legal_hold.not_found', `Tenant ${t.slug} is not under legal hold.`);
      await sql`update legal_holds
        set released_at = now(), released_by = ${JSON.stringify(ctx.actor)}, release_reason = ${reason}
        where id = ${before.legalHold.id}`.execute(trx);
      await this.audit(trx, ctx, t, 'tenant.legal_hold.release', before.legalHold, { releaseReason: reason });
      return standingOf(trx, t);
    });
  }

  /**
   * Requests a governance exception to the tenant's retention window (audited, with the reason); it
   * takes effect once a different principal approves it. 409 `purge_exception.exists` when one is
   * open, `tenant.purged` when there is nothing left to purge.
   */
  requestException(ctx: RequestContext, ref: string, reason: string): Promise<RetentionStanding> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const t = await tenantRow(trx, ref, true);
      const before = await standingOf(trx, t);
      if (before.retention?.purgedAt)
        throw new ConflictError(
          'tenant.purged',
          `Tenant ${t.slug} was purged at ${before.retention.purgedAt}.`,
          {
            details: { tenant: t.slug, purgedAt: before.retention.purgedAt },
          },
        );
      if (before.exception)
        throw new ConflictError(
          'purge_exception.exists',
          `Tenant ${t.slug} has a governance exception open (${before.exception.reason}).`,
          { details: { exception: before.exception } },
        );
      await sql`insert into purge_exceptions (tenant_id, reason, requested_by)
        values (${t.id}, ${reason}, ${JSON.stringify(ctx.actor)})`.execute(trx);
      const after = await standingOf(trx, t);
      await this.audit(trx, ctx, t, 'tenant.purge_exception.request', null, after.exception);
      return after;
    });
  }

  /**
   * Approves the open governance exception (audited). The approver must not be its requester (403
   * `purge_exception.self_approval`; the table's check constraint holds the same rule). 404
   * `purge_exception.not_found` when none is open, 409 `purge_exception.approved` when it is already.
   */
  approveException(ctx: RequestContext, ref: string, reason: string): Promise<RetentionStanding> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const t = await tenantRow(trx, ref, true);
      const before = await standingOf(trx, t);
      const ex = before.exception;
      if (!ex)
        throw new NotFoundError(
          'purge_exception.not_found',
          `Tenant ${t.slug} has no governance exception to approve; request one first.`,
        );
      if (ex.approvedAt)
        throw new ConflictError(
          'purge_exception.approved',
          `The exception was approved at ${ex.approvedAt}.`,
          {
            details: { exception: ex },
          },
        );
      if (ex.requestedBy.principal === ctx.actor.principal)
        throw new ForbiddenError(
          'purge_exception.self_approval',
          'A governance exception is approved by a principal other than the one who requested it.',
        );
      await sql`update purge_exceptions set approved_by = ${JSON.stringify(ctx.actor)}, approved_at = now()
        where id = ${ex.id}`.execute(trx);
      const after = await standingOf(trx, t);
      await this.audit(trx, ctx, t, 'tenant.purge_exception.approve', ex, { ...after.exception, reason });
      return after;
    });
  }

  /**
   * Starts the purge of a deleted tenant whose retention window has passed, with no legal hold in
   * force; refuses otherwise (see `purgeRefusal`) and changes nothing. The tenant row is locked, so
   * a hold placed at the same moment either comes first (and refuses) or waits for the start.
   */
  purge(ctx: RequestContext, ref: string): Promise<{ workflowId: string; standing: RetentionStanding }> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const t = await tenantRow(trx, ref, true);
      const standing = await standingOf(trx, t);
      const refusal = purgeRefusal(standing, new Date(this.clock.now()));
      if (refusal) throw refusal;
      const input: PurgeInput = { tenantSlug: t.slug };
      const failed = await sql<{ n: number }>`
        select count(*)::int as n from workflows
        where tenant_id = ${t.id} and type = ${PURGE_TYPE} and state in ('Failed', 'Cancelled')`.execute(trx);
      const started = await startWorkflow(trx, {
        id: purgeWorkflowId(t.id, failed.rows[0]?.n ?? 0),
        tenantId: t.id,
        type: PURGE_TYPE,
        input,
        actor: ctx.actor,
        requestId: ctx.requestId,
        correlationId: ctx.correlationId,
      });
      if (started.created)
        await this.audit(trx, ctx, t, 'workflow.start', null, {
          type: PURGE_TYPE,
          workflowId: started.id,
          policy: standing.retention,
          exception: standing.exception?.approvedAt ? standing.exception : null,
        });
      return { workflowId: started.id, standing };
    });
  }

  private async audit(
    trx: Trx,
    ctx: RequestContext,
    t: ObjectRow,
    action: string,
    before: unknown,
    after: unknown,
  ): Promise<void> {
    await appendAudit(
      trx,
      auditEntryOf(ctx, {
        tenantId: t.id,
        action,
        target: { kind: 'Tenant', id: t.id, slug: t.slug },
        before: (before ?? null) as never,
        after: (after ?? null) as never,
        outcome: 'success',
        decision: null,
      }),
    );
  }
}

interface PurgeDecision {
  purge: boolean;
  reason: string | null;
  policy: RetentionStanding['retention'];
  /** The approved governance exception the purge runs under (before the window ended). */
  exception?: PurgeException | null;
}

interface Removed {
  id: string;
  slug: string;
  type: string;
  physicalName: string;
  provider: string | null;
}

/**
 * The purge, as workflow steps: decide (again, inside the workflow: a hold placed since the request
 * stops it), remove every provider resource of the tenant, verify each is gone, delete the stored
 * secrets, and write the deletion record (what, when, under which policy) to the audit log in the
 * checkpoint that marks the tenant purged. `strict`: a purge workflow fails when the decision is no
 * (permanently, nothing removed); a delete workflow just keeps everything and ends.
 */
export function purgeSteps<I>(
  deps: { db: Db; providers: ProviderSet; clock: Clock },
  strict: boolean,
): StepDefinition<I>[] {
  const { db } = deps;
  const decided = (ctx: StepContext<I>) => ctx.outputs['check-retention'] as PurgeDecision;
  const resources = (tenantId: string) =>
    asPlatform(db, async (trx) => {
      const rows = await sql<ObjectRow>`
        select * from integration_resources where tenant_id = ${tenantId} order by id`.execute(trx);
      return Promise.all(rows.rows.map(async (row) => ({ row, ...(await desiredResource(trx, row)) })));
    });
  // A cell with an agent (src/agent): its data plane is the agent's, the control plane only asks.
  const agentCell = (tenantId: string) => asPlatform(db, (trx) => agentCellOfTenant(trx, tenantId));
  const items = (rs: Awaited<ReturnType<typeof resources>>) =>
    rs.map(({ desired, region }) => ({ desired, region }));
  const providerOf = (type: Parameters<typeof slotFor>[1], region: string) => {
    const slot = slotFor(deps.providers, type, region);
    return 'provider' in slot ? slot.provider : undefined;
  };
  return [
    {
      name: 'check-retention',
      async run(ctx) {
        const decision = await asPlatform(db, async (trx) => {
          const t = await tenantRow(trx, ctx.tenantId);
          const s = await standingOf(trx, t);
          const now = new Date(deps.clock.now());
          const refusal = purgeRefusal(s, now);
          const early = s.retention !== null && new Date(s.retention.purgeAfter) > now;
          return {
            purge: refusal === null,
            reason: refusal?.message ?? null,
            policy: s.retention,
            exception: refusal === null && early ? s.exception : null,
          };
        });
        if (strict && !decision.purge)
          throw new ProviderError(decision.reason ?? 'purge refused', 'PurgeRefused', false);
        return decision;
      },
    },
    {
      name: 'delete-resources',
      async run(ctx) {
        if (!decided(ctx).purge) return { kept: true, reason: decided(ctx).reason };
        // The secrets as they were before (a provider's delete may drop its own): for the record.
        const held = await asPlatform(db, (trx) =>
          sql<{ resource_id: string }>`
            select resource_id from resource_secrets where tenant_id = ${ctx.tenantId} order by resource_id`.execute(
            trx,
          ),
        );
        const secrets = held.rows.map((r) => SecretStore.ref(r.resource_id));
        const removed: Removed[] = [];
        const all = await resources(ctx.tenantId);
        const cell = await agentCell(ctx.tenantId);
        if (cell) {
          const done = await runOnAgent(db, {
            cellId: cell,
            key: `${ctx.workflowId}:delete-resources`,
            op: 'resources.delete',
            input: { tenantId: ctx.tenantId, items: items(all) },
            signal: ctx.signal,
          });
          const by = new Map(done.removed.map((x) => [x.id, x.provider]));
          for (const { row, desired } of all)
            removed.push({
              id: desired.id,
              slug: row.slug,
              type: desired.type,
              physicalName: desired.physicalName,
              provider: by.get(desired.id) ?? null,
            });
          return { removed, secrets: [...new Set([...secrets, ...done.secrets])].sort(), agentCell: cell };
        }
        for (const { row, desired, region } of all) {
          const p = providerOf(desired.type, region);
          if (p) await p.delete(desired);
          removed.push({
            id: desired.id,
            slug: row.slug,
            type: desired.type,
            physicalName: desired.physicalName,
            provider: p?.name ?? null,
          });
        }
        return { removed, secrets };
      },
    },
    {
      name: 'verify-resources-gone',
      async run(ctx) {
        if (!decided(ctx).purge) return { kept: true };
        const still: string[] = [];
        const cell = await agentCell(ctx.tenantId);
        if (cell)
          still.push(
            ...(
              await runOnAgent(db, {
                cellId: cell,
                // A fresh look each time (observing is read-only): not an earlier attempt's answer.
                key: `${ctx.workflowId}:verify-resources-gone:${randomUUID()}`,
                op: 'resources.observe',
                input: { tenantId: ctx.tenantId, items: items(await resources(ctx.tenantId)) },
                signal: ctx.signal,
              })
            ).present,
          );
        else
          for (const { desired, region } of await resources(ctx.tenantId)) {
            const p = providerOf(desired.type, region);
            if (p && (await p.observe(desired)).exists) still.push(`${desired.type} ${desired.physicalName}`);
          }
        if (still.length > 0)
          throw new ProviderError(`still present after delete: ${still.join(', ')}`, 'PurgeIncomplete', true);
        return { verified: true };
      },
    },
    {
      name: 'delete-secrets',
      async run(ctx) {
        if (!decided(ctx).purge) return { kept: true };
        const cell = await agentCell(ctx.tenantId);
        const agent = cell
          ? await runOnAgent(db, {
              cellId: cell,
              key: `${ctx.workflowId}:delete-secrets`,
              op: 'secrets.delete-tenant',
              input: { tenantId: ctx.tenantId },
              signal: ctx.signal,
            })
          : undefined;
        return asPlatform(db, async (trx) => {
          const r = await sql`delete from resource_secrets where tenant_id = ${ctx.tenantId}`.execute(trx);
          const c = await sql`delete from service_clients where tenant_id = ${ctx.tenantId}`.execute(trx);
          return {
            deleted: Number(r.numAffectedRows ?? 0) + (agent?.deleted ?? 0),
            serviceClients: Number(c.numAffectedRows ?? 0),
          };
        });
      },
    },
    {
      name: 'record-deletion',
      run: async (ctx) => ({ purged: decided(ctx).purge }),
      async checkpoint(trx, ctx) {
        const d = decided(ctx);
        if (!d.purge) return;
        const t = await tenantRow(trx, ctx.tenantId, true);
        await sql`
          insert into tenant_retention (tenant_id, windows, resources_purge_after, purged_at, purge_workflow_id)
          values (${t.id}, ${JSON.stringify({})}, now(), now(), ${ctx.workflowId})
          on conflict (tenant_id) do update set purged_at = now(), purge_workflow_id = ${ctx.workflowId}`.execute(
          trx,
        );
        if (d.exception)
          await sql`update purge_exceptions set used_by_workflow = ${ctx.workflowId}, used_at = now()
            where id = ${d.exception.id} and used_at is null`.execute(trx);
        const { removed, secrets } = ctx.outputs['delete-resources'] as {
          removed: Removed[];
          secrets: string[];
        };
        await appendAudit(
          trx,
          auditEntryOf(systemContext(`tenantry-workflow ${ctx.workflowId}`), {
            tenantId: t.id,
            action: 'tenant.purge',
            target: { kind: 'Tenant', id: t.id, slug: t.slug },
            before: null,
            after: {
              workflowId: ctx.workflowId,
              purgedAt: new Date().toISOString(),
              resources: removed,
              secrets,
              policy: d.policy ?? { retention: 'none: the tenant was never archived' },
              exception: d.exception ?? null,
              legalHold: null,
            } as never,
            outcome: 'success',
            decision: null,
          }),
        );
      },
    },
  ];
}

/** The purge workflow a `POST /v1/tenants/{ref}/purge` starts. */
export function purgeWorkflow(deps: {
  db: Db;
  providers: ProviderSet;
  clock: Clock;
}): WorkflowDefinition<PurgeInput> {
  return { type: PURGE_TYPE, steps: purgeSteps<PurgeInput>(deps, true) };
}
