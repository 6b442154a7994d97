import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { type Kysely, sql } from 'kysely';
import { pendingMigrations } from '../../db/database.js';

export function registerHealthRoutes(app: FastifyInstance, db: Kysely<unknown>): void {
  const Health = Type.Object({
    status: Type.String(),
    checks: Type.Optional(Type.Record(Type.String(), Type.String())),
  });
  app.get(
    '/healthz',
    {
      config: { public: true },
      schema: {
        operationId: 'healthz',
        security: [],
        summary: 'The process is up',
        tags: ['Health'],
        response: { 200: Health },
      },
    },
    async () => ({ status: 'ok' }),
  );
  app.get(
    '/readyz',
    {
      config: { public: true },
      schema: {
        operationId: 'readyz',
        security: [],
        summary: 'The database is reachable and migrations are applied',
        tags: ['Health'],
        response: { 200: Health, 503: Health },
      },
    },
    async (_request, reply) => {
      const checks: Record<string, string> = {};
      try {
        await sql`select 1`.execute(db);
        checks.database = 'ok';
        const pending = await pendingMigrations(db);
        checks.migrations = pending === 0 ? 'ok' : `${pending} pending`;
      } catch (err) {
        checks.database = `unreachable: ${(err as Error).message}`;
      }
      const ok = Object.values(checks).every((v) => v === 'ok');
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unavailable', checks });
    },
  );
}
