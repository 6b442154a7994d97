import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
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

export function registerWorkflowRoutes(
  app: FastifyInstance,
  workflows: WorkflowsService,
  identify: IdentityHook,
): void {
  app.get<{ Querystring: { tenant?: string; state?: string; limit: number } }>(
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
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ items: Type.Array(WorkflowSchema) }),
          ...errorResponses(400, 404, 422),
        },
      },
    },
    async (request) => {
      const ctx = await identify(request);
      return { items: await workflows.list(ctx, request.query) };
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
        config: { action: `workflow.${verb}` },
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
