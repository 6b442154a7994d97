import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope, type Trx } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { mapDatabaseError, NotFoundError, ValidationError } from '../errors/errors.js';
import { writeInScope } from '../idempotency/idempotent-write.js';
import { enqueueComputeOf } from '../runtime/compute-quota.js';
import {
  appendUsageHistory,
  currentUsage,
  type EffectiveLimits,
  effectiveLimits,
  LIMIT_NAMES,
  type LimitName,
  lockUsage,
  QUOTA_NAMES,
  RATE_CLASSES,
} from './quotas.js';

export interface QuotaReport {
  name: string;
  used: number;
  limit: number | null;
  unit: string;
  source: 'plan' | 'override' | 'none';
  expiresAt?: string;
  period?: string;
}

export interface UsageReport {
  tenant: { uuid: string; slug: string };
  plan: string | null;
  quotas: QuotaReport[];
  rateLimits: {
    class: string;
    limit: number | null;
    windowSeconds: number | null;
    source: string;
    expiresAt?: string;
  }[];
  overrides: Override[];
  version: number;
}

export interface Override {
  id: string;
  name: LimitName;
  value: number;
  reason: string;
  createdBy: string;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
}

export interface OverrideInput {
  name: string;
  value: number;
  reason: string;
  /** ISO date-time, or seconds from now. */
  expiresAt?: string | undefined;
  expiresInSeconds?: number | undefined;
}

const UNITS: Record<string, string> = {
  deployments: 'deployments',
  integrationResources: 'resources',
  storageGiB: 'GiB',
  eventsPerPeriod: 'events',
  concurrentOperations: 'operations',
  computeUnits: 'compute units',
};

/** Usage against every quota, the history of quota and usage versions, and audited overrides. */
export class UsageService {
  constructor(private readonly db: Db) {}

  private async run<T>(ctx: RequestContext, work: (trx: Trx) => Promise<T>): Promise<T> {
    try {
      return await inScope(this.db, ctx.scope, work);
    } catch (err) {
      throw mapDatabaseError(err);
    }
  }

  /** A write: under a route's Idempotency-Key it commits with its answer (idempotent-write.ts). */
  private async write<T>(ctx: RequestContext, work: (trx: Trx) => Promise<T>): Promise<T> {
    try {
      return await writeInScope(this.db, ctx, work);
    } catch (err) {
      throw mapDatabaseError(err);
    }
  }

  private async tenant(trx: Trx, ref: string): Promise<{ id: string; slug: string }> {
    const r = await sql<{ id: string; slug: string }>`
      select id, slug from tenants where deleted_at is null
      and ${isUuid(ref) ? sql`id = ${ref.toLowerCase()}` : sql`slug = ${ref}`}`.execute(trx);
    const t = r.rows[0];
    if (!t) throw new NotFoundError('tenant.not_found', `Tenant "${ref}" does not exist.`, { ref });
    return t;
  }

  async usage(ctx: RequestContext, ref: string): Promise<UsageReport> {
    return this.run(ctx, async (trx) => {
      const t = await this.tenant(trx, ref);
      const limits = (await effectiveLimits(trx, t.id)) as EffectiveLimits;
      const used = await currentUsage(trx, t.id, limits.period);
      const version = await sql<{
        version: number;
      }>`select version from tenant_usage where tenant_id = ${t.id}`.execute(trx);
      return {
        tenant: { uuid: t.id, slug: t.slug },
        plan: limits.plan,
        quotas: QUOTA_NAMES.map((name) => {
          const l = limits.quotas[name];
          return {
            name,
            used: used[name],
            limit: l?.limit ?? null,
            unit: UNITS[name]!,
            source: l?.source ?? 'none',
            ...(l?.expiresAt ? { expiresAt: l.expiresAt } : {}),
            ...(name === 'eventsPerPeriod' ? { period: limits.period } : {}),
          };
        }),
        rateLimits: RATE_CLASSES.map((c) => {
          const l = limits.rate[c];
          return {
            class: c,
            limit: l?.limit ?? null,
            windowSeconds: l?.windowSeconds ?? null,
            source: l?.source ?? 'none',
            ...(l?.expiresAt ? { expiresAt: l.expiresAt } : {}),
          };
        }),
        overrides: await this.overridesOf(trx, t.id),
        version: version.rows[0]?.version ?? 0,
      };
    });
  }

