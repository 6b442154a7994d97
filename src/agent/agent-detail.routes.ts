import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { AgentService } from './agent.service.js';

const Time = Type.String({ format: 'date-time' });
const NullableTime = Type.Union([Time, Type.Null()]);

export const AgentDetailSchema = Type.Object({
  cell: Type.Object({ id: Type.String({ format: 'uuid' }), slug: Type.String() }),
  name: Type.String(),
  embedded: Type.Boolean({ description: "The embedded default's in-process agent" }),
  version: Type.Union([Type.String(), Type.Null()], {
    description: 'The version the agent says it runs (its User-Agent at its last heartbeat)',
  }),
  joinedAt: Time,
  lastSeenAt: Time,
  lease: Type.Object({
    heartbeatIntervalMs: Type.Integer(),
    connection: Type.Union([Type.Literal('Connected'), Type.Literal('Unknown')]),
    since: Time,
    expiresAt: Type.String({
      format: 'date-time',
      description: 'When the cell turns Unknown unless a heartbeat comes before',
    }),
  }),
  credential: Type.Object({
    state: Type.Union([Type.Literal('Valid'), Type.Literal('Expired'), Type.Literal('Revoked')]),
    expiresAt: Time,
    revokedAt: NullableTime,
    revokedBy: Type.Union([Type.String(), Type.Null()]),
  }),
  pendingCommands: Type.Array(
    Type.Object({
      id: Type.String({ format: 'uuid' }),
      op: Type.String(),
      state: Type.Union([Type.Literal('Pending'), Type.Literal('Running')]),
      attempts: Type.Integer(),
      createdAt: Time,
      claimedAt: NullableTime,
    }),
  ),
  objects: Type.Object({
    total: Type.Integer(),
    byPhase: Type.Record(Type.String(), Type.Integer()),
    notObserved: Type.Integer({
      description: 'Objects whose current generation the agent has not reported yet',
    }),
  }),
});

/** `GET /v1/cells/{ref}/agent`: the agent of a cell, for operators (registered by ./agent.routes.ts). */
export function registerAgentDetailRoute(
  app: FastifyInstance,
  agents: AgentService,
  identify: IdentityHook,
): void {
  app.get<{ Params: { ref: string } }>(
    '/v1/cells/:ref/agent',
    {
      config: { action: 'agent.read', decidedBy: 'service' },
      schema: {
        operationId: 'getCellAgent',
        summary:
          "The cell's agent: version, last heartbeat and lease, credential state, pending commands, objects by phase",
        tags: ['Agent'],
        params: Type.Object({
          ref: Type.String({ minLength: 1, maxLength: 300, description: 'cell slug or UUID' }),
        }),
        response: { 200: AgentDetailSchema, ...errorResponses(400, 403, 404) },
      },
    },
    async (request) => agents.detail(identify(request), request.params.ref),
  );
}
