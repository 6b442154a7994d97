import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { FailoverService } from './failover.service.js';
import { Actor, Binding, movePlanSchema, TenantParams, TenantRecordParams } from './move.schemas.js';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

const StandbyAtStart = Type.Object({
  lagBytes: Type.Union([Type.Number(), Type.Null()]),
  lastSyncAt: Nullable(Type.String()),
  dataLossWindowSeconds: Type.Union([
    Type.Number({
      description: 'seconds between the last catch-up and the failover: writes in it may be lost',
    }),
    Type.Null(),
  ]),
});

const FailoverSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  tenantId: Type.String({ format: 'uuid' }),
  state: Type.String({ description: 'Running, FailedOver or Failed' }),
  workflowId: Type.String({
    format: 'uuid',
    description: 'the workflow running it (GET /v1/workflows/{id})',
  }),
  reason: Type.String(),
  from: Binding,
  to: Binding,
  standby: StandbyAtStart,
  fence: Type.Unknown({ description: "per database resource: whether the old primary's role lost LOGIN" }),
  fencedAt: Nullable(Type.String()),
  consistency: Type.Unknown({
    description:
      'post-failover checks: row counts per table against the last known, sequences, credentials, blobs',
  }),
  failedOverAt: Nullable(Type.String()),
  error: Nullable(Type.String()),
  actor: Actor,
  createdAt: Type.String(),
});

const StandbySchema = Type.Object({
  region: Type.String(),
  state: Type.String({ description: 'Establishing, Streaming, FailedOver or Failed' }),
  workflowId: Nullable(Type.String({ format: 'uuid' })),
  lagBytes: Type.Union([
    Type.Number({ description: 'WAL not yet confirmed by the standby at the last measurement' }),
    Type.Null(),
  ]),
  lagSeconds: Type.Union([Type.Number(), Type.Null()]),
  lastSyncAt: Nullable(Type.String({ description: 'the last moment the standby was seen caught up' })),
  measuredAt: Nullable(Type.String()),
  lastKnown: Type.Unknown({
    description: "the primary's row counts and sequence values at the last catch-up",
  }),
  blobs: Type.Unknown({ description: 'the last blob sync per container: blobs, bytes, copied, equal' }),
  error: Nullable(Type.String()),
});

const PlanSchema = movePlanSchema({ standby: StandbyAtStart });

export function registerFailoverRoutes(
  app: FastifyInstance,
  failovers: FailoverService,
  identify: IdentityHook,
): void {
  app.post<{
    Params: { ref: string };
    Querystring: { dryRun?: boolean };
    Body: { region?: string } | undefined;
  }>(
    '/v1/tenants/:ref/failover',
    {
      config: { action: 'tenant.failover' },
      schema: {
        operationId: 'startFailover',
        summary:
          "Promotes the tenant's standby in another region (its primary's data plane may be down) as a workflow: subscription detached, sequences continued, credentials rotated, placement switched, consistency checked; with dryRun=true shows the plan, the standby's lag and the policy verdicts and changes nothing",
        description:
          'Refusals: 409 failover.no_standby (none, or not streaming), 409 failover.lag_unknown (never seen caught up), 409 workflow.in_progress, 409 failover.same_region, 409 failover.standby_cell (the placement rules choose another cell than the one keeping the standby), 409 placement.no_capacity, 422 failover.not_standby_region, 422 placement.residency, 423 workflow.frozen.',
        tags: ['Workflow'],
        params: TenantParams,
        querystring: Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
        body: Type.Object(
          {
            region: Type.Optional(
              Type.String({ minLength: 1, maxLength: 63, description: "the standby's region (default)" }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: PlanSchema,
          202: FailoverSchema,
          ...errorResponses(400, 403, 404, 409, 422, 423),
        },
      },
    },
    async (request, reply) => {
      const ctx = await identify(request);
      const dryRun = request.query.dryRun === true;
      const out = await failovers.start(ctx, request.params.ref, request.body, { dryRun });
      return reply.code(dryRun ? 200 : 202).send(out);
    },
  );

  app.get<{ Params: { ref: string } }>(
    '/v1/tenants/:ref/standby',
    {
      config: { action: 'failover.read' },
      schema: {
        operationId: 'getStandby',
        summary:
          "The tenant's standby: region, state, replication lag (bytes, seconds), last sync, last blob sync",
        tags: ['Workflow'],
        params: TenantParams,
        response: { 200: StandbySchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => failovers.standby(await identify(request), request.params.ref),
  );

  app.get<{ Params: { ref: string } }>(
    '/v1/tenants/:ref/failovers',
    {
      config: { action: 'failover.list' },
      schema: {
        operationId: 'listFailovers',
        summary: "A tenant's failovers, newest first",
        tags: ['Workflow'],
        params: TenantParams,
        response: { 200: Type.Object({ items: Type.Array(FailoverSchema) }), ...errorResponses(400, 404) },
      },
    },
    async (request) => ({ items: await failovers.list(await identify(request), request.params.ref) }),
  );

  app.get<{ Params: { ref: string; id: string } }>(
    '/v1/tenants/:ref/failovers/:id',
    {
      config: { action: 'failover.read' },
      schema: {
        operationId: 'getFailover',
        summary: 'A failover: from and to, the standby lag and data-loss window, fence, consistency checks',
        tags: ['Workflow'],
        params: TenantRecordParams,
        response: { 200: FailoverSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => failovers.get(await identify(request), request.params.ref, request.params.id),
  );
}
