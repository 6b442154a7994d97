import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { AgentService, StatusReport } from './agent.service.js';
import type { CommandOutcome } from './agent-commands.js';
import { registerAgentDetailRoute } from './agent-detail.routes.js';
import { AGENT_OPS } from './agent-ops.js';

const Ref = Type.Object({
  ref: Type.String({ minLength: 1, maxLength: 300, description: 'cell slug or UUID' }),
});
const CellRef = Type.Object({ id: Type.String({ format: 'uuid' }), slug: Type.String() });
const CredentialSchema = Type.Object({
  credential: Type.String({ description: 'A bearer token of the cell agent (rotate it before expiresAt).' }),
  expiresAt: Type.String({ format: 'date-time' }),
  cell: CellRef,
  heartbeatIntervalMs: Type.Integer(),
});
const IndexEntry = Type.Object({ id: Type.String(), generation: Type.Integer(), hash: Type.String() });
/** An object of the cell's desired state, resolved as the agent's providers take it. */
const DesiredItem = Type.Object({
  id: Type.String(),
  generation: Type.Integer(),
  hash: Type.String(),
  deleted: Type.Boolean(),
  region: Type.String(),
  desired: Type.Unknown(),
});
const Uuid = Type.String({ format: 'uuid' });
const Report = Type.Object(
  {
    id: Uuid,
    generation: Type.Integer({ minimum: 1 }),
    phase: Type.Union(['Provisioning', 'Ready', 'Failed', 'Deleted'].map((p) => Type.Literal(p))),
    ready: Type.Object(
      {
        status: Type.Union([Type.Literal('True'), Type.Literal('False')]),
        reason: Type.String({ pattern: '^[A-Z][A-Za-z0-9]{0,63}$' }),
        message: Type.String({ maxLength: 2000 }),
      },
      { additionalProperties: false },
    ),
    drift: Type.Optional(Type.Array(Type.String({ maxLength: 500 }), { maxItems: 50 })),
  },
  { additionalProperties: false },
);

const bearerOf = (h: string | undefined) => h?.replace(/^Bearer /i, '') ?? '';

/**
 * Cell agents (src/agent): join tokens and revocation for operators; join, credential rotation,
 * the desired-state feed, status reports and heartbeats for agents. Agent routes are decided by
 * the service: the caller must hold the credential of the cell it names.
 */
