import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import { type RawBuilder, sql } from 'kysely';
import type { Logger } from 'pino';
import { registerAgentRoutes } from '../agent/agent.routes.js';
import { AgentService } from '../agent/agent.service.js';
import { registerAgentWebhookRoutes } from '../agent/agent-webhooks.routes.js';
import { AgentWebhooksService } from '../agent/agent-webhooks.service.js';
import type { AuditService } from '../audit/audit.service.js';
import { AuthorizedResourceCredentials } from '../authz/authorized-credentials.js';
import type { Config } from '../config/config.js';
import { ConsoleAuth, installConsoleSession, registerConsole } from '../console/console.routes.js';
import { asPlatform, type Db, platformDb, poolOf } from '../db/database.js';
import { type Clock, systemClock } from '../domain/clock.js';
import type { EventNotifier } from '../events/event-notifier.js';
import { registerEventRoutes } from '../events/events.routes.js';
import { EventsService } from '../events/events.service.js';
import { registerInputGuard } from '../http/input-guard.js';
import { onClientError, problem, sendProblem, toProblem } from '../http/problem.js';
import { errorResponses, isManifestBody, OBJECT_SCHEMAS, ProblemSchema } from '../http/schemas.js';
import { registerIdempotency } from '../idempotency/idempotency.hooks.js';
import { registerIdentityRoutes } from '../identity/identity.routes.js';
import { currentContext, installSecurity, type Security } from '../identity/security.js';
import { ServiceClientsService } from '../identity/service-clients.js';
import { registerServiceClientRoutes } from '../identity/service-clients.routes.js';
import { registerHttpObservability, registerMetricsRoute } from '../observability/http-observability.js';
import type { Metrics } from '../observability/metrics.js';
import type { RequestLog } from '../observability/request-log.js';
import { registerUsageRoutes } from '../placement/usage.routes.js';
import { UsageService } from '../placement/usage.service.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { RateLimiter, registerRateLimit } from '../ratelimit/rate-limiter.js';
import type { ObjectCache } from '../registry/object-cache.js';
import type { RegistryApi } from '../registry/registry.service.js';
import { ResourceCredentialsService } from '../registry/resource-credentials.js';
import { withPromotions } from '../releases/promotion-workflow.js';
import { PromotionsService } from '../releases/promotions.service.js';
import { registerReleaseRoutes } from '../releases/releases.routes.js';
import { registerDriftRoutes } from '../runtime/drift.routes.js';
import { secretCipherFor } from '../secrets/index.js';
import { registerFailoverRoutes } from '../tenant-migrations/failover.routes.js';
import { FailoverService } from '../tenant-migrations/failover.service.js';
import { workflowTypes } from '../tenant-migrations/migration-workflows.js';
import { registerMigrationRoutes } from '../tenant-migrations/migrations.routes.js';
import { MigrationsService } from '../tenant-migrations/migrations.service.js';
import { registerWebhookRoutes } from '../webhooks/webhooks.routes.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import { FreezesService } from '../workflows/freezes.js';
import { RetentionService } from '../workflows/retention.js';
import { registerRetentionRoutes } from '../workflows/retention.routes.js';
import { registerWorkflowRoutes } from '../workflows/workflows.routes.js';
import { WorkflowsService } from '../workflows/workflows.service.js';
import { registerActivityRoutes } from './routes/activity.routes.js';
import { registerApplyRoute } from './routes/apply.routes.js';
import { registerAuditRoutes } from './routes/audit.routes.js';
import { registerCredentialsRoutes } from './routes/credentials.routes.js';
import { registerHealthRoutes } from './routes/health.routes.js';
import { registerObjectRoutes } from './routes/objects.routes.js';

