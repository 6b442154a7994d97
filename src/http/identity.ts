import { randomUUID } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { RequestContext } from '../context/request-context.js';

/**
 * How a route handler gets the request's RequestContext: the identity envelope that the
 * authentication hook built from a verified token (src/identity/security.ts `currentContext`).
 * Routes never read the caller or its tenant from the body.
 */
export type IdentityHook = (request: FastifyRequest) => RequestContext;

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
