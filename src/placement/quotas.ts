import { type RawBuilder, sql } from 'kysely';
import type { Trx } from '../db/database.js';

/** The quotas a plan defines (DESIGN.md §1, seed 001 "Quotas And Rate Limits") and the rate-limit classes. */
export const QUOTA_NAMES = [
  'deployments',
  'integrationResources',
  'storageGiB',
  'eventsPerPeriod',
  'concurrentOperations',
  'computeUnits',
] as const;
export type QuotaName = (typeof QUOTA_NAMES)[number];
export const RATE_CLASSES = ['read', 'write'] as const;
export type RateClass = (typeof RATE_CLASSES)[number];
/** What an override may change: a quota, or a rate limit (`rate.read`, `rate.write`: requests per window). */
export const LIMIT_NAMES = [...QUOTA_NAMES, 'rate.read', 'rate.write'] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];
export type Period = 'hour' | 'day' | 'month';

export interface PlanSpecShape {
  isolationModels: ('shared' | 'pool' | 'silo')[];
  quotas: {
    deployments?: number;
    integrationResources?: number;
    storageGiB?: number;
    eventsPerPeriod?: { limit: number; period: Period };
    concurrentOperations?: number;
    computeUnits?: number;
  };
  rateLimits?: {
    read?: { limit: number; windowSeconds: number };
    write?: { limit: number; windowSeconds: number };
  };
}

export interface Limit {
  limit: number;
  source: 'plan' | 'override';
  /** When an override ends; absent for plan limits and permanent overrides. */
  expiresAt?: string;
}

/** The limits in force for one tenant: its plan's, each replaced by the newest active override. */
export interface EffectiveLimits {
  tenantId: string;
  tenantSlug: string;
  plan: string | null;
  quotas: Partial<Record<QuotaName, Limit>>;
  period: Period;
  rate: Partial<Record<RateClass, Limit & { windowSeconds: number }>>;
}

const DEFAULT_RATE_WINDOW = 60;

/** What effectiveLimitsSql reads: the tenant, its plan's spec and its active overrides. */
export interface LimitsRow {
  id: string;
  slug: string;
  plan: string | null;
  plan_spec: PlanSpecShape | null;
  overrides: { name: LimitName; value: number; expires_at: string | null }[];
}

/** Reads the tenant's plan and active overrides (one statement, no locks). */
export async function effectiveLimits(trx: Trx, tenantId: string): Promise<EffectiveLimits | undefined> {
  const row = (await effectiveLimitsSql(tenantId).execute(trx)).rows[0];
  return row ? limitsOf(row) : undefined;
}

/**
 * effectiveLimits' statement, for a caller that makes it part of a larger one: `tenantId` is a value
 * or an expression of the enclosing statement (not over the alias `t`, which this one uses).
 */
export function effectiveLimitsSql(tenantId: string | RawBuilder<unknown>): RawBuilder<LimitsRow> {
  return sql<LimitsRow>`
    select t.id, t.slug, t.spec->>'plan' as plan, p.spec as plan_spec,
      coalesce((
        select jsonb_agg(jsonb_build_object('name', o.name, 'value', o.value, 'expires_at', o.expires_at))
        from (select distinct on (name) name, value, expires_at from limit_overrides
              where tenant_id = t.id and revoked_at is null and (expires_at is null or expires_at > now())
              order by name, created_at desc) o
      ), '[]') as overrides
    from tenants t
    left join plans p on p.slug = t.spec->>'plan' and p.deleted_at is null
    where t.id = ${tenantId}`;
}