export function registerAgentRoutes(
  app: FastifyInstance,
  agents: AgentService,
  identify: IdentityHook,
): void {
  // Waiting long polls end at once when the server closes, before the database goes.
  app.addHook('preClose', async () => agents.close());
  registerAgentDetailRoute(app, agents, identify);
  app.post<{ Params: { ref: string }; Body: { ttlSeconds?: number } | undefined }>(
    '/v1/cells/:ref/join-tokens',
    {
      config: { action: 'agent.join-token', decidedBy: 'service' },
      schema: {
        operationId: 'createJoinToken',
        summary: "Mints a one-time, short-lived join token for the cell's agent",
        tags: ['Agent'],
        params: Ref,
        body: Type.Object(
          { ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })) },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            token: Type.String(),
            cell: CellRef,
            expiresAt: Type.String({ format: 'date-time' }),
          }),
          ...errorResponses(400, 403, 404, 422, 503),
        },
      },
    },
    async (request, reply) => {
      const ctx = identify(request);
      const r = await agents.mintJoinToken(ctx, request.params.ref, request.body?.ttlSeconds);
      return reply.code(201).send(r);
    },
  );

  app.post<{ Params: { ref: string } }>(
    '/v1/cells/:ref/revoke-agent',
    {
      config: { action: 'agent.revoke', decidedBy: 'service' },
      schema: {
        operationId: 'revokeAgent',
        summary: "Revokes the cell's agent: its credential is refused from its next request",
        tags: ['Agent'],
        params: Ref,
        response: {
          200: Type.Object({ cell: CellRef, revokedAt: Type.String({ format: 'date-time' }) }),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request) => agents.revoke(identify(request), request.params.ref),
  );

  app.post<{ Body: { name?: string } | undefined }>(
    '/v1/agent/join',
    {
      config: { action: 'agent.join', decidedBy: 'service' },
      schema: {
        operationId: 'joinAgent',
        summary: 'Exchanges a join token (the bearer) for a cell agent credential',
        tags: ['Agent'],
        body: Type.Object(
          { name: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$' })) },
          { additionalProperties: false },
        ),
        response: { 200: CredentialSchema, ...errorResponses(400, 403, 422, 503) },
      },
    },
    async (request) =>
      agents.join(identify(request), bearerOf(request.headers.authorization), {
        ...(request.body?.name ? { name: request.body.name } : {}),
      }),
  );

  app.post(
    '/v1/agent/credential',
    {
      config: { action: 'agent.renew', decidedBy: 'service' },
      schema: {
        operationId: 'renewAgentCredential',
        summary: 'A fresh credential for an agent whose credential is still valid',
        tags: ['Agent'],
        response: { 200: CredentialSchema, ...errorResponses(403, 503) },
      },
    },
    async (request) => agents.renew(identify(request)),
  );

  app.get<{ Params: { ref: string }; Querystring: { wait: number } }>(
    '/v1/agent/:ref/desired-state',
    {
      config: { action: 'agent.pull', decidedBy: 'service' },
      schema: {
        operationId: 'getCellDesiredState',
        summary:
          "The cell's desired-state index (feed generation, content hash, a hash per object); with If-None-Match it waits for a change (long poll) and answers 304 if none came",
        tags: ['Agent'],
        params: Ref,
        querystring: Type.Object(
          {
            wait: Type.Integer({
              minimum: 0,
              maximum: 60,
              default: 0,
              description: 'seconds to wait for a change',
            }),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            generation: Type.Integer(),
            hash: Type.String(),
            items: Type.Array(IndexEntry),
            changed: Type.Optional(
              Type.Array(DesiredItem, {
                description:
                  'the objects whose hash differs from the index named by If-None-Match, when the server still knows that index (else the agent fetches them by id)',
              }),
            ),
          }),
          304: Type.Null(),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request, reply) => {
      const cellId = await agents.agentCell(identify(request), request.params.ref);
      const known = request.headers['if-none-match']?.replace(/^W\//, '').replace(/"/g, '') || undefined;
      const abort = new AbortController();
      request.raw.once('close', () => abort.abort());
      const r = await agents.index(cellId, known, known ? request.query.wait * 1000 : 0, abort.signal);
      if (r === 'unchanged') return reply.code(304).header('etag', `"${known}"`).send();
      return reply.header('etag', `"${r.hash}"`).send(r);
    },
  );

  app.post<{ Params: { ref: string }; Body: { ids?: string[] } | undefined }>(
    '/v1/agent/:ref/desired-state/items',
    {
      config: { action: 'agent.pull-items', decidedBy: 'service' },
      schema: {
        operationId: 'getCellDesiredItems',
        summary: "Objects of the agent's cell by id, resolved as its providers take them",
        tags: ['Agent'],
        params: Ref,
        body: Type.Object(
          { ids: Type.Optional(Type.Array(Uuid, { maxItems: 1000, uniqueItems: true })) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(DesiredItem),
          }),
          ...errorResponses(400, 403, 404, 422),
        },
      },
    },
    async (request) => {
      const cellId = await agents.agentCell(identify(request), request.params.ref);
      return { items: await agents.items(cellId, request.body?.ids ?? []) };
    },
  );

  app.post<{ Params: { ref: string }; Body: { reports?: StatusReport[] } | undefined }>(
    '/v1/agent/:ref/status',
    {
      config: { action: 'agent.report', decidedBy: 'service' },
      schema: {
        operationId: 'reportCellStatus',
        summary: "Observed status of objects of the agent's cell (stale generations are skipped)",
        tags: ['Agent'],
        params: Ref,
        body: Type.Object(
          { reports: Type.Optional(Type.Array(Report, { maxItems: 1000 })) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ accepted: Type.Integer(), stale: Type.Integer() }),
          ...errorResponses(400, 403, 404, 422),
        },
      },
    },
    async (request) => {
      const cellId = await agents.agentCell(identify(request), request.params.ref);
      return agents.report(cellId, request.body?.reports ?? []);
    },
  );

  app.get<{ Params: { ref: string }; Querystring: { wait: number; key?: string } }>(
    '/v1/agent/:ref/commands',
    {
      config: { action: 'agent.commands', decidedBy: 'service' },
      schema: {
        operationId: 'getCellAgentCommands',
        summary:
          "Data-plane work the control plane's workflows ask of the agent (a purge's deletes, …); waits up to `wait` seconds for one",
        tags: ['Agent'],
        params: Ref,
        querystring: Type.Object(
          {
            wait: Type.Integer({ minimum: 0, maximum: 60, default: 0, description: 'seconds to wait' }),
            key: Type.Optional(
              Type.String({
                pattern: '^[A-Za-z0-9_-]{43}$',
                description:
                  "the public half (x of an X25519 JWK) of the agent's key of the moment: what another region's agent hands it in a command (a migration's reader) is sealed for it",
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            commands: Type.Array(
              Type.Object({
                id: Uuid,
                op: Type.Union(AGENT_OPS.map((o) => Type.Literal(o))),
                input: Type.Unknown(),
                attempts: Type.Integer(),
              }),
            ),
          }),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request) => {
      const cellId = await agents.agentCell(identify(request), request.params.ref);
      const abort = new AbortController();
      request.raw.once('close', () => abort.abort());
      if (request.query.key) await agents.commandKey(cellId, request.query.key);
      return { commands: await agents.commands(cellId, request.query.wait * 1000, abort.signal) };
    },
  );

  app.post<{ Params: { ref: string; id: string }; Body: CommandOutcome & { attempts: number } }>(
    '/v1/agent/:ref/commands/:id/result',
    {
      config: { action: 'agent.command-result', decidedBy: 'service' },
      schema: {
        operationId: 'reportCellAgentCommand',
        summary: "The agent's result of a command of its cell (the first result counts)",
        tags: ['Agent'],
        params: Type.Object({ ref: Ref.properties.ref, id: Uuid }),
        body: Type.Union([
          Type.Object(
            { attempts: Type.Integer({ minimum: 1 }), ok: Type.Literal(true), output: Type.Unknown() },
            { additionalProperties: false },
          ),
          Type.Object(
            {
              attempts: Type.Integer({ minimum: 1 }),
              ok: Type.Literal(false),
              error: Type.Object(
                {
                  message: Type.String({ maxLength: 2000 }),
                  reason: Type.String({ pattern: '^[A-Z][A-Za-z0-9]{0,63}$' }),
                  retryable: Type.Boolean(),
                },
                { additionalProperties: false },
              ),
            },
            { additionalProperties: false },
          ),
        ]),
        response: {
          200: Type.Object({ accepted: Type.Boolean() }),
          ...errorResponses(400, 403, 404, 422),
        },
      },
    },
    async (request) => {
      const cellId = await agents.agentCell(identify(request), request.params.ref);
      const { attempts, ...outcome } = request.body;
      return agents.commandResult(cellId, request.params.id, attempts, outcome as CommandOutcome);
    },
  );

  app.post<{ Params: { ref: string } }>(
    '/v1/agent/:ref/heartbeat',
    {
      config: { action: 'agent.heartbeat', decidedBy: 'service' },
      schema: {
        operationId: 'agentHeartbeat',
        summary: "Renews the agent's lease; `resend` asks it to report every object again",
        tags: ['Agent'],
        params: Ref,
        response: {
          200: Type.Object({ connection: Type.Literal('Connected'), resend: Type.Boolean() }),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request) => {
      const ctx = identify(request);
      const cellId = await agents.agentCell(ctx, request.params.ref);
      return agents.heartbeat(cellId, ctx.sessionId, request.headers['user-agent']);
    },
  );
}