export interface ServerDeps {
  config: Config;
  db: Db;
  /** The authorization decorator around the registry (Security.guard). */
  registry: RegistryApi;
  audit: AuditService;
  security: Security;
  logger: Logger;
  metrics: Metrics;
  requestLog?: RequestLog;
  /** Server spans per request (when a tracer provider is registered). */
  tracing?: boolean;
  /** Per-tenant rate limits; by default one over `db` (PostgreSQL, shared by every API process). */
  rateLimiter?: RateLimiter;
  /** The event log (with its LISTEN notifier); absent: one that polls. */
  events?: EventsService;
  /** LISTEN notifications (src/events): wake the cell agents' long polls at once. */
  notifier?: EventNotifier;
  /** Workflows (src/workflows); absent: one over the lifecycle and promotion workflow types. */
  workflows?: WorkflowsService;
  /** Legal holds and purges; absent: one on the system clock. */
  retention?: RetentionService;
  /** The clock promotions read (src/releases); absent: the system's. */
  clock?: Clock;
  /** The registry's read cache of GET answers, emptied by this process's own changes. */
  objects?: ObjectCache;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

const YAML_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml', 'text/plain'];

export async function buildServer(deps: ServerDeps): Promise<FastifyInstance> {
  const { config, db, registry, security } = deps;
  const identify = currentContext;
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: config.bodyLimitBytes,
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    ajv: { customOptions: { removeAdditional: false } },
    // Fastify's and Node's own error answers are problem+json too.
    frameworkErrors: (err, request, reply) => sendProblem(reply, toProblem(err, request)),
    clientErrorHandler: onClientError,
    return503OnClosing: false,
  });
  // While closing: 503 problem+json (Fastify's own 503 is plain JSON), and the connection is closed.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    if (!closing) return;
    reply.header('connection', 'close');
    return sendProblem(
      reply,
      problem(503, 'server.closing', 'The server is shutting down; retry on another instance.', [], {
        instance: request.id,
      }),
    );
  });

  // Query strings, params and headers are checked with coercion. Bodies are checked as they are, without
  // coercion or defaults, except manifests: the services validate those (with pointers into the manifest),
  // so a manifest body schema (`manifestBody`) only documents it.
  const bodyAjv = new Ajv({ allErrors: true, strict: false, removeAdditional: false });
  addFormats.default(bodyAjv);
  // An absent body stands for `{}` where the schema requires no property (e.g. requeue everything).
  const bodyValidator = (schema: object) => {
    const validate = bodyAjv.compile(schema);
    const optional = !(schema as { required?: unknown[] }).required?.length;
    const check = (data: unknown) => ((data === undefined || data === null) && optional) || validate(data);
    return Object.defineProperty(check, 'errors', { get: () => validate.errors });
  };
  const ajv = new Ajv({
    coerceTypes: 'array',
    useDefaults: true,
    removeAdditional: false,
    allErrors: true,
    strict: false,
  });
  addFormats.default(ajv);
  app.setValidatorCompiler(({ schema, httpPart }) =>
    httpPart !== 'body' ? ajv.compile(schema) : isManifestBody(schema) ? () => true : bodyValidator(schema),
  );
  // Responses are serialised as they are; response schemas document them.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  // Metrics and the server span first, so they cover authentication too.
  registerHttpObservability(app, {
    metrics: deps.metrics,
    requestLog: deps.requestLog,
    tracing: deps.tracing ?? false,
  });
  // The console's session cookie stands for the bearer token on console routes (before authentication).
  const consoleAuth = await ConsoleAuth.create(config, db);
  installConsoleSession(app, consoleAuth);
  // Before any route: every route must declare its authorization action (fail closed).
  installSecurity(app, security, db, deps.objects);
  // Before any preHandler (tenant checks, idempotency) touches the database with the input.
  registerInputGuard(app);
  // The error answers every route can give by how it is reached, documented where they can happen:
  // 401 on authenticated routes, 429 on rate-limited ones, 414 where a path parameter can be too long.
  app.addHook('onRoute', (route) => {
    const response = (route.schema as { response?: Record<string, unknown> } | undefined)?.response;
    if (!response) return;
    const config = route.config as { public?: boolean; rateLimit?: boolean };
    const statuses = [
      ...(config.public ? [] : [401]),
      ...(!config.public && route.url.startsWith('/v1/') && config.rateLimit !== false ? [429] : []),
      ...(route.url.includes(':') ? [414] : []),
    ].filter((status) => !(status in response));
    Object.assign(response, errorResponses(...statuses));
  });

  app.addContentTypeParser(YAML_TYPES, { parseAs: 'string' }, (_req, body, done) => done(null, body));

  app.addSchema(ProblemSchema);
  for (const schema of Object.values(OBJECT_SCHEMAS)) app.addSchema(schema);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Tenantry API',
        version: '1.0.0',
        description:
          'Control plane for multi-tenant SaaS: customers, tenants, deployments, integration resources.',
        license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
      },
      servers: [{ url: '/' }],
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description:
              'A token of a trusted OIDC issuer or of the built-in issuer (`tenantry token create`).',
          },
        },
      },
      security: [{ bearer: [] }],
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  const pool = poolOf(db);
  if (pool) {
    deps.metrics.observePool(pool);
    app.addHook('onClose', async () => deps.metrics.forgetPool(pool));
  }
  const scalar = (query: RawBuilder<{ n: string }>) => async () =>
    Number((await asPlatform(db, (trx) => query.execute(trx))).rows[0]?.n ?? 0);
  deps.metrics.read(
    deps.metrics.queueDepth,
    scalar(sql`select count(*) as n from reconcile_jobs where run_after <= now()
      and (locked_until is null or locked_until < now())`),
  );
  deps.metrics.read(
    deps.metrics.eventBacklog,
    scalar(sql`select count(*) as n from webhook_deliveries where status = 'pending'`),
  );

  const rateLimiter = deps.rateLimiter ?? new RateLimiter(db, { cacheMs: config.rateLimitCacheMs });
  registerRateLimit(app, rateLimiter, identify);

  registerIdempotency(app, db, security);

  // Read-your-own-writes: whatever a request that can change state changed is forgotten before its
  // answer leaves, so the caller's next request sees it even before the NOTIFY arrives: the
  // identities it may have changed (sessions, elevations, tenants) and the objects it changed.
  // A route-level hook of the routes that can change state (none runs on a GET): route hooks run
  // after every app-level one, so after the idempotency hook's onSend has committed an atomic
  // write, and a read that raced with the write cannot put the old answer back (both caches
  // refuse fills begun before the forget).
  const objects = deps.objects;
  // On routes that report their changes (`reportsChanges`: every object write goes through the
  // change path, which adds it to `ctx.changed`), only those objects are forgotten; after any
  // other request that can change state, every object.
  // Identities likewise: a route that reports its changes forgets them only when a change could
  // alter one (`ctx.identityChanged`, set by the change path): an ordinary apply keeps its caller's
  // identity verified, one round trip fewer on the next request.
  const forgetChanges = async (request: FastifyRequest, _reply: unknown, payload: unknown) => {
    const ctx = request.ctx;
    const reported = ctx?.changed !== undefined && request.routeOptions.config.reportsChanges === true;
    if (!reported || ctx?.identityChanged) security.authenticator.identities.forgetAll();
    // Only a caller who got past authentication can have changed objects (and unauthenticated
    // requests cannot keep the object cache empty for everyone).
    if (ctx && objects) {
      if (reported && ctx.changed) objects.forget(ctx.changed);
      else objects.forgetAll();
    }
    return payload;
  };
  const reportChanges = async (request: FastifyRequest) => {
    if (request.ctx) request.ctx.changed = new Set();
  };
  app.addHook('onRoute', (route) => {
    if ([route.method].flat().every((m) => SAFE_METHODS.has(m))) return;
    if ((route.config as { reportsChanges?: boolean } | undefined)?.reportsChanges)
      route.preHandler = [reportChanges, ...[route.preHandler ?? []].flat()];
    route.onSend = [...[route.onSend ?? []].flat(), forgetChanges];
  });
  if (objects) app.addHook('onClose', async () => objects.close());

  app.setErrorHandler((err, request, reply) => {
    const p = toProblem(err, request);
    if (p.code === 'database.unavailable')
      request.log.warn({ err: (err as Error).message }, 'database unavailable');
    else if (p.status >= 500) request.log.error({ err }, 'request failed');
    return sendProblem(reply, p);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      problem(404, 'route.not_found', `No route ${request.method} ${request.url.split('?')[0]}.`, [], {
        instance: request.id,
      }),
    ),
  );

  const usage = new UsageService(db);
  // Readiness reads the migration bookkeeping, which only the platform role may read.
  registerHealthRoutes(app, platformDb(db) as never);
  registerIdentityRoutes(app, security);
  registerApplyRoute(app, registry, identify);
  registerObjectRoutes(app, registry, identify, config.pageSizeMax);
  registerCredentialsRoutes(
    app,
    new AuthorizedResourceCredentials(
      new ResourceCredentialsService(db, new SecretStore(db, secretCipherFor(db, config))),
      registry,
      security.authorizer,
      db,
    ),
    identify,
  );
  registerAuditRoutes(app, deps.audit, identify);
  registerActivityRoutes(app, db, registry, identify);
  const workflows =
    deps.workflows ??
    new WorkflowsService(
      db,
      withPromotions(workflowTypes(db), { db, clock: deps.clock ?? systemClock, recheckMs: 30_000 }),
    );
  registerWorkflowRoutes(app, workflows, new FreezesService(db), identify);
  registerRetentionRoutes(app, deps.retention ?? new RetentionService(db), identify);
  if (security.issuer)
    await registerServiceClientRoutes(app, new ServiceClientsService(db, security.issuer), identify);
  const migrations = new MigrationsService(db);
  registerMigrationRoutes(app, migrations, identify);
  const failovers = new FailoverService(db);
  registerFailoverRoutes(app, failovers, identify);
  const promotions = new PromotionsService(db, deps.clock ?? systemClock);
  registerReleaseRoutes(app, promotions, identify);
  registerUsageRoutes(app, usage, identify, rateLimiter);
  registerDriftRoutes(app, db, identify);
  registerMetricsRoute(app, deps.metrics);
  const agents = new AgentService(db, config.agent, security.issuer, security.authorizer, deps.notifier);
  registerAgentRoutes(app, agents, identify);
  registerAgentWebhookRoutes(
    app,
    agents,
    new AgentWebhooksService(db, config, deps.logger.child({ component: 'agent-webhooks' }), deps.notifier),
    identify,
  );
  const events = deps.events ?? new EventsService(db, config);
  const webhooks = new WebhooksService(db, registry);
  registerEventRoutes(app, events, identify, config);
  registerWebhookRoutes(app, webhooks, identify, config.pageSizeMax);
  await registerConsole(
    app,
    {
      config,
      registry,
      audit: deps.audit,
      security,
      events,
      webhooks,
      usage,
      workflows,
      migrations,
      failovers,
      promotions,
      agents,
    },
    consoleAuth,
  );
  app.decorate('tenantryConsole', consoleAuth);
  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());
  return app;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The operator console's sign-in (one-time links for the banner). */
    tenantryConsole: ConsoleAuth;
  }
}
