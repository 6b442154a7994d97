import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { MigrationsService } from './migrations.service.js';
import { Actor, Binding, movePlanSchema, TenantParams, TenantRecordParams } from './move.schemas.js';

const MigrationSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  tenantId: Type.String({ format: 'uuid' }),
  kind: Type.Union([Type.Literal('isolation'), Type.Literal('region')]),
  state: Type.String({ description: 'Running, CutOver, RolledBack, Retired or Failed' }),
  workflowId: Type.String({
    format: 'uuid',
    description: 'the workflow running it (GET /v1/workflows/{id})',
  }),
  rollbackWorkflowId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
  from: Binding,
  to: Binding,
  mode: Type.Union([Type.String({ description: 'logical-replication or freeze-copy' }), Type.Null()]),
  plan: Type.Unknown(),
  verification: Type.Unknown({
    description: 'per database resource: row counts and checksums of both sides',
  }),
  freeze: Type.Object({
    startedAt: Type.Union([Type.String(), Type.Null()]),
    endedAt: Type.Union([Type.String(), Type.Null()]),
    durationMs: Type.Union([Type.Integer(), Type.Null()]),
  }),
  cutOverAt: Type.Union([Type.String(), Type.Null()]),
  rollbackWindowSeconds: Type.Integer(),
  rollbackUntil: Type.Union([Type.String(), Type.Null()]),
  rollback: Type.Unknown(),
  rolledBackAt: Type.Union([Type.String(), Type.Null()]),
  retiredAt: Type.Union([Type.String(), Type.Null()]),
  retireWorkflowId: Type.Optional(Type.String({ format: 'uuid' })),
  error: Type.Union([Type.String(), Type.Null()]),
  actor: Actor,
  createdAt: Type.String(),
});

const PlanSchema = movePlanSchema({});

export function registerMigrationRoutes(
  app: FastifyInstance,
  migrations: MigrationsService,
  identify: IdentityHook,
): void {
  app.post<{
    Params: { ref: string };
    Querystring: { dryRun?: boolean };
    Body: { isolation?: 'shared' | 'pool' | 'silo'; region?: string; rollbackWindowSeconds?: number };
  }>(
    '/v1/tenants/:ref/migrations',
    {
      config: { action: 'tenant.migrate' },
      schema: {
        operationId: 'startMigration',
        summary:
          'Starts a tenancy-mode migration (`isolation`: pool → silo) or a region migration (`region`: database, blobs and topics to a cell of another allowed region) as a workflow; with dryRun=true shows the plan and the policy verdicts and changes nothing',
        tags: ['Workflow'],
        params: TenantParams,
        querystring: Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
        body: Type.Object(
          {
            isolation: Type.Optional(
              Type.Union([Type.Literal('shared'), Type.Literal('pool'), Type.Literal('silo')]),
            ),
            region: Type.Optional(Type.String({ minLength: 1, maxLength: 63 })),
            rollbackWindowSeconds: Type.Optional(
              Type.Integer({ minimum: 1, maximum: 90 * 24 * 3600, description: 'default 7 days' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: PlanSchema,
          202: MigrationSchema,
          ...errorResponses(400, 403, 404, 409, 422, 423),
        },
      },
    },
    async (request, reply) => {
      const ctx = await identify(request);
      const dryRun = request.query.dryRun === true;
      const out = await migrations.start(ctx, request.params.ref, request.body, { dryRun });
      return reply.code(dryRun ? 200 : 202).send(out);
    },
  );

  app.get<{ Params: { ref: string }; Querystring: { limit?: number; cursor?: string } }>(
    '/v1/tenants/:ref/migrations',
    {
      config: { action: 'migration.list' },
      schema: {
        operationId: 'listMigrations',
        summary: "A tenant's migrations, newest first, a page at a time",
        tags: ['Workflow'],
        params: TenantParams,
        querystring: Type.Object(
          {
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 100 })),
            cursor: Type.Optional(
              Type.String({ format: 'uuid', description: "the previous page's nextCursor" }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(MigrationSchema),
            nextCursor: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => migrations.list(await identify(request), request.params.ref, request.query),
  );

  app.get<{ Params: { ref: string; id: string } }>(
    '/v1/tenants/:ref/migrations/:id',
    {
      config: { action: 'migration.read' },
      schema: {
        operationId: 'getMigration',
        summary: 'A migration: plan, copy mode, verification, write freeze, cut-over and rollback window',
        tags: ['Workflow'],
        params: TenantRecordParams,
        response: { 200: MigrationSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => migrations.get(await identify(request), request.params.ref, request.params.id),
  );

  const actions = [
    {
      verb: 'retire',
      operationId: 'retireMigration',
      summary: "Drops a cut-over migration's kept source (schema, role, credentials); no rollback after this",
    },
    {
      verb: 'rollback',
      operationId: 'rollbackMigration',
      summary:
        'Returns the tenant to the source of a cut-over migration within its rollback window, with every write made since',
    },
  ] as const;
  for (const { verb, operationId, summary } of actions)
    app.post<{ Params: { ref: string; id: string } }>(
      `/v1/tenants/:ref/migrations/:id/${verb}`,
      {
        config: { action: `migration.${verb}` },
        schema: {
          operationId,
          summary,
          tags: ['Workflow'],
          params: TenantRecordParams,
          response: { 202: MigrationSchema, ...errorResponses(400, 403, 404, 409, 423) },
        },
      },
      async (request, reply) =>
        reply
          .code(202)
          .send(await migrations[verb](await identify(request), request.params.ref, request.params.id)),
    );
}
