import type { FastifyInstance, FastifyRequest } from 'fastify';
import { auditRefusal } from '../authz/audit-refusal.js';
import { AuthorizedRegistryService, registryActions } from '../authz/authorized-registry.js';
import { Authorizer } from '../authz/authorizer.js';
import { checkTenantMentions, type TenantMention } from '../authz/tenant-spoofing.js';
import type { Config } from '../config/config.js';
import type { RequestContext } from '../context/request-context.js';
import type { Db } from '../db/database.js';
import { UnauthorizedError } from '../errors/errors.js';
import { correlationIdOf } from '../http/identity.js';
import type { Metrics } from '../observability/metrics.js';
import { KINDS } from '../registry/kinds/index.js';
import type { ObjectCache } from '../registry/object-cache.js';
import type { RegistryService } from '../registry/registry.service.js';
import { AuthFailureAudit } from './auth-failure-audit.js';
import { Authenticator } from './authenticator.js';
import { BreakGlassService } from './break-glass.js';
import { BuiltinIssuer, defaultTokenKeyFile } from './builtin-issuer.js';
import type { IdentityInvalidation } from './identity-cache.js';
import { SessionService } from './sessions.js';
import { TokenVerifier } from './token-verifier.js';

/** Everything identity and authorization, built once by the composition root. */
export interface Security {
  issuer: BuiltinIssuer | undefined;
  authenticator: Authenticator;
  authorizer: Authorizer;
  sessions: SessionService;
  breakGlass: BreakGlassService;
  /**
   * The bearer token for Tenantry's own outbound calls (webhooks, providers) to `audience`: Tenantry's
   * service identity from the built-in issuer, never a caller's token. Undefined when it is disabled.
   */
  outboundToken(audience: string): Promise<string | undefined>;
  /** Failed authentication, audited (rate-limited per source). */
  authFailures: AuthFailureAudit;
  /** Wraps a registry in the authorization decorator. */
  guard(registry: RegistryService): AuthorizedRegistryService;
}

export async function createSecurity(
  config: Config,
  db: Db,
  opts: {
    issuer?: BuiltinIssuer;
    metrics?: Metrics;
    /** NOTIFY of identity changes (the process's LISTEN connection): turns the identity cache on. */
    notifier?: IdentityInvalidation;
  } = {},
): Promise<Security> {
  const id = config.identity;
  const issuer =
    opts.issuer ??
    (id.issuer
      ? await BuiltinIssuer.load(
          id.issuer,
          id.audience,
          id.signingKeyFile ?? defaultTokenKeyFile(config.dataDir),
        )
      : undefined);
  const verifier = new TokenVerifier(
    id.trustedIssuers,
    id.clockSkewSeconds,
    id.jwksCooldownSeconds,
    issuer,
    id.tokenCacheSeconds,
  );
  const authorizer = new Authorizer(id.policyFile, opts.metrics);
  for (const a of registryActions(KINDS)) authorizer.registerAction(a);
  const authenticator = new Authenticator(
    db,
    verifier,
    id.sessionTtlSeconds,
    issuer?.issuer,
    id.identityCacheSeconds,
  );
  if (opts.notifier) authenticator.identities.attach(opts.notifier);
  return {
    issuer,
    authenticator,
    authorizer,
    sessions: new SessionService(db, authorizer),
    breakGlass: new BreakGlassService(db, authorizer, id.breakGlassMaxSeconds),
    outboundToken: async (audience) => issuer?.serviceToken(audience),
    authFailures: new AuthFailureAudit(db),
    guard: (registry) => new AuthorizedRegistryService(registry, authorizer, db),
  };
}

/** The request's identity envelope; set by the authentication hook before any handler runs. */
export function currentContext(request: FastifyRequest): RequestContext {
  if (!request.ctx) throw new UnauthorizedError('token.missing', 'This route needs a bearer token.');
  return request.ctx;
}

/** Log fields of the envelope (secret-safe: never the token). */
export function envelopeFields(ctx: RequestContext): Record<string, unknown> {
  return {
    tenant_id: ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null,
    app_id: ctx.appId,
    session_id: ctx.sessionId,
    principal: ctx.actor.principal,
    principal_kind: ctx.actor.kind,
    correlation_id: ctx.correlationId,
    request_id: ctx.requestId,
    ...(ctx.elevation ? { elevation: ctx.elevation.id } : {}),
  };
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);