  /** Every version of the tenant's quotas and usage, newest first (billing comparison). */
  async history(ctx: RequestContext, ref: string, limit = 100) {
    return this.run(ctx, async (trx) => {
      const t = await this.tenant(trx, ref);
      const r = await sql<{
        version: number;
        time: Date;
        reason: string;
        plan: string | null;
        usage: unknown;
        limits: unknown;
        request_id: string;
      }>`
        select version, time, reason, plan, usage, limits, request_id from usage_history
        where tenant_id = ${t.id} order by version desc limit ${limit}`.execute(trx);
      return r.rows.map((v) => ({
        version: v.version,
        time: v.time.toISOString(),
        reason: v.reason,
        plan: v.plan,
        usage: v.usage,
        limits: v.limits,
        requestId: v.request_id,
      }));
    });
  }

  /**
   * A temporary (or permanent) administrative override of one quota or rate limit. Audited in the
   * same transaction (an override that cannot be audited is not made) and versioned in the history.
   */
  async setOverride(ctx: RequestContext, ref: string, input: OverrideInput): Promise<Override> {
    if (!(LIMIT_NAMES as readonly string[]).includes(input.name))
      throw ValidationError.field('/name', 'override.unknown_limit', `one of ${LIMIT_NAMES.join(', ')}`);
    const expiresAt =
      input.expiresInSeconds !== undefined
        ? new Date(Date.now() + input.expiresInSeconds * 1000)
        : input.expiresAt !== undefined
          ? new Date(input.expiresAt)
          : null;
    if (expiresAt && (Number.isNaN(expiresAt.getTime()) || expiresAt.getTime() <= Date.now()))
      throw ValidationError.field(
        '/expiresAt',
        'override.expiry_invalid',
        'must be a date-time in the future',
      );
    return this.write(ctx, async (trx) => {
      const t = await this.tenant(trx, ref);
      await lockUsage(trx, t.id);
      const id = randomUUID();
      const r = await sql<OverrideRow>`
        insert into limit_overrides (tenant_id, id, name, value, reason, created_by, expires_at)
        values (${t.id}, ${id}, ${input.name}, ${input.value}, ${input.reason}, ${ctx.actor.principal}, ${expiresAt})
        returning *`.execute(trx);
      const o = toOverride(r.rows[0]!);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: t.id,
          action: 'limits.override',
          target: { kind: 'Tenant', id: t.id, slug: t.slug },
          before: null,
          after: o,
          outcome: 'success',
        }),
      );
      await appendUsageHistory(
        trx,
        (await effectiveLimits(trx, t.id))!,
        `override.${input.name}`,
        ctx.requestId,
      );
      // A new compute quota reaches the tenant's services now (src/runtime/compute-quota.ts).
      if (input.name === 'computeUnits') await enqueueComputeOf(trx, { tenantId: t.id });
      return o;
    });
  }

  async revokeOverride(ctx: RequestContext, ref: string, id: string): Promise<Override> {
    return this.write(ctx, async (trx) => {
      const t = await this.tenant(trx, ref);
      await lockUsage(trx, t.id);
      const r = isUuid(id)
        ? await sql<OverrideRow>`
            update limit_overrides set revoked_at = now()
            where tenant_id = ${t.id} and id = ${id.toLowerCase()} and revoked_at is null returning *`.execute(
            trx,
          )
        : { rows: [] };
      const row = r.rows[0];
      if (!row) throw new NotFoundError('override.not_found', `No active override ${id} for "${t.slug}".`);
      const o = toOverride(row);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: t.id,
          action: 'limits.override_revoke',
          target: { kind: 'Tenant', id: t.id, slug: t.slug },
          before: { ...o, revokedAt: null },
          after: o,
          outcome: 'success',
        }),
      );
      await appendUsageHistory(
        trx,
        (await effectiveLimits(trx, t.id))!,
        `override_revoke.${o.name}`,
        ctx.requestId,
      );
      if (o.name === 'computeUnits') await enqueueComputeOf(trx, { tenantId: t.id });
      return o;
    });
  }

  private async overridesOf(trx: Trx, tenantId: string): Promise<Override[]> {
    const r = await sql<OverrideRow>`
      select * from limit_overrides where tenant_id = ${tenantId}
      and revoked_at is null and (expires_at is null or expires_at > now()) order by created_at`.execute(trx);
    return r.rows.map(toOverride);
  }
}

interface OverrideRow {
  id: string;
  name: LimitName;
  value: number;
  reason: string;
  created_by: string;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
}

const toOverride = (r: OverrideRow): Override => ({
  id: r.id,
  name: r.name,
  value: r.value,
  reason: r.reason,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  expiresAt: r.expires_at?.toISOString() ?? null,
  revokedAt: r.revoked_at?.toISOString() ?? null,
});
