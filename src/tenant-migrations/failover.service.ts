import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { remoteAgentCells } from '../agent/agent-commands.js';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, inScope, type Trx } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors/errors.js';
import type { Placement } from '../placement/placement.policy.js';
import { FAILOVER_REGION, type FailoverInput } from './failover.js';
import { type Binding, bindingOf, startAudited } from './migration-records.js';
import {
  allowedRegions,
  movableTenant,
  placeInRegion,
  platformOnly,
  tenantRow,
} from './migrations.service.js';
import type { StandbyPlan } from './standby.js';

/** The steps of a region failover, as the workflow runs them. */
export const FAILOVER_STEPS = [
  'check-standby',
  'fence-primary',
  'promote-standby',
  'rotate-credentials',
  'switch-placement',
  'sync-blobs',
  'verify',
];

/** A tenant's standby as the API shows it: where, its state, and its lag. */
export interface StandbyView {
  region: string;
  state: string;
  workflowId: string | null;
  /** WAL the standby had not confirmed at the last measurement; null: unknown (primary unreachable). */
  lagBytes: number | null;
  /** Seconds between the last moment the standby was seen caught up and the last measurement. */
  lagSeconds: number | null;
  /** The last moment the standby was seen caught up (the data-loss window starts there). */
  lastSyncAt: string | null;
  measuredAt: string | null;
  lastKnown: unknown;
  blobs: unknown;
  error: string | null;
}

export interface Failover {
  id: string;
  tenantId: string;
  state: string;
  workflowId: string;
  reason: string;
  from: Binding;
  to: Binding;
  /** The standby when the failover started: lag, last sync, and the data-loss window. */
  standby: { lagBytes: number | null; lastSyncAt: string | null; dataLossWindowSeconds: number | null };
  fence: unknown;
  fencedAt: string | null;
  consistency: unknown;
  failedOverAt: string | null;
  error: string | null;
  actor: { principal: string; kind: string };
  createdAt: string;
}

export interface FailoverPlanView {
  dryRun: true;
  tenant: string;
  from: Binding;
  to: Binding;
  standby: Failover['standby'];
  steps: string[];
  verdicts: { rule: string; outcome: 'allow'; detail: string }[];
}

interface StandbyRow {
  region: string;
  plan: Partial<StandbyPlan>;
  state: string;
  workflow_id: string | null;
  lag_bytes: string | null;
  measured_at: Date | null;
  caught_up_at: Date | null;
  last_known: unknown;
  blobs: unknown;
  error: string | null;
}

interface FailoverRow {
  id: string;
  tenant_id: string;
  state: string;
  reason: string;
  source: Placement;
  target: Placement;
  standby: Failover['standby'];
  fence: unknown;
  fenced_at: Date | null;
  consistency: unknown;
  failed_over_at: Date | null;
  error: string | null;
  actor: { principal: string; kind: string };
  created_at: Date;
}

const iso = (d: Date | null) => d?.toISOString() ?? null;

function toStandby(r: StandbyRow): StandbyView {
  const lag = r.lag_bytes === null ? null : Number(r.lag_bytes);
  return {
    region: r.region,
    state: r.state,
    workflowId: r.workflow_id,
    lagBytes: lag,
    lagSeconds:
      r.measured_at && r.caught_up_at
        ? Math.max(0, (r.measured_at.getTime() - r.caught_up_at.getTime()) / 1000)
        : null,
    lastSyncAt: iso(r.caught_up_at),
    measuredAt: iso(r.measured_at),
    lastKnown: r.last_known,
    blobs: r.blobs,
    error: r.error,
  };
}

function toFailover(r: FailoverRow): Failover {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    state: r.state,
    workflowId: r.id,
    reason: r.reason,
    from: bindingOf(r.source),
    to: bindingOf(r.target),
    standby: r.standby,
    fence: r.fence,
    fencedAt: iso(r.fenced_at),
    consistency: r.consistency,
    failedOverAt: iso(r.failed_over_at),
    error: r.error,
    actor: r.actor,
    createdAt: r.created_at.toISOString(),
  };
}

/**
 * The cell a failover puts the tenant in must hold its standby: the one whose agent keeps it (the
 * standby's data plane is that agent's), or else one the control plane serves (the region's data
 * plane). Otherwise 409 `failover.standby_cell`, before anything is written.
 */