/** The limits in force, from effectiveLimitsSql's row. */
export function limitsOf(row: LimitsRow): EffectiveLimits {
  const spec = row.plan_spec;
  const quotas: EffectiveLimits['quotas'] = {};
  const rate: EffectiveLimits['rate'] = {};
  for (const q of QUOTA_NAMES) {
    const v = spec?.quotas[q];
    if (v !== undefined) quotas[q] = { limit: typeof v === 'number' ? v : v.limit, source: 'plan' };
  }
  for (const c of RATE_CLASSES) {
    const v = spec?.rateLimits?.[c];
    if (v) rate[c] = { limit: v.limit, windowSeconds: v.windowSeconds, source: 'plan' };
  }
  for (const o of row.overrides) {
    const expiresAt = o.expires_at ? { expiresAt: new Date(o.expires_at).toISOString() } : {};
    if (o.name === 'rate.read' || o.name === 'rate.write') {
      const c = o.name === 'rate.read' ? 'read' : 'write';
      rate[c] = {
        limit: o.value,
        windowSeconds: rate[c]?.windowSeconds ?? DEFAULT_RATE_WINDOW,
        source: 'override',
        ...expiresAt,
      };
    } else {
      quotas[o.name] = { limit: o.value, source: 'override', ...expiresAt };
    }
  }
  return {
    tenantId: row.id,
    tenantSlug: row.slug,
    plan: row.plan,
    quotas,
    period: spec?.quotas.eventsPerPeriod?.period ?? 'month',
    rate,
  };
}

export type Usage = Record<QuotaName, number>;

/** Current use of every quota (counts of live rows; storage as reported by the providers). */
export async function currentUsage(trx: Trx, tenantId: string, period: Period): Promise<Usage> {
  const r = await sql<{ d: number; i: number; s: number | null; e: number; c: number; u: number }>`
    select
      (select count(*) from deployments where tenant_id = ${tenantId} and deleted_at is null) as d,
      (select count(*) from integration_resources where tenant_id = ${tenantId} and deleted_at is null) as i,
      (select storage_bytes from tenant_usage where tenant_id = ${tenantId}) as s,
      (select count(*) from outbox_events
        where tenant_id = ${tenantId} and time >= date_trunc(${period}, now())) as e,
      (select count(*) from reconcile_jobs where tenant_id = ${tenantId} and locked_until > now()) as c,
      (select coalesce(sum(coalesce((p.spec->>'maxReplicas')::int, (v.spec->>'replicas')::int)
                           * coalesce((v.spec->>'unitCost')::int, 1)), 0)::int
        from services v left join scaling_policies p on p.service_id = v.id and p.deleted_at is null
        where v.tenant_id = ${tenantId} and v.deleted_at is null) as u`.execute(trx);
  const row = r.rows[0]!;
  return {
    deployments: row.d,
    integrationResources: row.i,
    storageGiB: Math.ceil((row.s ?? 0) / 2 ** 30),
    eventsPerPeriod: row.e,
    concurrentOperations: row.c,
    computeUnits: row.u,
  };
}

/**
 * Takes the tenant's usage row lock (creating the row on first use) until the transaction ends.
 * Concurrency contract: `insert … on conflict do update` always locks the row, so every quota check of
 * one tenant runs after the previous one's transaction has ended, and counts what it committed: two
 * concurrent requests can't both take the last unit. Other tenants never wait.
 */
export async function lockUsage(trx: Trx, tenantId: string): Promise<number> {
  const r = await sql<{ version: number }>`
    insert into tenant_usage (tenant_id) values (${tenantId})
    on conflict (tenant_id) do update set tenant_id = excluded.tenant_id
    returning version`.execute(trx);
  return r.rows[0]!.version;
}

/** Appends the next version of the tenant's quota-and-usage history (caller holds the usage lock). */
export async function appendUsageHistory(
  trx: Trx,
  limits: EffectiveLimits,
  reason: string,
  requestId: string,
): Promise<void> {
  const usage = await currentUsage(trx, limits.tenantId, limits.period);
  await sql`
    with v as (
      update tenant_usage set version = version + 1, updated_at = now()
      where tenant_id = ${limits.tenantId} returning version
    )
    insert into usage_history (tenant_id, version, reason, plan, usage, limits, request_id)
    select ${limits.tenantId}, v.version, ${reason}, ${limits.plan}, ${JSON.stringify(usage)},
           ${JSON.stringify({ quotas: limits.quotas, rate: limits.rate })}, ${requestId}
    from v`.execute(trx);
}
