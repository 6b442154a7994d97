import { randomUUID } from 'node:crypto';
import type { Scope } from '../db/database.js';

export interface Actor {
  principal: string;
  kind: 'user' | 'service' | 'system';
}

/**
 * Who is asking, on whose behalf, and how to correlate it. Built from a verified identity (the
 * identity hook), never from a request body. `scope` is the row-level-security scope of the caller.
 */
export interface RequestContext {
  actor: Actor;
  scope: Scope;
  appId: string | null;
  sessionId: string | null;
  requestId: string;
  correlationId: string;
}

export function systemContext(
  principal = 'tenantry',
  overrides: Partial<RequestContext> = {},
): RequestContext {
  const id = randomUUID();
  return {
    actor: { principal, kind: 'system' },
    scope: { kind: 'platform' },
    appId: 'tenantry',
    sessionId: null,
    requestId: id,
    correlationId: id,
    ...overrides,
  };
}