async function sameCellAsStandby(trx: Trx, plan: Partial<StandbyPlan>, target: Placement): Promise<void> {
  const [agentHeld] = await remoteAgentCells(trx, [target.cellUuid]);
  const kept = plan.targetAgent ?? null;
  if (kept === (agentHeld ? target.cellUuid : null)) return;
  const keptSlug = kept
    ? (await sql<{ slug: string }>`select slug from cells where id = ${kept}`.execute(trx)).rows[0]?.slug
    : undefined;
  throw new ConflictError(
    'failover.standby_cell',
    kept
      ? `The standby is kept in cell ${keptSlug ?? kept} by its agent, but the placement rules put the tenant in cell ${target.cell}: a failover promotes the standby where it is (give that cell room, or name the standby again to re-establish it).`
      : `The standby is kept on the data plane the control plane serves in ${target.region}, but the placement rules put the tenant in cell ${target.cell}, held by its agent: a failover promotes the standby where it is.`,
    {
      errors: [
        { pointer: '/region', code: 'failover.standby_cell', message: 'the standby is in another cell' },
      ],
      details: { standbyCell: keptSlug ?? null, placementCell: target.cell },
    },
  );
}

/**
 * Region failover as the API asks for it (issue 19): every rule checked before anything is written
 * — a streaming standby in the named region, its lag known (it was seen caught up at least once),
 * residency, a cell with room there, no freeze, no workflow in progress — then the failover record,
 * its workflow (failover.ts) and the audit record in one transaction.
 */
export class FailoverService {
  constructor(private readonly db: Db) {}

