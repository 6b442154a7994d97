import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ValidationError } from '../errors/errors.js';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { FreezesService } from './freezes.js';
import { WORKFLOW_STATES } from './workflow.js';
import type { WorkflowsService } from './workflows.service.js';

const Step = Type.Object({
  position: Type.Integer(),
  name: Type.String(),
  state: Type.String({ description: 'Pending, Running, Completed, Failed or Compensated' }),
  attempts: Type.Integer(),
  startedAt: Type.Union([Type.String(), Type.Null()]),
  endedAt: Type.Union([Type.String(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
});

const WorkflowFields = {
  id: Type.String({ format: 'uuid' }),
  tenantId: Type.String({ format: 'uuid' }),
  type: Type.String({ description: 'e.g. lifecycle.suspend' }),
  state: Type.Union(WORKFLOW_STATES.map((s) => Type.Literal(s))),
  input: Type.Unknown(),
  actor: Type.Object({ principal: Type.String(), kind: Type.String() }),
  requestId: Type.String(),
  correlationId: Type.String(),
  error: Type.Union([Type.String(), Type.Null()]),
  attempts: Type.Integer({ description: 'failed attempts of the current step' }),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
};
const WorkflowSchema = Type.Object(WorkflowFields);
const WorkflowDetailSchema = Type.Object({
  ...WorkflowFields,
  tenantSlug: Type.Union([Type.String(), Type.Null()]),
  steps: Type.Array(Step),
});
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });

const FreezeSchema = Type.Object({
  name: Type.String(),
  scope: Type.Union([Type.Literal('platform'), Type.Literal('region'), Type.Literal('cell')]),
  target: Type.Union([Type.String(), Type.Null()]),
  allow: Type.Array(Type.String()),
  reason: Type.String(),
  startsAt: Type.String(),
  endsAt: Type.Union([Type.String(), Type.Null()]),
  createdBy: Type.Object({ principal: Type.String(), kind: Type.String() }),
});
const FreezeName = Type.Object({ name: Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,62}$' }) });
type FreezeBody = {
  scope: 'platform' | 'region' | 'cell';
  target?: string;
  allow?: string[];
  reason: string;
  endsAt?: string;
};

export function registerWorkflowRoutes(
  app: FastifyInstance,
  workflows: WorkflowsService,
  freezes: FreezesService,
  identify: IdentityHook,
): void {
  app.get(
    '/v1/freezes',
    {
      config: { action: 'freeze.list' },
      schema: {
        operationId: 'listFreezes',
        summary: 'Freezes in force ("stop the line")',
        tags: ['Workflow'],
        response: { 200: Type.Object({ items: Type.Array(FreezeSchema) }) },
      },
    },
    async (request) => {
      await identify(request);
      return { items: await freezes.list() };
    },
  );
  app.put<{ Params: { name: string }; Body: FreezeBody }>(
    '/v1/freezes/:name',
    {
      config: { action: 'freeze.declare' },
      schema: {
        operationId: 'declareFreeze',
        summary:
          'Declares a freeze: new workflows of the tenants it covers are refused (423), except the types it allows',
        tags: ['Workflow'],
        params: FreezeName,
        body: Type.Object(
          {
            scope: Type.Union([Type.Literal('platform'), Type.Literal('region'), Type.Literal('cell')]),
            target: Type.Optional(
              Type.String({ minLength: 1, maxLength: 100, description: 'region slug or cell UUID' }),
            ),
            allow: Type.Optional(
              Type.Array(Type.String({ maxLength: 100 }), {
                maxItems: 20,
                description: 'workflow types, e.g. lifecycle.resume',
              }),
            ),
            reason: Type.String({ minLength: 1, maxLength: 500 }),
            endsAt: Type.Optional(Type.String({ format: 'date-time' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: FreezeSchema, ...errorResponses(400, 403, 422) },
      },
    },
    async (request) => {
      const ctx = await identify(request);
      const b = request.body;
      if (b.scope !== 'platform' && !b.target)
        throw ValidationError.field(
          '/target',
          'freeze.target_required',
          `a ${b.scope} freeze names its ${b.scope}`,
        );
      return freezes.put(ctx, request.params.name, b);
    },
  );
  app.delete<{ Params: { name: string } }>(
    '/v1/freezes/:name',
    {
      config: { action: 'freeze.lift' },
      schema: {
        operationId: 'liftFreeze',
        summary: 'Lifts a freeze',
        tags: ['Workflow'],
        params: FreezeName,
        response: { 204: Type.Null(), ...errorResponses(400, 403, 404) },
      },
    },
    async (request, reply) => {
      await freezes.lift(await identify(request), request.params.name);
      return reply.code(204).send();
    },
  );

  app.get<{ Querystring: { tenant?: string; state?: string; limit: number; cursor?: string } }>(
    '/v1/workflows',
    {
      config: { action: 'workflow.list' },
      schema: {
        operationId: 'listWorkflows',
        summary: 'Workflows (lifecycle transitions), newest first',
        tags: ['Workflow'],
        querystring: Type.Object(
          {
            tenant: Type.Optional(
              Type.String({ minLength: 1, maxLength: 300, description: 'tenant UUID or slug' }),
            ),
            state: Type.Optional(Type.String({ maxLength: 20, description: WORKFLOW_STATES.join(' | ') })),
            limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
            cursor: Type.Optional(
              Type.String({ format: 'uuid', description: 'nextCursor of the previous page' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(WorkflowSchema),
            nextCursor: Type.Union([Type.String({ format: 'uuid' }), Type.Null()], {
              description: 'The next page (older workflows), or null on the last page',
            }),
          }),
          ...errorResponses(400, 404, 422),
        },
      },
    },
    async (request) => {
      const ctx = await identify(request);
      return workflows.list(ctx, request.query);
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/workflows/:id',
    {
      config: { action: 'workflow.read' },
      schema: {
        operationId: 'getWorkflow',
        summary: 'A workflow with its steps (state, attempts, start, end, error)',
        tags: ['Workflow'],
        params: IdParams,
        response: { 200: WorkflowDetailSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => workflows.get(await identify(request), request.params.id),
  );

  for (const verb of ['retry', 'cancel'] as const) {
    app.post<{ Params: { id: string } }>(
      `/v1/workflows/:id/${verb}`,
      {
        config: { action: `workflow.${verb}`, idempotency: 'atomic' },
        schema: {
          operationId: `${verb}Workflow`,
          summary:
            verb === 'retry'
              ? 'Runs the failed step of a Waiting workflow again'
              : 'Cancels an open workflow: its completed steps are undone and it ends Cancelled',
          tags: ['Workflow'],
          params: IdParams,
          response: { 200: WorkflowDetailSchema, ...errorResponses(400, 404, 409) },
        },
      },
      async (request) => {
        const ctx = await identify(request);
        return verb === 'retry'
          ? workflows.retry(ctx, request.params.id)
          : workflows.cancel(ctx, request.params.id);
      },
    );
  }
}
