import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { ConflictError, ForbiddenError } from '../errors/errors.js';
import type { Kind, Manifest, Specs } from '../registry/kinds/index.js';
import type { ObjectRow } from '../registry/object.repository.js';
import { admitCompute, enqueueComputeOf } from '../runtime/compute-quota.js';
import {
  type Binding,
  type CellCandidate,
  chooseCell,
  isolationOf,
  isRefusal,
  type PlacementRequest,
  policyRefusal,
  type Refusal,
  regionOrder,
} from './placement.rules.js';
import { PolicyError } from './policy-error.js';
import {
  appendUsageHistory,
  currentUsage,
  type EffectiveLimits,
  effectiveLimits,
  lockUsage,
  type PlanSpecShape,
  type QuotaName,
} from './quotas.js';

/** One check a change met, for dry runs and apply results. */
export interface Verdict {
  rule: string;
  outcome: 'allow';
  detail: string;
}

/** A tenant's binding as recorded on the tenant (`tenants.placement`) and shown in its status. */
export interface Placement extends Binding {
  plan: string | null;
  quota: EffectiveLimits['quotas'];
}

export interface PolicyInput {
  m: Manifest;
  /** The tenant the object belongs to (its own id for a new tenant), null for platform objects. */
  tenantId: string | null;
  id: string;
  slug: string;
  existing: ObjectRow | undefined;
  /** JSON pointer of the manifest in the request body, e.g. `/3`; refusals point below it. */
  at: string;
  /** Whether the caller acts as the platform (cells can only be changed then). */
  platform: boolean;
  /** What the apply read already in this transaction (a Tenant's context), not read again here. */
  known?:
    | {
        cellsDeclared?: boolean;
        limits?: EffectiveLimits;
        /** The live plan the manifest names (null: none). */
        plan?: { spec: PlanSpecShape } | null;
      }
    | undefined;
}

export interface PolicyResult {
  /** Extra columns for the object's insert or update. */
  columns: Record<string, unknown>;
  verdicts: Verdict[];
  placement?: Placement;
  /** Quotas consumed by a create: the usage history gets a new version after the write. */
  consumed?: EffectiveLimits;
  /** Other registry objects this changed (the cell a tenant is placed in: its allocation). */
  changed?: string[];
}

const QUOTA_OF: Partial<Record<Kind, QuotaName>> = {
  Deployment: 'deployments',
  IntegrationResource: 'integrationResources',
};

/**
 * Placement, residency, plan and quota policy of the change path. The registry calls `beforeWrite`
 * for every create or change in the apply transaction, before the object is written; a refusal
 * throws a PolicyError and nothing is written. Locks taken here (cells, the tenant's usage row) are
 * held until the transaction ends, which is what makes the checks race-free.
 */
export class PlacementPolicy {
  async beforeWrite(trx: Trx, input: PolicyInput): Promise<PolicyResult> {
    const { m } = input;
    if (m.kind === 'Tenant') return this.tenant(trx, input, m.spec as Specs['Tenant']);
    if (m.kind === 'Cell' && input.existing) {
      const spec = m.spec as Specs['Cell'];
      const allocated = Number(input.existing.allocated);
      if (spec.capacity.tenants < allocated) {
        throw new PolicyError(
          'cell.capacity_below_allocation',
          409,
          `Cell "${input.slug}" hosts ${allocated} tenants; its capacity cannot go below that.`,
          `${input.at}/spec/capacity/tenants`,
          { allocated, capacity: spec.capacity.tenants },
          { tenantId: null, kind: m.kind, slug: input.slug, action: 'update' },
        );
      }
      return {
        columns: {},
        verdicts: [{ rule: 'capacity', outcome: 'allow', detail: `${allocated} allocated` }],
      };
    }
    const quota = QUOTA_OF[m.kind];
    if (input.tenantId === null) return { columns: {}, verdicts: [] };
    const result = await this.quotas(trx, input, input.existing ? [] : quota ? [quota] : []);
    if (m.kind === 'Service' || m.kind === 'ScalingPolicy') {
      const detail = await admitCompute(trx, {
        kind: m.kind,
        spec: m.spec,
        tenantId: input.tenantId,
        slug: input.slug,
        at: input.at,
        action: input.existing ? 'update' : 'create',
      });
      result.verdicts.push({ rule: 'quota.computeUnits', outcome: 'allow', detail });
    }
    return result;
  }

