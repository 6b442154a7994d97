import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { errorResponses } from '../http/schemas.js';
import { currentContext, type Security } from './security.js';

const SessionSchema = Type.Object({
  id: Type.String(),
  issuer: Type.String(),
  appId: Type.String(),
  tenantId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
  principal: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.String({ format: 'date-time' }),
  revokedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  revokedBy: Type.Union([Type.String(), Type.Null()]),
});

const GrantSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  principal: Type.String(),
  roles: Type.Array(Type.String()),
  reason: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.String({ format: 'date-time' }),
  endedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  endedBy: Type.Union([Type.String(), Type.Null()]),
  active: Type.Boolean(),
});

const Limit = Type.Object(
  { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })) },
  { additionalProperties: false },
);

/** Discovery and keys of the built-in issuer, the caller's envelope, sessions and break-glass. */
export function registerIdentityRoutes(app: FastifyInstance, security: Security): void {
  const { issuer } = security;
  if (issuer) {
    app.get(
      '/.well-known/openid-configuration',
      {
        config: { public: true },
        schema: {
          operationId: 'openidConfiguration',
          summary: "OIDC discovery metadata of Tenantry's built-in token issuer",
          tags: ['Identity'],
          security: [],
          response: {
            200: Type.Object(
              { issuer: Type.String(), jwks_uri: Type.String(), token_endpoint: Type.String() },
              { additionalProperties: true },
            ),
          },
        },
      },
      async (request) => issuer.openidConfiguration(`${request.protocol}://${request.host}`),
    );
    app.get(
      '/.well-known/jwks.json',
      {
        config: { public: true },
        schema: {
          operationId: 'jwks',
          summary: "Public keys of Tenantry's built-in token issuer (JWK Set)",
          tags: ['Identity'],
          security: [],
          response: {
            200: Type.Object({ keys: Type.Array(Type.Object({}, { additionalProperties: true })) }),
          },
        },
      },
      async (_request, reply) => reply.header('cache-control', 'public, max-age=300').send(issuer.jwks()),
    );
  }

  app.get(
    '/v1/whoami',
    {
      config: { action: 'identity.read' },
      schema: {
        operationId: 'whoami',
        summary: "The caller's identity envelope, as derived from its token",
        tags: ['Identity'],
        response: {
          200: Type.Object({
            principal: Type.Object({ subject: Type.String(), kind: Type.String() }),
            issuer: Type.String(),
            appId: Type.Union([Type.String(), Type.Null()]),
            tenantId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
            scope: Type.String(),
            sessionId: Type.Union([Type.String(), Type.Null()]),
            roles: Type.Array(Type.String()),
            correlationId: Type.String(),
            requestId: Type.String(),
            elevation: Type.Union([
              Type.Object({ id: Type.String(), expiresAt: Type.String() }),
              Type.Null(),
            ]),
          }),
          ...errorResponses(401),
        },
      },
    },
    async (request) => {
      const ctx = currentContext(request);
      return {
        principal: { subject: ctx.actor.principal, kind: ctx.actor.kind },
        issuer: ctx.issuer ?? '',
        appId: ctx.appId,
        tenantId: ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null,
        scope: ctx.scope.kind,
        sessionId: ctx.sessionId,
        roles: [...(ctx.roles ?? [])],
        correlationId: ctx.correlationId,
        requestId: ctx.requestId,
        elevation: ctx.elevation ?? null,
      };
    },
  );

  app.get(
    '/v1/sessions',
    {
      config: { action: 'session.read' },
      schema: {
        operationId: 'listSessions',
        summary: "Sessions (the caller's tenant's, or all for the platform), newest first",
        tags: ['Identity'],
        querystring: Limit,
        response: {
          200: Type.Object({ items: Type.Array(SessionSchema) }),
          ...errorResponses(400, 401, 403),
        },
      },
    },
    async (request) => ({
      items: await security.sessions.list(
        currentContext(request),
        (request.query as { limit: number }).limit,
      ),
    }),
  );

  app.delete(
    '/v1/sessions/:id',
    {
      config: { action: 'session.revoke', decidedBy: 'service' },
      schema: {
        operationId: 'revokeSession',
        summary: 'Revoke a session: tokens naming it are refused from the next request on',
        tags: ['Identity'],
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 200 }) }),
        response: { 200: SessionSchema, ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) =>
      security.sessions.revoke(currentContext(request), (request.params as { id: string }).id),
  );

  app.get(
    '/v1/break-glass',
    {
      config: { action: 'breakglass.read' },
      schema: {
        operationId: 'listBreakGlass',
        summary: 'Break-glass elevations, newest first',
        tags: ['Identity'],
        querystring: Limit,
        response: { 200: Type.Object({ items: Type.Array(GrantSchema) }), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => ({
      items: await security.breakGlass.list(
        currentContext(request),
        (request.query as { limit: number }).limit,
      ),
    }),
  );

  app.post(
    '/v1/break-glass',
    {
      config: { action: 'breakglass.request', decidedBy: 'service', idempotency: 'atomic' },
      schema: {
        operationId: 'startBreakGlass',
        summary: 'Break-glass: elevate the caller to platform-admin for a limited time, with a reason',
        tags: ['Identity'],
        body: Type.Object({
          reason: Type.String({ minLength: 10, maxLength: 1000 }),
          ttlSeconds: Type.Optional(Type.Integer({ minimum: 60 })),
        }),
        response: { 201: GrantSchema, ...errorResponses(400, 401, 403, 422) },
      },
    },
    async (request, reply) =>
      reply
        .code(201)
        .send(
          await security.breakGlass.start(
            currentContext(request),
            (request.body ?? {}) as { reason?: unknown; ttlSeconds?: unknown },
          ),
        ),
  );

  app.delete(
    '/v1/break-glass/:id',
    {
      config: { action: 'breakglass.end', decidedBy: 'service' },
      schema: {
        operationId: 'endBreakGlass',
        summary: 'End a break-glass elevation before it expires',
        tags: ['Identity'],
        params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
        response: { 200: GrantSchema, ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) =>
      security.breakGlass.end(currentContext(request), (request.params as { id: string }).id),
  );
}
