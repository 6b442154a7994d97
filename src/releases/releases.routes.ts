import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { PromotionsService } from './promotions.service.js';

const Actor = Type.Object({ principal: Type.String(), kind: Type.String() });
const PromotionFields = {
  id: Type.String({ format: 'uuid', description: 'also the id of its workflow' }),
  system: Type.String(),
  version: Type.String(),
  stage: Type.String(),
  pipeline: Type.String(),
  mode: Type.Union([Type.Literal('promote'), Type.Literal('rollback')]),
  state: Type.String({ description: 'AwaitingApproval, Running, Succeeded, Failed or Cancelled' }),
  requestedBy: Actor,
  author: Type.Union([Type.String(), Type.Null()], { description: "the release's author (who created it)" }),
  requiredApprovals: Type.Integer(),
  approvals: Type.Array(Type.Object({ principal: Type.String(), kind: Type.String(), at: Type.String() })),
  gates: Type.Unknown({ description: 'each gate with its result' }),
  waves: Type.Unknown({ description: 'wave number → startedAt, finishedAt' }),
  error: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
};
const PromotionSchema = Type.Object(PromotionFields);
const PromotionDetailSchema = Type.Object({
  ...PromotionFields,
  targets: Type.Array(
    Type.Object({
      tenant: Type.String(),
      deployment: Type.String(),
      wave: Type.Integer(),
      state: Type.String({
        description: 'Pending, Deferred, Updated, Verified, RolledBack, Skipped or Halted',
      }),
      reason: Type.Union([Type.String(), Type.Null()]),
      fromVersion: Type.Union([Type.String(), Type.Null()]),
      toVersion: Type.String(),
      deferredUntil: Type.Union([Type.String(), Type.Null()]),
    }),
  ),
});
const Ref = Type.String({ minLength: 1, maxLength: 300 });
const SystemName = Type.String({ pattern: '^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$' });
const Version = Type.String({ minLength: 5, maxLength: 64 });
const StageName = Type.String({ pattern: '^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$' });
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });
const WindowName = Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,62}$' });
const strict = { additionalProperties: false } as const;

