import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { RetentionService } from './retention.js';

const Ref = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 100 }) });
const Reason = Type.Object(
  { reason: Type.String({ minLength: 1, maxLength: 500 }) },
  { additionalProperties: false },
);
const Actor = Type.Object({ principal: Type.String(), kind: Type.String() });
const Standing = Type.Object({
  tenantId: Type.String({ format: 'uuid' }),
  tenantSlug: Type.String(),
  lifecycle: Type.String(),
  retention: Type.Union([
    Type.Object({
      startedAt: Type.String(),
      windows: Type.Record(Type.String(), Type.Integer(), { description: 'days, per data class' }),
      ends: Type.Record(Type.String(), Type.String()),
      purgeAfter: Type.String(),
      purgedAt: Type.Union([Type.String(), Type.Null()]),
    }),
    Type.Null(),
  ]),
  legalHold: Type.Union([
    Type.Object({ id: Type.String(), reason: Type.String(), placedBy: Actor, placedAt: Type.String() }),
    Type.Null(),
  ]),
  exception: Type.Union(
    [
      Type.Object({
        id: Type.String(),
        reason: Type.String(),
        requestedBy: Actor,
        requestedAt: Type.String(),
        approvedBy: Type.Union([Actor, Type.Null()]),
        approvedAt: Type.Union([Type.String(), Type.Null()]),
      }),
      Type.Null(),
    ],
    { description: 'The governance exception to the retention window not yet used by a purge' },
  ),
});

/** Retention, legal hold and purge of a tenant (issue 18); platform only, every change audited. */
export function registerRetentionRoutes(
  app: FastifyInstance,
  retention: RetentionService,
  identify: IdentityHook,
): void {
  app.get<{ Params: { ref: string } }>(
    '/v1/tenants/:ref/retention',
    {
      config: { action: 'retention.read' },
      schema: {
        operationId: 'getTenantRetention',
        summary: "A tenant's retention windows, purge date and legal hold",
        tags: ['Tenant'],
        params: Ref,
        response: { 200: Standing, ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) => retention.get(identify(request), request.params.ref),
  );
  app.post<{ Params: { ref: string }; Body: { reason: string } }>(
    '/v1/tenants/:ref/legal-hold',
    {
      config: { action: 'tenant.hold' },
      schema: {
        operationId: 'placeLegalHold',
        summary: 'Places a legal hold: nothing of the tenant is purged until it is released',
        tags: ['Tenant'],
        params: Ref,
        body: Reason,
        response: { 200: Standing, ...errorResponses(400, 401, 403, 404, 409, 422) },
      },
    },
    async (request) => retention.placeHold(identify(request), request.params.ref, request.body.reason),
  );
  app.post<{ Params: { ref: string }; Body: { reason: string } }>(
    '/v1/tenants/:ref/legal-hold/release',
    {
      config: { action: 'tenant.release' },
      schema: {
        operationId: 'releaseLegalHold',
        summary: 'Releases the legal hold in force',
        tags: ['Tenant'],
        params: Ref,
        body: Reason,
        response: { 200: Standing, ...errorResponses(400, 401, 403, 404, 422) },
      },
    },
    async (request) => retention.releaseHold(identify(request), request.params.ref, request.body.reason),
  );
  app.post<{ Params: { ref: string }; Body: { reason: string } }>(
    '/v1/tenants/:ref/purge-exception',
    {
      config: { action: 'tenant.request-purge-exception' },
      schema: {
        operationId: 'requestPurgeException',
        summary:
          "Requests a governance exception to the tenant's retention window; once another principal approves it, a purge may run before the window ends (never under a legal hold)",
        tags: ['Tenant'],
        params: Ref,
        body: Reason,
        response: { 201: Standing, ...errorResponses(400, 401, 403, 404, 409, 422) },
      },
    },
    async (request, reply) =>
      reply
        .code(201)
        .send(await retention.requestException(identify(request), request.params.ref, request.body.reason)),
  );
  app.post<{ Params: { ref: string }; Body: { reason: string } }>(
    '/v1/tenants/:ref/purge-exception/approve',
    {
      config: { action: 'tenant.approve-purge-exception' },
      schema: {
        operationId: 'approvePurgeException',
        summary: 'Approves the open governance exception; the approver must not be its requester',
        tags: ['Tenant'],
        params: Ref,
        body: Reason,
        response: { 200: Standing, ...errorResponses(400, 401, 403, 404, 409, 422) },
      },
    },
    async (request) => retention.approveException(identify(request), request.params.ref, request.body.reason),
  );
  app.post<{ Params: { ref: string } }>(
    '/v1/tenants/:ref/purge',
    {
      config: { action: 'tenant.purge' },
      schema: {
        operationId: 'purgeTenant',
        summary:
          'Purges a deleted tenant once its retention window has passed and no legal hold is in force: its provider resources and secrets are removed, verified gone and recorded in the audit log',
        tags: ['Tenant'],
        params: Ref,
        response: {
          202: Type.Object({ workflowId: Type.String({ format: 'uuid' }), standing: Standing }),
          ...errorResponses(400, 401, 403, 404, 409, 423),
        },
      },
    },
    async (request, reply) => {
      const r = await retention.purge(identify(request), request.params.ref);
      return reply
        .code(202)
        .header('tenantry-workflow', r.workflowId)
        .header('link', `</v1/workflows/${r.workflowId}>; rel="monitor"`)
        .send(r);
    },
  );
}
