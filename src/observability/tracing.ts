import {
  type Attributes,
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { RequestContext } from '../context/request-context.js';

export const tracer = () => trace.getTracer('tenantry', '0.1.0');

export interface Tracing {
  shutdown(): Promise<void>;
}

/**
 * Registers the global tracer provider (with the W3C trace-context propagator and an async-local
 * context manager). With no processor given, spans go to OTLP/HTTP, whose endpoint comes from the
 * standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables. Off by
 * default: without a provider every span below is a no-op. The SDK and the exporter are loaded here,
 * not with this module: a server without tracing does not carry them (~9 MiB of RSS).
 */
export async function startTracing(opts: {
  instanceId: string;
  processors?: SpanProcessor[];
}): Promise<Tracing> {
  const [
    { OTLPTraceExporter },
    { resourceFromAttributes },
    { BatchSpanProcessor },
    { NodeTracerProvider },
    { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION },
  ] = await Promise.all([
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/semantic-conventions'),
  ]);
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: 'tenantry',
      [ATTR_SERVICE_VERSION]: '0.1.0',
      'service.instance.id': opts.instanceId,
    }),
    spanProcessors: opts.processors ?? [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  provider.register();
  return {
    async shutdown() {
      await provider.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}

/** The identity envelope as span attributes: tenant, app, session, correlation; never a secret. */
export function identityAttributes(ctx: RequestContext): Attributes {
  return {
    'tenantry.tenant_id': ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : 'platform',
    'tenantry.app_id': ctx.appId ?? '',
    'tenantry.session_id': ctx.sessionId ?? '',
    'tenantry.correlation_id': ctx.correlationId,
    'tenantry.request_id': ctx.requestId,
    'enduser.id': ctx.actor.principal,
  };
}

/** Runs `work` in a child span of the active one; an exception marks the span as failed. */
export function inSpan<T>(
  name: string,
  attributes: Attributes,
  work: (span: Span) => Promise<T>,
  kind: SpanKind = SpanKind.INTERNAL,
): Promise<T> {
  return tracer().startActiveSpan(name, { attributes, kind }, async (span) => {
    try {
      return await work(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** The W3C `traceparent` of the active span, to carry into a job or an outbound request. */
export function currentTraceparent(): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/** Runs `work` as a continuation of the trace named by `traceparent` (from a job or an event). */
export function withTraceparent<T>(traceparent: string | null | undefined, work: () => T): T {
  if (!traceparent) return work();
  return context.with(propagation.extract(context.active(), { traceparent }), work);
}
