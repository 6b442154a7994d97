import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Db } from '../../db/database.js';
import type { IdentityHook } from '../../http/identity.js';
import { errorResponses } from '../../http/schemas.js';
import { tenantActivity } from '../../observability/tenant-activity.js';
import type { RegistryApi } from '../../registry/registry.service.js';

const Day = Type.Object({
  day: Type.String({ format: 'date' }),
  requests: Type.Integer(),
  clientErrors: Type.Integer(),
  serverErrors: Type.Integer(),
  p50Ms: Type.Union([Type.Number(), Type.Null()]),
  p95Ms: Type.Union([Type.Number(), Type.Null()]),
  p99Ms: Type.Union([Type.Number(), Type.Null()]),
  changes: Type.Integer(),
  denied: Type.Integer(),
  failed: Type.Integer(),
});

export function registerActivityRoutes(
  app: FastifyInstance,
  db: Db,
  registry: RegistryApi,
  identify: IdentityHook,
): void {
  app.get<{ Params: { ref: string }; Querystring: { days: number } }>(
    '/v1/tenants/:ref/activity',
    {
      config: { action: 'activity.read' },
      schema: {
        operationId: 'tenantActivity',
        summary: "A tenant's activity per UTC day: requests, errors, latency, audited changes and denials",
        description: 'From SQL over the request log and the audit log; not from metrics.',
        tags: ['Tenant'],
        params: Type.Object({
          ref: Type.String({ minLength: 1, maxLength: 300, description: 'UUID or slug' }),
        }),
        querystring: Type.Object(
          { days: Type.Integer({ minimum: 1, maximum: 366, default: 30 }) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ tenant: Type.String({ format: 'uuid' }), days: Type.Array(Day) }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => {
      const ctx = await identify(request);
      const tenant = await registry.get(ctx, 'Tenant', request.params.ref, { includeDeleted: true });
      return {
        tenant: tenant.metadata.uuid,
        days: await tenantActivity(db, ctx, tenant.metadata.uuid, request.query.days),
      };
    },
  );
}