/** Tenants the request names in its path, query or top-level JSON body fields `tenant`/`tenantId`. */
function requestMentions(request: FastifyRequest): TenantMention[] {
  const out: TenantMention[] = [];
  const params = (request.params ?? {}) as Record<string, unknown>;
  const query = (request.query ?? {}) as Record<string, unknown>;
  const tenantParam = request.routeOptions.config.tenantParam;
  for (const name of new Set(['tenant', 'tenantId', ...(tenantParam ? [tenantParam] : [])])) {
    const p = str(params[name]);
    if (p) out.push({ pointer: `/path/${name}`, ref: p });
    const q = str(query[name]);
    if (q) out.push({ pointer: `/query/${name}`, ref: q });
  }
  const body = request.body;
  if (body && typeof body === 'object' && !Array.isArray(body)) {
    for (const name of ['tenant', 'tenantId']) {
      const b = str((body as Record<string, unknown>)[name]);
      if (b) out.push({ pointer: `/${name}`, ref: b });
    }
  }
  // Manifests (JSON or YAML alike) are checked once parsed, by the registry decorator (manifestMentions).
  return out;
}

const isDocs = (url: string) => url === '/docs' || url.startsWith('/docs/');

/**
 * Installs authentication and route-level authorization; call before any route is registered.
 * - Start-up, fail closed: every route declares its action (`config: { action: '<area>.<verb>' }`)
 *   or is explicitly public (`config: { public: true }`; the API documentation is); otherwise
 *   registering it throws. The policies are validated against the schema of all actions once
 *   every route is known (onReady).
 * - onRequest: the bearer token becomes the identity envelope (`request.ctx`), or 401 problem+json
 *   with `WWW-Authenticate`. Log lines of the request carry the envelope's fields.
 * - preHandler: tenant spoofing (403 `tenant.spoofing`), then the route's action is decided on the
 *   caller's scope (403 `authz.denied`). Services then decide per object.
 * - onError: every refusal (403) of an authenticated request is audited, once.
 */
export function installSecurity(
  app: FastifyInstance,
  security: Security,
  db: Db,
  /** The API's read cache (tenant names the spoofing check resolves). */
  objects?: ObjectCache,
): void {
  app.addHook('onRoute', (route) => {
    route.config ??= {} as never;
    const config = route.config as { action?: string; public?: boolean };
    if (isDocs(route.url)) config.public = true;
    if (config.public) return;
    if (!config.action)
      throw new Error(
        `Route ${String(route.method)} ${route.url} declares no authorization action (config.action); refusing to start.`,
      );
    security.authorizer.registerAction(config.action);
  });
  app.addHook('onReady', async () => security.authorizer.seal());
  app.addHook('onClose', async () => security.authenticator.identities.close());

  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config;
    if (!request.routeOptions.url || config.public) return;
    try {
      request.ctx = await security.authenticator.authenticate(request.headers.authorization, {
        requestId: request.id,
        correlationId: correlationIdOf(request),
      });
    } catch (err) {
      if (err instanceof UnauthorizedError) {
        reply.header('www-authenticate', `Bearer error="invalid_token", error_description="${err.code}"`);
        // A known principal with an unknown tenant is audited by the authenticator itself.
        if (err.code !== 'token.tenant_unknown')
          await security.authFailures.record({
            source: request.ip,
            code: err.code,
            route: `${request.method} ${request.routeOptions.url}`,
            requestId: request.id,
            correlationId: correlationIdOf(request),
          });
      }
      throw err;
    }
    // Every later line of the request (the handler's, "request completed") carries the envelope.
    // Not when no line can be written: a child logger serialises its fields at once (~5% of a GET).
    if (request.log.level !== 'silent') {
      request.log = request.log.child(envelopeFields(request.ctx));
      reply.log = request.log;
    }
  });

  // Any 403 of an authenticated request is audited (services that decide themselves included).
  app.addHook('onError', async (request, _reply, err) => {
    if (request.ctx)
      await auditRefusal(db, request.ctx, err, request.routeOptions.config.action ?? 'unknown');
  });

  app.addHook('preHandler', async (request) => {
    const ctx = request.ctx;
    const config = request.routeOptions.config;
    if (!ctx || !config.action) return;
    try {
      await checkTenantMentions(db, ctx, requestMentions(request), objects);
      if (config.decidedBy !== 'service')
        security.authorizer.authorize(ctx, config.action, {
          kind: 'Route',
          id: `${request.method} ${request.routeOptions.url}`,
          tenantId: ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null,
          customerId: ctx.customerId ?? null,
        });
    } catch (err) {
      await auditRefusal(db, ctx, err, config.action);
      throw err;
    }
  });
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The authorization action of the route, `<area>.<verb>`; required unless `public`. */
    action?: string;
    /** No token needed (health, discovery, documentation). */
    public?: boolean;
    /** A path parameter that names a tenant (checked against the caller's tenant). */
    tenantParam?: string;
    /** The service decides on the real resource; the route-level decision is skipped. */
    decidedBy?: 'service';
    /**
     * Every registry object the route writes is reported in `ctx.changed` (the change path and
     * placement add them), so the read cache forgets only those after it (src/api/server.ts).
     */
    reportsChanges?: boolean;
  }
  interface FastifyRequest {
    /** The identity envelope of an authenticated request. */
    ctx?: RequestContext;
  }
}
