import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ValidationError } from '../errors/errors.js';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { AgentService } from './agent.service.js';
import type { AgentPublicKey } from './agent-webhook-secrets.js';
import type { AgentWebhooksService, ReportedAttempt } from './agent-webhooks.service.js';

const Ref = Type.Object({
  ref: Type.String({ minLength: 1, maxLength: 300, description: 'cell slug or UUID' }),
});
const Uuid = Type.String({ format: 'uuid' });

/**
 * Webhook delivery by a cell's agent (issue 22): it claims its cell's due deliveries (their
 * endpoints' signing secrets sealed for the key it sends) and reports its attempts. Only the
 * credential of the cell named may call; another cell's deliveries are never claimed or settled.
 */
export function registerAgentWebhookRoutes(
  app: FastifyInstance,
  agents: AgentService,
  webhooks: AgentWebhooksService,
  identify: IdentityHook,
): void {
  app.addHook('preClose', async () => webhooks.close());

  app.post<{
    Params: { ref: string };
    Body: { publicKey?: AgentPublicKey; queues?: number; wait?: number };
  }>(
    '/v1/agent/:ref/webhooks/claim',
    {
      config: { action: 'agent.webhooks-claim', decidedBy: 'service' },
      schema: {
        operationId: 'claimCellWebhookDeliveries',
        summary:
          "Claims due webhook deliveries of the agent's cell (in order per endpoint and tenant, leased); waits up to `wait` seconds for one",
        tags: ['Agent'],
        params: Ref,
        body: Type.Object(
          {
            publicKey: Type.Optional(
              Type.Object(
                {
                  kty: Type.Literal('OKP'),
                  crv: Type.Literal('X25519'),
                  x: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }),
                },
                {
                  additionalProperties: false,
                  description:
                    "The agent's X25519 public key (JWK), required: signing secrets are sealed for it",
                },
              ),
            ),
            queues: Type.Optional(Type.Integer({ minimum: 1, maximum: 256, default: 32 })),
            wait: Type.Optional(Type.Integer({ minimum: 0, maximum: 60, default: 0 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            leaseMs: Type.Integer(),
            timeoutMs: Type.Integer(),
            deliveries: Type.Array(
              Type.Object({
                id: Type.String(),
                endpointId: Type.String(),
                stream: Type.String(),
                eventId: Type.String(),
                rank: Type.Integer(),
                attempt: Type.Integer(),
                url: Type.String(),
                body: Type.String({ description: 'the CloudEvent to send, as the bytes to sign' }),
                traceparent: Type.Union([Type.String(), Type.Null()]),
              }),
            ),
            secrets: Type.Record(Type.String(), Type.Union([Type.String(), Type.Null()]), {
              description: 'per endpoint: its signing secrets as a JWE sealed for publicKey',
            }),
          }),
          ...errorResponses(400, 403, 404, 422),
        },
      },
    },
    async (request) => {
      // The caller's credential is checked first: whoever may not call learns nothing of the body.
      const cellId = await agents.agentCell(identify(request), request.params.ref);
      const b = request.body;
      if (!b.publicKey)
        throw ValidationError.field(
          '/publicKey',
          'agent.public_key_required',
          "A claim needs the agent's X25519 public key: the signing secrets are sealed for it.",
        );
      const abort = new AbortController();
      request.raw.once('close', () => abort.abort());
      return webhooks.claim(cellId, b.publicKey, b.queues ?? 32, (b.wait ?? 0) * 1000, abort.signal);
    },
  );

  app.post<{ Params: { ref: string }; Body: { attempts?: ReportedAttempt[]; released?: string[] } }>(
    '/v1/agent/:ref/webhooks/attempts',
    {
      config: { action: 'agent.webhooks-report', decidedBy: 'service' },
      schema: {
        operationId: 'reportCellWebhookAttempts',
        summary:
          "The agent's webhook attempts and the claimed deliveries it did not attempt; the control plane decides retries and dead letters",
        tags: ['Agent'],
        params: Ref,
        body: Type.Object(
          {
            attempts: Type.Optional(
              Type.Array(
                Type.Object(
                  {
                    id: Uuid,
                    attempt: Type.Integer({ minimum: 1 }),
                    startedAt: Type.String({ format: 'date-time' }),
                    latencyMs: Type.Integer({ minimum: 0 }),
                    statusCode: Type.Union([Type.Integer({ minimum: 100, maximum: 599 }), Type.Null()]),
                    responseExcerpt: Type.Union([Type.String({ maxLength: 4096 }), Type.Null()]),
                    error: Type.Union([Type.String({ maxLength: 2000 }), Type.Null()]),
                    retryAfterMs: Type.Union([
                      Type.Integer({ minimum: 0, maximum: 86_400_000 }),
                      Type.Null(),
                    ]),
                  },
                  { additionalProperties: false },
                ),
                { maxItems: 5000 },
              ),
            ),
            released: Type.Optional(Type.Array(Uuid, { maxItems: 5000 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ accepted: Type.Integer(), stale: Type.Integer() }),
          // A report past the server's body limit (5,000 attempts with long excerpts can be) is a 413.
          ...errorResponses(400, 403, 404, 413, 422),
        },
      },
    },
    async (request) => {
      const cellId = await agents.agentCell(identify(request), request.params.ref);
      return webhooks.report(cellId, request.body.attempts ?? [], request.body.released ?? []);
    },
  );
}