  /**
   * After a create that consumed a quota: a new version of the usage history (billing comparison).
   * After a change of a binding's `computeUnits` (the plan's quota, or the tenant's plan): its
   * services are reconciled at once, in this transaction, not at the next resync.
   */
  async afterWrite(trx: Trx, ctx: RequestContext, input: PolicyInput, result: PolicyResult): Promise<void> {
    if (result.consumed)
      await appendUsageHistory(trx, result.consumed, `${input.m.kind.toLowerCase()}.create`, ctx.requestId);
    const before = input.existing?.spec as { quotas?: { computeUnits?: number }; plan?: string } | undefined;
    const after = input.m.spec as { quotas?: { computeUnits?: number }; plan?: string };
    if (!before) return;
    if (input.m.kind === 'Plan' && before.quotas?.computeUnits !== after.quotas?.computeUnits)
      await enqueueComputeOf(trx, { plan: input.slug });
    if (input.m.kind === 'Tenant' && before.plan !== after.plan)
      await enqueueComputeOf(trx, { tenantId: input.id });
  }

  /** After a deployment or resource is deleted: a new usage version when the tenant has quotas. */
  async afterDelete(trx: Trx, ctx: RequestContext, kind: Kind, row: ObjectRow): Promise<void> {
    if (!QUOTA_OF[kind] || !row.tenant_id) return;
    const limits = await effectiveLimits(trx, row.tenant_id);
    if (!limits || Object.keys(limits.quotas).length === 0) return;
    await lockUsage(trx, row.tenant_id);
    await appendUsageHistory(trx, limits, `${kind.toLowerCase()}.delete`, ctx.requestId);
  }

  /** Before an object is deleted: in-use refusals, and a deleted tenant's cell capacity is released. */
  async beforeDelete(trx: Trx, kind: Kind, row: ObjectRow): Promise<void> {
    const inUse = async (query: ReturnType<typeof sql<{ n: number }>>, code: string, message: string) => {
      const n = (await query.execute(trx)).rows[0]?.n ?? 0;
      if (n > 0) throw new ConflictError(code, message, { details: { count: n } });
    };
    if (kind === 'Cell')
      await inUse(
        sql<{ n: number }>`select allocated as n from cells where id = ${row.id} for update`,
        'cell.in_use',
        `Cell "${row.slug}" still hosts tenants.`,
      );
    if (kind === 'Plan')
      await inUse(
        sql<{
          n: number;
        }>`select count(*) as n from tenants where spec->>'plan' = ${row.slug} and deleted_at is null`,
        'plan.in_use',
        `Plan "${row.slug}" is still the plan of some tenants.`,
      );
    if (kind === 'Region')
      await inUse(
        sql<{
          n: number;
        }>`select (select count(*) from cells where region = ${row.slug} and deleted_at is null)
          + (select count(*) from tenants where region = ${row.slug} and deleted_at is null) as n`,
        'region.in_use',
        `Region "${row.slug}" still has cells or tenants.`,
      );
    if (kind === 'Tenant' && row.cell_id) {
      const r =
        await sql`update cells set allocated = allocated - 1 where id = ${row.cell_id as string}`.execute(
          trx,
        );
      // Cells are platform objects (row-level security): a tenant-scoped caller cannot release capacity.
      if (Number(r.numAffectedRows ?? 0) !== 1)
        throw new ForbiddenError('placement.platform_only', 'Only the platform can delete a placed tenant.');
    }
  }

