import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ValidationError } from '../errors/errors.js';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { DeliveryStatus, WebhooksService } from './webhooks.service.js';

const Params = Type.Object({
  ref: Type.String({ minLength: 1, maxLength: 300, description: 'UUID or slug' }),
});

const Attempt = Type.Object({
  attempt: Type.Integer(),
  trigger: Type.Union([Type.Literal('scheduled'), Type.Literal('manual')]),
  statusCode: Type.Union([Type.Integer(), Type.Null()]),
  latencyMs: Type.Integer(),
  responseExcerpt: Type.Union([Type.String(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
  startedAt: Type.String({ format: 'date-time' }),
});
const Delivery = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    eventId: Type.String({ format: 'uuid', description: 'also the webhook-id header' }),
    eventType: Type.String(),
    tenantId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
    sequence: Type.Integer(),
    status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('dead')]),
    attempts: Type.Integer(),
    nextAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    lastStatus: Type.Union([Type.Integer(), Type.Null()]),
    lastError: Type.Union([Type.String(), Type.Null()]),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    history: Type.Array(Attempt),
  },
  { $id: 'WebhookDelivery' },
);

export function registerWebhookRoutes(
  app: FastifyInstance,
  webhooks: WebhooksService,
  identify: IdentityHook,
  pageSizeMax: number,
): void {
  app.addSchema(Delivery);
  app.get(
    '/v1/webhooks/:ref/deliveries',
    {
      config: { action: 'webhook.read' },
      schema: {
        operationId: 'listWebhookDeliveries',
        summary: 'Deliveries of a webhook endpoint with every attempt (status code, latency, excerpt, error)',
        description: '`status=dead` is the dead letter.',
        tags: ['WebhookEndpoint'],
        params: Params,
        querystring: Type.Object(
          {
            status: Type.Optional(
              Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('dead')]),
            ),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: pageSizeMax, default: 50 })),
            cursor: Type.Optional(
              Type.String({ format: 'uuid', description: 'nextCursor of the previous page' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(Type.Ref('WebhookDelivery')),
            nextCursor: Type.Union([Type.String({ format: 'uuid' }), Type.Null()], {
              description: 'The next page (older deliveries), or null on the last page',
            }),
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => {
      const ctx = await identify(request);
      const { ref } = request.params as { ref: string };
      const q = request.query as { status?: DeliveryStatus; limit?: number; cursor?: string };
      return webhooks.deliveries(ctx, ref, { status: q.status, limit: q.limit ?? 50, cursor: q.cursor });
    },
  );

  app.post(
    '/v1/webhooks/:ref/requeue',
    {
      attachValidation: true,
      config: { action: 'webhook.write', idempotency: 'atomic' },
      schema: {
        operationId: 'requeueWebhookDeliveries',
        summary: 'Requeue dead-lettered deliveries of an endpoint (the given ones, or all)',
        tags: ['WebhookEndpoint'],
        params: Params,
        body: Type.Object(
          {
            deliveryIds: Type.Optional(
              Type.Array(Type.String({ format: 'uuid' }), { minItems: 1, maxItems: 1000, uniqueItems: true }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ requeued: Type.Array(Type.String({ format: 'uuid' })) }),
          ...errorResponses(400, 404, 409, 422),
        },
      },
    },
    async (request) => {
      const ctx = await identify(request);
      const { ref } = request.params as { ref: string };
      // The body schema (enforced) allows only a non-empty list of distinct delivery UUIDs; its errors
      // point at the list.
      if (
        request.validationError?.validation?.some((v: { instancePath: string }) =>
          v.instancePath.startsWith('/deliveryIds'),
        )
      )
        throw ValidationError.field(
          '/deliveryIds',
          'field.invalid',
          'must be a non-empty list of at most 1000 distinct delivery UUIDs',
        );
      if (request.validationError) throw request.validationError;
      const ids = (request.body as { deliveryIds?: string[] } | undefined)?.deliveryIds;
      return { requeued: await webhooks.requeue(ctx, ref, ids) };
    },
  );
}
