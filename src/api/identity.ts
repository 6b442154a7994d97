import { randomUUID } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { RequestContext } from '../changes/request-context.js';

/**
 * The pluggable identity hook: turns a request into a RequestContext from a verified identity.
 * Routes never read the caller or its tenant from the body. Until token validation lands (the
 * Identity issue), the embedded default's hook treats every caller on the loopback listener as the
 * local platform operator.
 */
export type IdentityHook = (request: FastifyRequest) => Promise<RequestContext> | RequestContext;

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;
const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The correlation id: X-Correlation-Id if well formed, else the trace id of `traceparent`, else new. */
export function correlationIdOf(request: FastifyRequest): string {
  const header = request.headers['x-correlation-id'];
  if (typeof header === 'string' && SAFE_ID.test(header)) return header;
  const tp = request.headers.traceparent;
  const m = typeof tp === 'string' ? TRACEPARENT.exec(tp) : null;
  if (m?.[1]) return m[1];
  return request.id ?? randomUUID();
}

export const localOperator: IdentityHook = (request) => ({
  actor: { principal: 'local-operator', kind: 'user' },
  scope: { kind: 'platform' },
  appId: 'tenantry-local',
  sessionId: null,
  requestId: request.id,
  correlationId: correlationIdOf(request),
});
