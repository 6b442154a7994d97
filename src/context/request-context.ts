import { randomUUID } from 'node:crypto';
import type { Db, Scope, Trx } from '../db/database.js';

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
  /** Roles from the verified token (after claim mapping); absent for background work. */
  roles?: readonly string[];
  /** The customer of the caller's tenant (tenant scope only). */
  customerId?: string | null;
  /** The `iss` of the verified token. */
  issuer?: string;
  /** An active break-glass elevation (src/identity/break-glass.ts). */
  elevation?: { id: string; expiresAt: string } | null;
  /**
   * The policy gate of the change path, set by the authorization decorator (src/authz): decides one
   * change before it is written; its decision goes into the audit record. Throws when denied.
   */
  authorize?: (change: ChangeToAuthorize) => unknown;
  /**
   * When present, every allowed decision of the request is appended (action and resource), so an
   * idempotent replay can decide them again for the caller that replays (src/api/server.ts).
   */
  decisions?: { action: string; resource: unknown }[];
  /**
   * The request's Idempotency-Key, when its answer is saved in the transaction of its write: the
   * service runs its write through it (src/idempotency/idempotent-write.ts).
   */
  idempotency?: AtomicWrite;
  /**
   * When present, the registry objects (UUIDs) the request wrote are added: every change of the
   * change path, and a cell whose allocation placement changed. The API sets it on the routes that
   * report their changes (route config `reportsChanges`), so that only those objects are forgotten
   * by the read cache when the answer leaves (src/api/server.ts).
   */
  changed?: Set<string>;
  /**
   * Set by the change path when a change can alter what `tenantry_identify` answers (a deletion or
   * a lifecycle change, a tenant whose slug changes: what migration 0047's triggers notify). A route
   * that reports its changes forgets the process's verified identities only then (src/api/server.ts).
   */
  identityChanged?: boolean;
}

/** A write that commits with its Idempotency-Key answer (implemented by src/idempotency/idempotent-write.ts). */
export interface AtomicWrite {
  /** True until the request's first write has taken the key. */
  readonly available: boolean;
  run<T>(db: Db, scope: Scope, work: (trx: Trx) => Promise<T>): Promise<T>;
}

/** What the change path asks the policy gate about (a subset of Change, to keep this file I/O free). */
export interface ChangeToAuthorize {
  kind: string;
  objectId: string;
  slug: string;
  tenantId: string | null;
  action: string;
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
