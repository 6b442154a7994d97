import type { FastifyInstance, FastifyRequest } from 'fastify';
import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, platformDb } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import type { IdentityHook } from '../http/identity.js';
import { problem, sendProblem } from '../http/problem.js';
import { effectiveLimits, type RateClass } from '../placement/quotas.js';
import { type RateDecision, takeToken } from './take-token.js';

/**
 * Which tenant a request counts against. Until verified identities land, that is the caller's
 * scope tenant, else the tenant the request targets: `/v1/tenants/{ref}/…`, `?tenant=`, or the
 * `spec.tenant` / `spec.scope.tenant` of a one-manifest body. Swap it for the verified tenant later.
 */
export type TenantKeyOf = (request: FastifyRequest, ctx: RequestContext) => string | undefined;

export const requestTenant: TenantKeyOf = (request, ctx) => {
  if (ctx.scope.kind === 'tenant') return ctx.scope.tenantId;
  const url = request.routeOptions.url ?? '';
  const params = request.params as Record<string, unknown> | undefined;
  if (url.startsWith('/v1/tenants/:ref') && typeof params?.ref === 'string') return params.ref;
  const query = request.query as Record<string, unknown> | undefined;
  if (typeof query?.tenant === 'string') return query.tenant;
  const body = request.body as { spec?: { tenant?: unknown; scope?: { tenant?: unknown } } } | undefined;
  const spec = body && typeof body === 'object' && !Array.isArray(body) ? body.spec : undefined;
  const t = spec?.tenant ?? spec?.scope?.tenant;
  return typeof t === 'string' ? t : undefined;
};

interface Cached {
  until: number;
  tenantId: string | null;
  rate: Partial<Record<RateClass, { limit: number; windowSeconds: number }>>;
}

export const methodClass = (method: string): RateClass =>
  method === 'GET' || method === 'HEAD' || method === 'OPTIONS' ? 'read' : 'write';

/**
 * Per-tenant, per-method-class rate limits from the tenant's plan (and its active overrides). The
 * tenant's limits are cached in memory for `cacheMs` (so a request to a tenant without limits, or a
 * platform request that targets no tenant, costs no database round trip); each limited request
 * takes one GCRA token in PostgreSQL, shared by every API process.
 */
export class RateLimiter {
  private readonly cache = new Map<string, Cached>();

  constructor(
    private readonly db: Db,
    private readonly opts: { cacheMs: number; tenantOf?: TenantKeyOf },
  ) {}

  get tenantOf(): TenantKeyOf {
    return this.opts.tenantOf ?? requestTenant;
  }

  /** The tenant's id and rate limits, cached; null id: no such tenant. */
  async limitsOf(ref: string): Promise<Cached> {
    const hit = this.cache.get(ref);
    const now = Date.now();
    if (hit && hit.until > now) return hit;
    const entry = await asPlatform(this.db, async (trx) => {
      const r = await sql<{ id: string }>`
        select id from tenants where deleted_at is null
        and ${isUuid(ref) ? sql`id = ${ref.toLowerCase()}` : sql`slug = ${ref}`}`.execute(trx);
      const id = r.rows[0]?.id;
      if (!id) return { until: now + this.opts.cacheMs, tenantId: null, rate: {} };
      const limits = await effectiveLimits(trx, id);
      // An expiring override ends the cache entry early.
      const expiries = Object.values(limits?.rate ?? {})
        .map((l) => (l.expiresAt ? Date.parse(l.expiresAt) : Number.POSITIVE_INFINITY))
        .concat(now + this.opts.cacheMs);
      return { until: Math.min(...expiries), tenantId: id, rate: limits?.rate ?? {} };
    });
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(ref, entry);
    return entry;
  }

  /** Forget cached limits (after an override or a plan change made by this process). */
  invalidate(): void {
    this.cache.clear();
  }

  async check(ref: string, cls: RateClass): Promise<RateDecision | undefined> {
    const { tenantId, rate } = await this.limitsOf(ref);
    const l = rate[cls];
    if (!tenantId || !l) return undefined;
    // Buckets of every tenant, taken before any scope is known: the platform role's (migration 0013).
    return takeToken(platformDb(this.db), tenantId, cls, l.limit, l.windowSeconds);
  }
}

/** The IETF draft headers (draft-ietf-httpapi-ratelimit-headers): the policy, and what is left of it. */
export function rateLimitHeaders(cls: RateClass, d: RateDecision): Record<string, string> {
  return {
    'ratelimit-policy': `"${cls}";q=${d.limit};w=${d.windowSeconds}`,
    ratelimit: `"${cls}";r=${d.remaining};t=${d.resetSeconds}`,
  };
}

export function registerRateLimit(app: FastifyInstance, limiter: RateLimiter, identify: IdentityHook): void {
  app.addHook('preHandler', async (request, reply) => {
    if (!request.routeOptions.url?.startsWith('/v1/')) return;
    // Recovery operations (limit overrides) must work when the tenant's allowance is used up.
    if ((request.routeOptions.config as { rateLimit?: boolean }).rateLimit === false) return;
    const ctx = await identify(request);
    const ref = limiter.tenantOf(request, ctx);
    if (ref === undefined) return;
    const cls = methodClass(request.method);
    let d: RateDecision | undefined;
    try {
      d = await limiter.check(ref, cls);
    } catch (err) {
      // The limiter fails open: a request is not refused because its bucket could not be read.
      request.log.warn({ err }, 'rate limiter unavailable; request not limited');
      return;
    }
    if (!d) return;
    for (const [h, v] of Object.entries(rateLimitHeaders(cls, d))) reply.header(h, v);
    if (!d.allowed) {
      reply.header('retry-after', String(d.resetSeconds));
      return sendProblem(
        reply,
        problem(
          429,
          'rate_limit.exceeded',
          `The tenant's ${cls} rate limit (${d.limit} per ${d.windowSeconds}s) is used up; retry in ${d.resetSeconds}s.`,
          [],
          {
            instance: request.id,
            details: {
              class: cls,
              limit: d.limit,
              windowSeconds: d.windowSeconds,
              retryAfter: d.resetSeconds,
            },
          },
        ),
      );
    }
  });
}