  private async tenant(trx: Trx, input: PolicyInput, spec: Specs['Tenant']): Promise<PolicyResult> {
    const known = input.known?.plan;
    const plan = spec.plan
      ? known !== undefined
        ? known?.spec
        : (
            await sql<{
              spec: PlanSpecShape;
            }>`select spec from plans where slug = ${spec.plan} and deleted_at is null`.execute(trx)
          ).rows[0]?.spec
      : undefined;
    const current = input.existing?.placement as Placement | null | undefined;
    const req: PlacementRequest = {
      tenantId: input.id,
      tenantSlug: input.slug,
      region: spec.region,
      environmentType: spec.environmentType,
      // A placed tenant whose manifest does not name an isolation model keeps the one it has.
      isolation: spec.isolation ?? current?.isolation,
      allowedRegions: spec.residency?.allowedRegions,
      preferredRegion: spec.residency?.preferredRegion,
      cell: spec.cell,
      plan: plan && spec.plan ? { code: spec.plan, isolationModels: plan.isolationModels } : undefined,
    };
    const action = input.existing ? 'update' : 'create';
    const refuse = (r: Refusal): never => {
      throw new PolicyError(
        r.code,
        r.code === 'placement.no_capacity' || r.code === 'placement.migration_required' ? 409 : 422,
        r.message,
        `${input.at}${r.pointer}`,
        r.details,
        {
          tenantId: input.existing ? input.id : null,
          kind: 'Tenant',
          slug: input.slug,
          action,
        },
      );
    };
    const policy = policyRefusal(req);
    if (policy) refuse(policy);
    const verdicts: Verdict[] = [
      { rule: 'residency', outcome: 'allow', detail: `allowed regions: ${regionOrder(req).join(', ')}` },
      {
        rule: 'plan.isolation',
        outcome: 'allow',
        detail: req.plan
          ? `plan ${req.plan.code} allows ${isolationOf(req)}`
          : `no plan: ${isolationOf(req)}`,
      },
    ];

    /** The cell whose allocation this placement took (a registry object changed besides the tenant). */
    let placed: string | undefined;
    let binding: Binding;
    if (current) {
      // Residency is re-checked on every change: a change that would need the data to move is refused.
      if (!regionOrder(req).includes(current.region)) {
        refuse({
          code: 'placement.residency_violation',
          pointer: '/spec/residency/allowedRegions',
          message: `the tenant lives in region "${current.region}" (cell ${current.cell}), which the new policy does not allow; moving it is a region migration`,
          details: {
            rule: 'residency',
            region: current.region,
            cell: current.cell,
            allowedRegions: regionOrder(req),
          },
        });
      }
      if (isolationOf(req) !== current.isolation) {
        refuse({
          code: 'placement.migration_required',
          pointer: '/spec/isolation',
          message: `the tenant is ${current.isolation}; moving it to ${isolationOf(req)} is a tenancy-mode migration`,
          details: { rule: 'isolation', from: current.isolation, to: isolationOf(req) },
        });
      }
      if (spec.cell !== undefined && spec.cell !== current.cell) {
        const pinned = await sql<{ region: string }>`
          select region from cells where slug = ${spec.cell} and deleted_at is null`.execute(trx);
        const region = pinned.rows[0]?.region;
        if (region !== undefined && !regionOrder(req).includes(region))
          refuse({
            code: 'placement.residency_violation',
            pointer: '/spec/cell',
            message: `cell "${spec.cell}" is in region "${region}", outside the allowed regions (${regionOrder(req).join(', ')})`,
            details: { rule: 'residency', cell: spec.cell, region, allowedRegions: regionOrder(req) },
          });
        refuse({
          code: 'placement.migration_required',
          pointer: '/spec/cell',
          message: `the tenant is placed in cell ${current.cell}; moving it to ${spec.cell} is a migration`,
          details: { rule: 'placement', from: current.cell, to: spec.cell },
        });
      }
      binding = current;
    } else if (!input.existing && !input.platform) {
      // Cells are platform objects, and a tenant-scoped caller creates no other tenant.
      throw new ForbiddenError('placement.platform_only', 'Only the platform creates and places tenants.');
    } else if (input.existing && !input.platform) {
      // Cells are platform objects: a tenant-scoped change leaves an unplaced tenant for the platform to place.
      verdicts.push({
        rule: 'placement',
        outcome: 'allow',
        detail: 'unplaced: only the platform places tenants',
      });
      return { columns: {}, verdicts };
    } else {
      // No cell at all when the apply read the tenant (same transaction): nothing to lock.
      const cells =
        input.known?.cellsDeclared === false
          ? 'none'
          : await lockCandidateCells(trx, regionOrder(req), spec.cell);
      if (cells === 'none') {
        // No cell has been declared at all: the installation does not place tenants (yet).
        verdicts.push({
          rule: 'placement',
          outcome: 'allow',
          detail: 'no cells declared: the tenant stays unplaced',
        });
        return { columns: {}, verdicts };
      }
      const chosen = chooseCell(req, cells);
      if (isRefusal(chosen)) return refuse(chosen);
      await sql`update cells set allocated = allocated + 1 where id = ${chosen.cellUuid}`.execute(trx);
      const cell = cells.find((c) => c.id === chosen.cellUuid)!;
      verdicts.push({
        rule: 'capacity',
        outcome: 'allow',
        detail: `cell ${cell.slug}: ${cell.allocated + 1}/${cell.capacity} tenants after placement`,
      });
      binding = chosen;
      placed = chosen.cellUuid;
    }

    // The quota part of the binding: the plan's limits (a new tenant has no overrides yet).
    let quota: EffectiveLimits['quotas'] = {};
    if (input.existing) {
      const limits = input.known?.limits ?? (await effectiveLimits(trx, input.id));
      if (limits) {
        const next = { ...limits, plan: spec.plan ?? null, quotas: planQuotas(plan, limits) };
        if (spec.plan !== (input.existing.spec as Specs['Tenant']).plan) {
          // A plan change must leave the tenant within its new quotas.
          await lockUsage(trx, input.id);
          const usage = await currentUsage(trx, input.id, next.period);
          for (const name of ['deployments', 'integrationResources'] as const) {
            const limit = next.quotas[name]?.limit;
            if (limit !== undefined && usage[name] > limit)
              throw quotaError(name, usage[name], limit, 0, '/spec/plan', input, 'update');
          }
          verdicts.push({ rule: 'quota', outcome: 'allow', detail: 'current use fits the new plan' });
        }
        quota = next.quotas;
      }
    } else {
      quota = planQuotas(plan, undefined);
    }
    const placement: Placement = { ...binding, plan: spec.plan ?? null, quota };
    return {
      columns: { cell_id: binding.cellUuid, placement: JSON.stringify(placement) },
      verdicts,
      placement,
      ...(placed ? { changed: [placed] } : {}),
    };
  }

