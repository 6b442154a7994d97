import { context, propagation, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { FastifyInstance } from 'fastify';
import type { Metrics } from './metrics.js';
import type { RequestLog } from './request-log.js';
import { identityAttributes, tracer } from './tracing.js';

export interface HttpObservability {
  metrics: Metrics;
  requestLog?: RequestLog | undefined;
  /** Start a server span per request (only worth it when a tracer provider is registered). */
  tracing: boolean;
}

/** HTTP metrics, server spans and the tenants' request log. */
export function registerHttpObservability(app: FastifyInstance, o: HttpObservability): void {
  if (o.tracing) {
    app.addHook('onRequest', (request, _reply, done) => {
      const parent = propagation.extract(context.active(), request.headers);
      const span = tracer().startSpan(
        `${request.method}`,
        {
          kind: SpanKind.SERVER,
          attributes: { 'http.request.method': request.method, 'url.path': request.url },
        },
        parent,
      );
      request.span = span;
      context.with(trace.setSpan(parent, span), done);
    });
  }
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const seconds = reply.elapsedTime / 1000;
    o.metrics.httpDuration.observe(
      { method: request.method, route, status_code: String(reply.statusCode) },
      seconds,
    );
    // The identity envelope, once authentication established it (src/identity/security.ts).
    const ctx = request.ctx;
    const span = request.span;
    if (span) {
      if (ctx) span.setAttributes(identityAttributes(ctx));
      span.updateName(`${request.method} ${route}`);
      span.setAttributes({ 'http.route': route, 'http.response.status_code': reply.statusCode });
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    if (ctx?.scope.kind === 'tenant' && o.requestLog) {
      o.requestLog.record({
        time: new Date(),
        tenantId: ctx.scope.tenantId,
        method: request.method,
        route,
        status: reply.statusCode,
        durationMs: reply.elapsedTime,
        correlationId: ctx.correlationId,
      });
    }
  });
}

/** `GET /metrics`: the Prometheus exposition. */
export function registerMetricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.get(
    '/metrics',
    {
      config: { action: 'metrics.read' },
      schema: {
        operationId: 'metrics',
        summary: 'Prometheus metrics (text exposition format)',
        tags: ['Health'],
        response: {
          200: {
            description: 'Prometheus text format',
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
        },
      },
    },
    async (_request, reply) =>
      reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
}

declare module 'fastify' {
  interface FastifyRequest {
    span?: Span | undefined;
  }
}