  async start(
    ctx: RequestContext,
    ref: string,
    input: { region?: string } | undefined,
    opts: { dryRun: boolean; reason?: string },
  ): Promise<Failover | FailoverPlanView> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const { t, current } = await movableTenant(trx, ref);
      const s = (await sql<StandbyRow>`select * from tenant_standbys where tenant_id = ${t.id}`.execute(trx))
        .rows[0];
      if (s?.state !== 'Streaming')
        throw new ConflictError(
          'failover.no_standby',
          s
            ? `The tenant's standby in ${s.region} is ${s.state}, not Streaming: there is nothing to promote.`
            : 'The tenant has no standby: name one in its spec (standby.region) and wait until it streams.',
          {
            errors: [{ pointer: '/region', code: 'failover.no_standby', message: 'no streaming standby' }],
            details: { standby: s ? { region: s.region, state: s.state } : null },
          },
        );
      const region = input?.region ?? s.region;
      if (region !== s.region)
        throw ValidationError.field(
          '/region',
          'failover.not_standby_region',
          `The tenant's standby is in ${s.region}, not ${region}: a failover promotes the standby.`,
        );
      if (region === current.region)
        throw new ConflictError('failover.same_region', `The tenant is served from ${region} already.`, {
          errors: [{ pointer: '/region', code: 'failover.same_region', message: `already in ${region}` }],
        });
      const allowed = allowedRegions({ t, current, region }, 'failover');
      if (!s.caught_up_at)
        throw new ConflictError(
          'failover.lag_unknown',
          "The standby's lag is unknown: it has never been seen caught up with the primary, so what a failover would lose cannot be told.",
          {
            errors: [{ pointer: '/region', code: 'failover.lag_unknown', message: 'lag unknown' }],
            details: { measuredAt: iso(s.measured_at), error: s.error },
          },
        );
      const open = await sql<{ id: string; type: string }>`
        select id, type from workflows where tenant_id = ${t.id}
          and state in ('Pending', 'Running', 'Waiting', 'Compensating') limit 1`.execute(trx);
      if (open.rows[0])
        throw new ConflictError(
          'workflow.in_progress',
          `The tenant has a workflow in progress (${open.rows[0].type} ${open.rows[0].id}); wait for it or cancel it.`,
          { details: { workflowId: open.rows[0].id, type: open.rows[0].type } },
        );
      const { chosen, target } = await placeInRegion(
        trx,
        { t, current, region },
        'failover',
        FAILOVER_REGION,
      );
      await sameCellAsStandby(trx, s.plan, target);
      const now = Date.now();
      const standby: Failover['standby'] = {
        lagBytes: s.lag_bytes === null ? null : Number(s.lag_bytes),
        lastSyncAt: iso(s.caught_up_at),
        dataLossWindowSeconds: Math.max(0, (now - s.caught_up_at.getTime()) / 1000),
      };
      const verdicts = [
        { rule: 'standby', outcome: 'allow' as const, detail: `streaming standby in ${region}` },
        {
          rule: 'lag',
          outcome: 'allow' as const,
          detail: `last seen caught up ${standby.lastSyncAt} (${Math.round(standby.dataLossWindowSeconds ?? 0)} s ago), ${standby.lagBytes ?? 'unknown'} bytes behind at the last measurement`,
        },
        { rule: 'residency', outcome: 'allow' as const, detail: `${region} is among ${allowed.join(', ')}` },
        { rule: 'capacity', outcome: 'allow' as const, detail: `cell ${chosen.cell} in ${region} has room` },
        { rule: 'freeze', outcome: 'allow' as const, detail: 'no freeze covers the tenant' },
        { rule: 'workflow', outcome: 'allow' as const, detail: 'no workflow of the tenant in progress' },
      ];
      if (opts.dryRun)
        return {
          dryRun: true as const,
          tenant: t.slug,
          from: bindingOf(current),
          to: bindingOf(target),
          standby,
          steps: FAILOVER_STEPS,
          verdicts,
        };
      const id = randomUUID();
      const wf: FailoverInput = {
        failoverId: id,
        tenantSlug: t.slug,
        fromRegion: current.region,
        toRegion: region,
      };
      await sql`
        insert into tenant_failovers (id, tenant_id, from_region, to_region, reason, source, target, standby, actor)
        values (${id}, ${t.id}, ${current.region}, ${region}, ${opts.reason ?? 'operator'}, ${JSON.stringify(current)},
                ${JSON.stringify(target)}, ${JSON.stringify(standby)}, ${JSON.stringify(ctx.actor)})`.execute(
        trx,
      );
      await startAudited(
        trx,
        ctx,
        { id, tenantId: t.id, type: FAILOVER_REGION, input: wf },
        {
          action: 'failover.start',
          target: { kind: 'Failover', id, slug: t.slug },
          before: { placement: bindingOf(current) },
          after: { placement: bindingOf(target), standby, verdicts },
        },
      );
      return this.read(trx, t.id, id);
    });
  }

  standby(ctx: RequestContext, ref: string): Promise<StandbyView> {
    return inScope(this.db, ctx.scope, async (trx) => {
      const t = await tenantRow(trx, ref, false);
      const s = (await sql<StandbyRow>`select * from tenant_standbys where tenant_id = ${t.id}`.execute(trx))
        .rows[0];
      if (!s) throw new NotFoundError('standby.not_found', `Tenant ${t.slug} has no standby.`);
      return toStandby(s);
    });
  }

  get(ctx: RequestContext, ref: string, id: string): Promise<Failover> {
    return inScope(this.db, ctx.scope, async (trx) =>
      this.read(trx, (await tenantRow(trx, ref, false)).id, id),
    );
  }

  async list(ctx: RequestContext, ref: string): Promise<Failover[]> {
    return this.recent(ctx, { tenant: ref, limit: 100 });
  }

  /** Failovers newest first, of one tenant or of every tenant in the caller's scope, with its slug. */
  recent(
    ctx: RequestContext,
    q: { tenant?: string | undefined; limit: number },
  ): Promise<(Failover & { tenantSlug: string })[]> {
    return inScope(this.db, ctx.scope, async (trx) => {
      const tenantId = q.tenant !== undefined ? (await tenantRow(trx, q.tenant, false)).id : undefined;
      const r = await sql<FailoverRow & { tenant_slug: string }>`
        select f.*, t.slug as tenant_slug from tenant_failovers f join tenants t on t.id = f.tenant_id
        where true ${tenantId ? sql`and f.tenant_id = ${tenantId}` : sql``}
        order by f.created_at desc, f.id limit ${q.limit}`.execute(trx);
      return r.rows.map((row) => ({ ...toFailover(row), tenantSlug: row.tenant_slug }));
    });
  }

  private async read(trx: Trx, tenantId: string, id: string): Promise<Failover> {
    const r = isUuid(id)
      ? await sql<FailoverRow>`select * from tenant_failovers where id = ${id} and tenant_id = ${tenantId}`.execute(
          trx,
        )
      : { rows: [] };
    const row = r.rows[0];
    if (!row) throw new NotFoundError('failover.not_found', `No failover ${id} of this tenant.`);
    return toFailover(row);
  }
}