  private async quotas(trx: Trx, input: PolicyInput, consume: QuotaName[]): Promise<PolicyResult> {
    const tenantId = input.tenantId!;
    const limits = await effectiveLimits(trx, tenantId);
    if (!limits) return { columns: {}, verdicts: [] };
    const checked = [...consume, ...(limits.quotas.eventsPerPeriod ? (['eventsPerPeriod'] as const) : [])];
    const bounded = checked.filter((q) => limits.quotas[q] !== undefined);
    if (bounded.length === 0) {
      return {
        columns: {},
        verdicts: consume.map((q) => ({ rule: `quota.${q}`, outcome: 'allow', detail: 'no limit' })),
        ...(consume.length > 0 ? { consumed: limits } : {}),
      };
    }
    await lockUsage(trx, tenantId);
    const usage = await currentUsage(trx, tenantId, limits.period);
    const verdicts: Verdict[] = [];
    for (const q of checked) {
      const limit = limits.quotas[q]?.limit;
      if (limit === undefined) {
        verdicts.push({ rule: `quota.${q}`, outcome: 'allow', detail: 'no limit' });
        continue;
      }
      // Each change emits one event; a create also takes one unit of its kind's quota.
      if (usage[q] + 1 > limit)
        throw quotaError(q, usage[q], limit, 1, '/metadata', input, input.existing ? 'update' : 'create');
      verdicts.push({
        rule: `quota.${q}`,
        outcome: 'allow',
        detail: `${usage[q] + 1}/${limit} after this change`,
      });
    }
    return { columns: {}, verdicts, ...(consume.length > 0 ? { consumed: limits } : {}) };
  }
}

function planQuotas(
  plan: PlanSpecShape | undefined,
  limits: EffectiveLimits | undefined,
): EffectiveLimits['quotas'] {
  const out: EffectiveLimits['quotas'] = {};
  for (const [name, v] of Object.entries(plan?.quotas ?? {}) as [QuotaName, number | { limit: number }][])
    out[name] = { limit: typeof v === 'number' ? v : v.limit, source: 'plan' };
  for (const [name, l] of Object.entries(limits?.quotas ?? {}) as [
    QuotaName,
    EffectiveLimits['quotas'][QuotaName],
  ][])
    if (l?.source === 'override') out[name] = l;
  return out;
}

function quotaError(
  quota: QuotaName,
  used: number,
  limit: number,
  requested: number,
  pointer: string,
  input: PolicyInput,
  action: string,
): PolicyError {
  return new PolicyError(
    'quota.exceeded',
    409,
    `Quota ${quota} exceeded: ${used} in use, limit ${limit}${requested ? `, this change needs ${requested} more` : ''}.`,
    `${input.at}${pointer}`,
    { quota, used, limit, requested, tenant: input.tenantId },
    { tenantId: input.tenantId, kind: input.m.kind, slug: input.slug, action },
  );
}

/**
 * Locks the live cells of the candidate regions (and a pinned cell wherever it is) in id order, so
 * that concurrent placements serialise on them and never deadlock; returns 'none' when no cell exists
 * at all. Concurrency contract: the chosen cell's `allocated` is read and bumped under its row lock.
 */
export async function lockCandidateCells(
  trx: Trx,
  regions: string[],
  pinned: string | undefined,
): Promise<CellCandidate[] | 'none'> {
  // One round trip: the candidates locked in id order, and whether any cell exists at all.
  const r = await sql<{
    cells: {
      id: string;
      slug: string;
      region: string;
      tenancy: 'shared' | 'dedicated';
      allocated: number;
      spec: { environmentTypes: string[]; capacity: { tenants: number } };
    }[];
    any: boolean;
  }>`
    with candidates as (
      select id, slug, region, tenancy, allocated, spec from cells
      where deleted_at is null and (region = any(${regions}::text[]) or slug = ${pinned ?? null})
      order by id for update
    )
    select coalesce((select json_agg(c order by c.id) from candidates c), '[]'::json) as cells,
           exists (select 1 from cells where deleted_at is null) as any`.execute(trx);
  const { cells, any } = r.rows[0]!;
  if (cells.length === 0 && !any) return 'none';
  return cells.map((c) => ({
    id: c.id,
    slug: c.slug,
    region: c.region,
    tenancy: c.tenancy,
    environmentTypes: c.spec.environmentTypes,
    capacity: c.spec.capacity.tenants,
    allocated: c.allocated,
  }));
}
