import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ValidationError } from '../errors/errors.js';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { RateLimiter } from '../ratelimit/rate-limiter.js';
import { LIMIT_NAMES } from './quotas.js';
import type { UsageService } from './usage.service.js';

const RefParams = Type.Object({
  ref: Type.String({ minLength: 1, maxLength: 300, description: 'UUID or slug' }),
});
const Limit = Type.Union([Type.Integer(), Type.Null()]);
const OverrideSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  value: Type.Integer(),
  reason: Type.String(),
  createdBy: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  revokedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
});
const OverrideBody = Type.Object(
  {
    name: Type.Union(LIMIT_NAMES.map((n) => Type.Literal(n))),
    value: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }),
    reason: Type.String({ minLength: 1, maxLength: 500 }),
    expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
    expiresInSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 31_536_000 })),
  },
  { additionalProperties: false },
);

export function registerUsageRoutes(
  app: FastifyInstance,
  usage: UsageService,
  identify: IdentityHook,
  limiter: RateLimiter,
): void {
  app.get(
    '/v1/tenants/:ref/usage',
    {
      config: { action: 'usage.read' },
      schema: {
        operationId: 'getTenantUsage',
        summary: "A tenant's usage against every quota of its plan and overrides, and its rate limits",
        tags: ['Tenant'],
        params: RefParams,
        response: {
          200: Type.Object({
            tenant: Type.Object({ uuid: Type.String({ format: 'uuid' }), slug: Type.String() }),
            plan: Type.Union([Type.String(), Type.Null()]),
            quotas: Type.Array(
              Type.Object({
                name: Type.String(),
                used: Type.Integer(),
                limit: Limit,
                unit: Type.String(),
                source: Type.String(),
                expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
                period: Type.Optional(Type.String()),
              }),
            ),
            rateLimits: Type.Array(
              Type.Object({
                class: Type.String(),
                limit: Limit,
                windowSeconds: Limit,
                source: Type.String(),
                expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
              }),
            ),
            overrides: Type.Array(OverrideSchema),
            version: Type.Integer(),
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => usage.usage(await identify(request), (request.params as { ref: string }).ref),
  );

  app.get(
    '/v1/tenants/:ref/usage/history',
    {
      config: { action: 'usage.read' },
      schema: {
        operationId: 'getTenantUsageHistory',
        summary: "Versions of a tenant's quotas and usage, newest first (billing comparison)",
        tags: ['Tenant'],
        params: RefParams,
        querystring: Type.Object(
          { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(
              Type.Object({
                version: Type.Integer(),
                time: Type.String({ format: 'date-time' }),
                reason: Type.String(),
                plan: Type.Union([Type.String(), Type.Null()]),
                usage: Type.Unknown(),
                limits: Type.Unknown(),
                requestId: Type.String(),
              }),
            ),
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => ({
      items: await usage.history(
        await identify(request),
        (request.params as { ref: string }).ref,
        Number((request.query as { limit?: number }).limit ?? 100),
      ),
    }),
  );

  app.post(
    '/v1/tenants/:ref/limit-overrides',
    {
      attachValidation: true,
      config: { action: 'limits.override', rateLimit: false, idempotency: 'atomic' },
      schema: {
        operationId: 'createLimitOverride',
        summary: 'Override one quota or rate limit of a tenant, optionally until a time (audited)',
        tags: ['Tenant'],
        params: RefParams,
        body: OverrideBody,
        response: { 201: OverrideSchema, ...errorResponses(400, 404, 422) },
      },
    },
    async (request, reply) => {
      // The body schema (enforced) says the fields and their types; an unknown limit keeps its own code.
      const name = (request.body as { name?: unknown } | undefined)?.name;
      if (
        request.validationError &&
        typeof name === 'string' &&
        !(LIMIT_NAMES as readonly string[]).includes(name)
      )
        throw ValidationError.field('/name', 'override.unknown_limit', `one of ${LIMIT_NAMES.join(', ')}`);
      if (request.validationError) throw request.validationError;
      const body = request.body as Static<typeof OverrideBody>;
      const o = await usage.setOverride(await identify(request), (request.params as { ref: string }).ref, {
        name: body.name,
        value: body.value,
        reason: body.reason,
        expiresAt: body.expiresAt,
        expiresInSeconds: body.expiresInSeconds,
      });
      limiter.invalidate();
      return reply.code(201).send(o);
    },
  );

  app.delete(
    '/v1/tenants/:ref/limit-overrides/:id',
    {
      config: { action: 'limits.override', rateLimit: false },
      schema: {
        operationId: 'revokeLimitOverride',
        summary: 'Revoke a limit override before it expires (audited)',
        tags: ['Tenant'],
        params: Type.Object({ ref: RefParams.properties.ref, id: Type.String({ maxLength: 64 }) }),
        response: { 200: OverrideSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const { ref, id } = request.params as { ref: string; id: string };
      const o = await usage.revokeOverride(await identify(request), ref, id);
      limiter.invalidate();
      return o;
    },
  );
}
