import { context, propagation, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RequestContext } from '../changes/request-context.js';
import type { Metrics } from './metrics.js';
import type { RequestLog } from './request-log.js';
import { identityAttributes, tracer } from './tracing.js';

export interface HttpObservability {
  metrics: Metrics;
  requestLog?: RequestLog | undefined;
  /** Start a server span per request (only worth it when a tracer provider is registered). */
  tracing: boolean;
}

/** The canonical log fields of a request, the same on every line it logs. */
export function logFields(ctx: RequestContext): Record<string, string | null> {
  return {
    request_id: ctx.requestId,
    correlation_id: ctx.correlationId,
    tenant_id: ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null,
    app_id: ctx.appId,
    session_id: ctx.sessionId,
  };
}

/**
 * Once a request's identity is known: its log lines (the request's and the reply's, so the
 * completion line too) carry the canonical fields, its span the identity attributes, and the
 * request log its tenant.
 */
export function observeIdentity(request: FastifyRequest, reply: FastifyReply, ctx: RequestContext): void {
  const fields = logFields(ctx);
  request.log = request.log.child(fields);
  reply.log = request.log;
  request.span?.setAttributes(identityAttributes(ctx));
  if (ctx.scope.kind === 'tenant') request.tenantId = ctx.scope.tenantId;
}

/** HTTP metrics, server spans, the tenants' request log, and `GET /metrics`. */
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
    const span = request.span;
    if (span) {
      span.updateName(`${request.method} ${route}`);
      span.setAttributes({ 'http.route': route, 'http.response.status_code': reply.statusCode });
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    if (request.tenantId && o.requestLog) {
      o.requestLog.record({
        time: new Date(),
        tenantId: request.tenantId,
        method: request.method,
        route,
        status: reply.statusCode,
        durationMs: reply.elapsedTime,
        correlationId: request.identity?.correlationId ?? request.id,
      });
    }
  });

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
      reply.header('content-type', o.metrics.registry.contentType).send(await o.metrics.registry.metrics()),
  );
}

declare module 'fastify' {
  interface FastifyRequest {
    span?: Span | undefined;
    /** The tenant whose request this is (a tenant-scoped caller), for the request log. */
    tenantId?: string | undefined;
    /** The verified identity, once established. */
    identity?: RequestContext | undefined;
  }
}
