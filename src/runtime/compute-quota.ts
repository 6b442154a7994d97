import { sql } from 'kysely';
import type { Trx } from '../db/database.js';
import { PolicyError } from '../placement/policy-error.js';
import { effectiveLimits, lockUsage } from '../placement/quotas.js';
import type { Specs } from '../registry/kinds/index.js';

export interface ComputeAdmission {
  kind: 'Service' | 'ScalingPolicy';
  spec: unknown;
  tenantId: string;
  slug: string;
  /** JSON pointer of the manifest in the request body. */
  at: string;
  action: 'create' | 'update';
}

/**
 * The tenant's compute commitment: per live service, its scaling policy's maxReplicas (else its
 * replicas) × its unit cost, summed, leaving out one service (the one being changed).
 */
export async function committedComputeUnits(trx: Trx, tenantId: string, exceptServiceSlug?: string) {
  const r = await sql<{ units: number }>`
    select coalesce(sum(coalesce((p.spec->>'maxReplicas')::int, (s.spec->>'replicas')::int)
                        * coalesce((s.spec->>'unitCost')::int, 1)), 0)::int as units
    from services s
    left join scaling_policies p on p.tenant_id = s.tenant_id and p.service_id = s.id and p.deleted_at is null
    where s.tenant_id = ${tenantId} and s.deleted_at is null and s.slug <> ${exceptServiceSlug ?? ''}`.execute(
    trx,
  );
  return Number(r.rows[0]?.units ?? 0);
}

/**
 * Admission of a Service or ScalingPolicy against the binding quota `computeUnits` (the tenant's plan
 * or an override): the service's maximum (the policy's maxReplicas, else its replicas) × its unit cost,
 * plus what the tenant's other services hold, must fit; else `quota.exceeded` (409) with the numbers.
 * Concurrency contract: the tenant's usage row is locked (lockUsage) for the rest of the apply
 * transaction, so two concurrent applies of one tenant cannot both take the last units.
 */
export async function admitCompute(trx: Trx, a: ComputeAdmission): Promise<string> {
  const limits = await effectiveLimits(trx, a.tenantId);
  const limit = limits?.quotas.computeUnits?.limit;
  if (limit === undefined) return 'no computeUnits limit';
  await lockUsage(trx, a.tenantId);
  let serviceSlug: string;
  let maxReplicas: number;
  let unitCost: number;
  let pointer: string;
  if (a.kind === 'ScalingPolicy') {
    const spec = a.spec as Specs['ScalingPolicy'];
    const s = await sql<{ spec: Specs['Service'] }>`
      select spec from services where slug = ${spec.service} and deleted_at is null`.execute(trx);
    serviceSlug = spec.service;
    maxReplicas = spec.maxReplicas;
    unitCost = s.rows[0]?.spec.unitCost ?? 1;
    pointer = '/spec/maxReplicas';
  } else {
    const spec = a.spec as Specs['Service'];
    const p = await sql<{ max: number }>`
      select (p.spec->>'maxReplicas')::int as max from scaling_policies p join services s on s.id = p.service_id
      where s.slug = ${a.slug} and s.deleted_at is null and p.deleted_at is null`.execute(trx);
    serviceSlug = a.slug;
    maxReplicas = p.rows[0]?.max ?? spec.replicas;
    unitCost = spec.unitCost ?? 1;
    pointer = p.rows[0] ? '/spec/unitCost' : '/spec/replicas';
  }
  const others = await committedComputeUnits(trx, a.tenantId, serviceSlug);
  const requested = maxReplicas * unitCost;
  if (others + requested > limit) {
    const message =
      `Quota computeUnits exceeded: ${maxReplicas} replicas × unit cost ${unitCost} = ${requested} units, ` +
      `the tenant's other services hold ${others}, the binding allows ${limit}` +
      ` (at most ${Math.max(0, Math.floor((limit - others) / unitCost))} replicas of this service).`;
    throw new PolicyError(
      'quota.exceeded',
      409,
      message,
      `${a.at}${pointer}`,
      { quota: 'computeUnits', used: others, limit, requested, maxReplicas, unitCost, tenant: a.tenantId },
      { tenantId: a.tenantId, kind: a.kind, slug: a.slug, action: a.action },
    );
  }
  return `${others + requested}/${limit} compute units after this change`;
}

/**
 * A change of the binding quota `computeUnits` (an override set or revoked, a plan's quota changed,
 * a tenant moved to another plan) reaches the compute target at once: the live services of the
 * tenant — or of every tenant on the plan — are enqueued for reconcile in the change's own
 * transaction, so they commit (or roll back) with it. Returns how many were enqueued.
 *
 * Concurrency contract: the same upsert as `enqueueJob` for each service's row (a lease held on it
 * is kept; the holder sees the bumped `ticket` and leaves the job due).
 */
export async function enqueueComputeOf(
  trx: Trx,
  of: { tenantId: string } | { plan: string },
): Promise<number> {
  const r = await sql`
    insert into reconcile_jobs (object_kind, object_id, tenant_id, generation)
    select 'Service', s.id, s.tenant_id, s.generation from services s
    where s.deleted_at is null and ${
      'tenantId' in of
        ? sql`s.tenant_id = ${of.tenantId}`
        : sql`s.tenant_id in (select id from tenants where spec->>'plan' = ${of.plan} and deleted_at is null)`
    }
    on conflict (object_kind, object_id) do update
      set generation = greatest(reconcile_jobs.generation, excluded.generation),
          run_after = now(), attempts = 0, updated_at = now(), ticket = reconcile_jobs.ticket + 1`.execute(
    trx,
  );
  return Number(r.numAffectedRows ?? 0);
}
