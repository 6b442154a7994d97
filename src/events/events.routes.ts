import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config/config.js';
import type { IdentityHook } from '../http/identity.js';
import { errorResponses } from '../http/schemas.js';
import type { EventsService } from './events.service.js';

const CloudEventSchema = Type.Object(
  {
    specversion: Type.Literal('1.0'),
    id: Type.String({ format: 'uuid' }),
    source: Type.String(),
    type: Type.String(),
    subject: Type.String(),
    time: Type.String({ format: 'date-time' }),
    datacontenttype: Type.Literal('application/json'),
    tenantid: Type.Optional(Type.String({ format: 'uuid' })),
    sequence: Type.String({ pattern: '^[0-9]{20}$' }),
    correlationid: Type.String(),
    data: Type.Unknown(),
  },
  { $id: 'CloudEvent', description: 'CloudEvents 1.0, structured mode; schemas per type under docs/events/' },
);

const Query = (pageSizeMax: number) =>
  Type.Object(
    {
      tenant: Type.Optional(
        Type.String({
          minLength: 1,
          maxLength: 300,
          description: 'tenant slug or UUID, or "platform"; absent: every stream the caller may see',
        }),
      ),
      after: Type.Optional(
        Type.String({
          minLength: 1,
          maxLength: 64,
          description: 'resume after this position: a sequence (with tenant) or a cursor from this API',
        }),
      ),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: pageSizeMax, default: 100 })),
    },
    { additionalProperties: false },
  );

type EventsQuery = { tenant?: string; after?: string; limit?: number };

export function registerEventRoutes(
  app: FastifyInstance,
  events: EventsService,
  identify: IdentityHook,
  config: Config,
): void {
  app.addSchema(CloudEventSchema);

  app.get(
    '/v1/events',
    {
      config: { action: 'events.read' },
      schema: {
        operationId: 'listEvents',
        summary: 'Replay the event log from any position, oldest first',
        description:
          'With `tenant`, one gap-free stream: `after` is a sequence and `next` the last sequence returned. ' +
          'Without, every stream the caller may see, in commit order, with an opaque cursor.',
        tags: ['Events'],
        querystring: Query(config.pageSizeMax),
        response: {
          200: Type.Object({
            items: Type.Array(Type.Ref('CloudEvent')),
            next: Type.Union([Type.String(), Type.Null()], { description: 'pass as `after` to continue' }),
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => {
      const ctx = await identify(request);
      const q = request.query as EventsQuery;
      const sel = await events.selector(ctx, q.tenant);
      const page = await events.read(ctx, sel, q.after, q.limit ?? 100);
      return { items: page.entries.map((e) => e.event), next: page.cursor };
    },
  );

  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const close of open) close();
  });

  app.get(
    '/v1/events/stream',
    {
      config: { action: 'events.read' },
      schema: {
        operationId: 'streamEvents',
        summary: 'Live event stream (Server-Sent Events)',
        description:
          'Each event is sent as `id: <cursor>`, `event: <type>`, `data: <CloudEvent JSON>`. Reconnecting with ' +
          '`Last-Event-ID` (or `after`) resumes exactly after that event. Comment lines are heartbeats.',
        tags: ['Events'],
        querystring: Query(config.pageSizeMax),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 64 })) }),
        response: {
          200: {
            description: 'text/event-stream',
            content: { 'text/event-stream': { schema: Type.String() } },
          },
          ...errorResponses(400, 404),
        },
      },
    },
    async (request, reply) => {
      const ctx = await identify(request);
      const q = request.query as EventsQuery;
      const batch = q.limit ?? 100;
      const sel = await events.selector(ctx, q.tenant);
      const lastId = request.headers['last-event-id'];
      let cursor = (typeof lastId === 'string' && lastId !== '' ? lastId : undefined) ?? q.after;
      // The first read validates the position, so a bad one is still a problem+json answer.
      let page = await events.read(ctx, sel, cursor, batch);

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
        'x-request-id': request.id,
      });
      res.write(`retry: 2000\n: connected\n\n`);

      let closed = false;
      let wake: (() => void) | undefined;
      const close = () => {
        closed = true;
        wake?.();
      };
      open.add(close);
      request.raw.on('close', close);
      const unsubscribe = events.notifier?.subscribe('tenantry_events', (stream) => {
        if (sel.stream === null || stream === sel.stream) wake?.();
      });
      const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), config.events.heartbeatMs);
      try {
        while (!closed) {
          for (const e of page.entries) {
            res.write(`id: ${e.cursor}\nevent: ${e.event.type}\ndata: ${JSON.stringify(e.event)}\n\n`);
          }
          cursor = page.cursor ?? cursor;
          if (page.entries.length < batch) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, config.events.pollMs);
              wake = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            wake = undefined;
          }
          if (closed) break;
          page = await events.read(ctx, sel, cursor, batch);
        }
      } catch (err) {
        request.log.warn({ err }, 'event stream ended by an error');
      } finally {
        clearInterval(heartbeat);
        unsubscribe?.();
        open.delete(close);
        res.end();
      }
    },
  );
}
