import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope } from '../db/database.js';
import { mapDatabaseError } from '../errors/errors.js';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';

const DriftFindingSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  tenantUuid: Type.String({ format: 'uuid' }),
  kind: Type.String(),
  objectUuid: Type.String({ format: 'uuid' }),
  name: Type.String(),
  drift: Type.Array(Type.String()),
  openedAt: Type.String({ format: 'date-time' }),
  resolvedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  resolvedBy: Type.Union([Type.String(), Type.Null()]),
});
const Query = Type.Object(
  {
    tenant: Type.Optional(Type.String({ minLength: 1, maxLength: 300, description: 'tenant UUID or slug' })),
    state: Type.Optional(Type.Union([Type.Literal('open'), Type.Literal('resolved'), Type.Literal('all')])),
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  },
  { additionalProperties: false },
);

/** Drift findings, newest first; a tenant sees only its own (row-level security). */
export async function listDrift(
  db: Db,
  ctx: RequestContext,
  q: { tenant?: string; state?: 'open' | 'resolved' | 'all'; limit: number },
) {
  try {
    return await inScope(db, ctx.scope, async (trx) => {
      const r = await sql<{
        id: string;
        tenant_id: string;
        object_kind: string;
        object_id: string;
        object_slug: string;
        drift: string[];
        opened_at: Date;
        resolved_at: Date | null;
        resolved_by: string | null;
      }>`
        select f.* from drift_findings f
        where (${q.tenant ?? null}::text is null
               or f.tenant_id in (select id from tenants where slug = ${q.tenant ?? null} or id::text = ${q.tenant ?? null}))
          and (${q.state ?? 'all'} = 'all' or (f.resolved_at is null) = (${q.state ?? 'all'} = 'open'))
        order by f.opened_at desc, f.id limit ${q.limit}`.execute(trx);
      return r.rows.map((f) => ({
        id: f.id,
        tenantUuid: f.tenant_id,
        kind: f.object_kind,
        objectUuid: f.object_id,
        name: f.object_slug,
        drift: f.drift,
        openedAt: f.opened_at.toISOString(),
        resolvedAt: f.resolved_at?.toISOString() ?? null,
        resolvedBy: f.resolved_by,
      }));
    });
  } catch (err) {
    throw mapDatabaseError(err);
  }
}

export function registerDriftRoutes(app: FastifyInstance, db: Db, identify: IdentityHook): void {
  app.get<{ Querystring: { tenant?: string; state?: 'open' | 'resolved' | 'all'; limit: number } }>(
    '/v1/drift',
    {
      config: { action: 'drift.list' },
      schema: {
        operationId: 'listDriftFindings',
        summary: 'Drift findings: observed runtime state that differed from desired, opened and resolved',
        tags: ['Service'],
        querystring: Query,
        response: {
          200: Type.Object({ items: Type.Array(DriftFindingSchema) }),
          ...errorResponses(400, 422),
        },
      },
    },
    async (request) => ({ items: await listDrift(db, await identify(request), request.query) }),
  );
}