/** Promotions, rollbacks, approvals, evidence, pins, maintenance windows, health reports (issue 21). */
export function registerReleaseRoutes(
  app: FastifyInstance,
  promotions: PromotionsService,
  identify: IdentityHook,
): void {
  app.post<{ Body: { system: string; version: string; stage: string } }>(
    '/v1/promotions',
    {
      config: { action: 'promotion.create' },
      schema: {
        operationId: 'createPromotion',
        summary:
          'Promotes a release (system@version) to a stage: starts at once, or once its approvals are in on a protected stage',
        tags: ['Release'],
        body: Type.Object({ system: SystemName, version: Version, stage: StageName }, strict),
        response: { 201: PromotionDetailSchema, ...errorResponses(400, 403, 404, 409, 422, 423) },
      },
    },
    async (request, reply) => {
      const p = await promotions.request(await identify(request), request.body);
      return reply.code(201).send(p);
    },
  );
  app.post<{ Body: { system: string; stage: string; to?: string } }>(
    '/v1/promotions/rollback',
    {
      config: { action: 'promotion.rollback' },
      schema: {
        operationId: 'rollbackStage',
        summary: 'Rolls a stage back to the version it ran before its last promotion (or to `to`)',
        tags: ['Release'],
        body: Type.Object({ system: SystemName, stage: StageName, to: Type.Optional(Version) }, strict),
        response: { 201: PromotionDetailSchema, ...errorResponses(400, 403, 404, 409, 422, 423) },
      },
    },
    async (request, reply) => {
      const p = await promotions.rollback(await identify(request), request.body);
      return reply.code(201).send(p);
    },
  );
  app.get<{ Querystring: { system?: string; state?: string; limit: number; cursor?: string } }>(
    '/v1/promotions',
    {
      config: { action: 'promotion.list' },
      schema: {
        operationId: 'listPromotions',
        summary: 'Promotions, newest first',
        tags: ['Release'],
        querystring: Type.Object(
          {
            system: Type.Optional(Ref),
            state: Type.Optional(
              Type.Union(
                ['AwaitingApproval', 'Running', 'Succeeded', 'Failed', 'Cancelled'].map((s) =>
                  Type.Literal(s),
                ),
              ),
            ),
            limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
            cursor: Type.Optional(
              Type.String({ format: 'uuid', description: 'nextCursor of the previous page' }),
            ),
          },
          strict,
        ),
        response: {
          200: Type.Object({
            items: Type.Array(PromotionSchema),
            nextCursor: Type.Union([Type.String({ format: 'uuid' }), Type.Null()], {
              description: 'The next page (older promotions), or null on the last page',
            }),
          }),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request) => promotions.list(await identify(request), request.query),
  );
  app.get<{ Params: { id: string } }>(
    '/v1/promotions/:id',
    {
      config: { action: 'promotion.read' },
      schema: {
        operationId: 'getPromotion',
        summary: 'A promotion with every tenant it covers (wave, state, reason)',
        tags: ['Release'],
        params: IdParams,
        response: { 200: PromotionDetailSchema, ...errorResponses(400, 403, 404) },
      },
    },
    async (request) => promotions.get(await identify(request), request.params.id),
  );
  app.post<{ Params: { id: string }; Body: { comment?: string } | undefined }>(
    '/v1/promotions/:id/approve',
    {
      config: { action: 'promotion.approve' },
      schema: {
        operationId: 'approvePromotion',
        summary: "Approves a promotion (four eyes: not the requester, not the release's author)",
        tags: ['Release'],
        params: IdParams,
        body: Type.Optional(Type.Object({ comment: Type.Optional(Type.String({ maxLength: 500 })) }, strict)),
        response: { 200: PromotionDetailSchema, ...errorResponses(400, 403, 404, 409, 422, 423) },
      },
    },
    async (request) => promotions.approve(await identify(request), request.params.id, request.body?.comment),
  );
  app.post<{ Params: { id: string } }>(
    '/v1/promotions/:id/cancel',
    {
      config: { action: 'promotion.cancel' },
      schema: {
        operationId: 'cancelPromotion',
        summary:
          'Cancels a promotion: awaiting approval, it ends; running, the tenants it updated are put back',
        tags: ['Release'],
        params: IdParams,
        response: { 200: PromotionDetailSchema, ...errorResponses(400, 403, 404, 409) },
      },
    },
    async (request) => promotions.cancel(await identify(request), request.params.id),
  );
  app.get<{ Params: { ref: string } }>(
    '/v1/releases/:ref/evidence',
    {
      config: { action: 'release.export' },
      schema: {
        operationId: 'getReleaseEvidence',
        summary:
          "A release's promotion evidence from the audit log: requests, approvals, gates, per-tenant steps, outcome",
        tags: ['Release'],
        params: Type.Object({ ref: Ref }),
        response: {
          200: Type.Object({ release: Type.String(), records: Type.Array(Type.Unknown()) }),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request) => promotions.evidence(await identify(request), request.params.ref),
  );

  app.get<{ Params: { tenant: string } }>(
    '/v1/tenants/:tenant/releases',
    {
      config: { action: 'tenant-release.read' },
      schema: {
        operationId: 'getTenantReleases',
        summary: "Which release each of a tenant's deployments runs; its pins and maintenance windows",
        tags: ['Release'],
        params: Type.Object({ tenant: Ref }),
        response: { 200: Type.Unknown(), ...errorResponses(400, 403, 404) },
      },
    },
    async (request) => promotions.tenantReleases(await identify(request), request.params.tenant),
  );
  app.put<{
    Params: { tenant: string; system: string };
    Body: { version: string; reason: string; until: string };
  }>(
    '/v1/tenants/:tenant/pins/:system',
    {
      config: { action: 'pin.set' },
      schema: {
        operationId: 'pinTenant',
        summary: 'Pins a tenant to a release of a system until a time: promotions skip it',
        tags: ['Release'],
        params: Type.Object({ tenant: Ref, system: SystemName }),
        body: Type.Object(
          {
            version: Version,
            reason: Type.String({ minLength: 1, maxLength: 500 }),
            until: Type.String({ format: 'date-time' }),
          },
          strict,
        ),
        response: { 200: Type.Unknown(), ...errorResponses(400, 403, 404, 422) },
      },
    },
    async (request) =>
      promotions.pin(await identify(request), request.params.tenant, {
        system: request.params.system,
        ...request.body,
      }),
  );
  app.delete<{ Params: { tenant: string; system: string } }>(
    '/v1/tenants/:tenant/pins/:system',
    {
      config: { action: 'pin.remove' },
      schema: {
        operationId: 'unpinTenant',
        summary: "Removes a tenant's pin",
        tags: ['Release'],
        params: Type.Object({ tenant: Ref, system: SystemName }),
        response: { 204: Type.Null(), ...errorResponses(400, 403, 404) },
      },
    },
    async (request, reply) => {
      await promotions.unpin(await identify(request), request.params.tenant, request.params.system);
      return reply.code(204).send();
    },
  );
  app.put<{
    Params: { tenant: string; name: string };
    Body: { startsAt: string; endsAt: string; reason: string };
  }>(
    '/v1/tenants/:tenant/maintenance-windows/:name',
    {
      config: { action: 'maintenance-window.set' },
      schema: {
        operationId: 'putMaintenanceWindow',
        summary: "Declares a customer's maintenance window: promotions defer the tenant until it ends",
        tags: ['Release'],
        params: Type.Object({ tenant: Ref, name: WindowName }),
        body: Type.Object(
          {
            startsAt: Type.String({ format: 'date-time' }),
            endsAt: Type.String({ format: 'date-time' }),
            reason: Type.String({ minLength: 1, maxLength: 500 }),
          },
          strict,
        ),
        response: { 200: Type.Unknown(), ...errorResponses(400, 403, 404, 422) },
      },
    },
    async (request) =>
      promotions.putWindow(await identify(request), request.params.tenant, request.params.name, request.body),
  );
  app.delete<{ Params: { tenant: string; name: string } }>(
    '/v1/tenants/:tenant/maintenance-windows/:name',
    {
      config: { action: 'maintenance-window.remove' },
      schema: {
        operationId: 'deleteMaintenanceWindow',
        summary: 'Removes a maintenance window',
        tags: ['Release'],
        params: Type.Object({ tenant: Ref, name: WindowName }),
        response: { 204: Type.Null(), ...errorResponses(400, 403, 404) },
      },
    },
    async (request, reply) => {
      await promotions.deleteWindow(await identify(request), request.params.tenant, request.params.name);
      return reply.code(204).send();
    },
  );
  app.post<{
    Params: { ref: string };
    Body: { version: string; readyReplicas: number; desiredReplicas: number; errorRate: number };
  }>(
    '/v1/deployments/:ref/health',
    {
      config: { action: 'deployment-health.report' },
      schema: {
        operationId: 'reportDeploymentHealth',
        summary: "The runtime's health report for a deployment (what promotion verification reads)",
        tags: ['Release'],
        params: Type.Object({ ref: Ref }),
        body: Type.Object(
          {
            version: Version,
            readyReplicas: Type.Integer({ minimum: 0, maximum: 100_000 }),
            desiredReplicas: Type.Integer({ minimum: 0, maximum: 100_000 }),
            errorRate: Type.Number({ minimum: 0, maximum: 1 }),
          },
          strict,
        ),
        response: { 204: Type.Null(), ...errorResponses(400, 403, 404, 422) },
      },
    },
    async (request, reply) => {
      await promotions.reportHealth(await identify(request), request.params.ref, request.body);
      return reply.code(204).send();
    },
  );
}
