import { recordAuditAttempt } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { TenantryError } from '../errors/errors.js';
import { AccessDenied } from './authorizer.js';

/** Refusals already audited (a decorator inside a route: audited once). */
const audited = new WeakSet<object>();

/**
 * Audits a refusal (any 403: a policy denial, tenant spoofing, row-level security) in a transaction
 * of its own, with the decision and the caller's roles; other errors are not refusals.
 */
export async function auditRefusal(db: Db, ctx: RequestContext, err: unknown, action: string): Promise<void> {
  if (!(err instanceof TenantryError) || err.status !== 403 || audited.has(err)) return;
  audited.add(err);
  const denied = err instanceof AccessDenied ? err : undefined;
  const id = denied?.resource.id ?? undefined;
  await recordAuditAttempt(db, ctx, {
    tenantId: denied?.resource.tenantId ?? (ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null),
    action: denied?.decision.action ?? action,
    outcome: 'denied',
    // Audit target ids are UUIDs; anything else (a route, a session id) is kept as the slug.
    target: {
      kind: denied?.resource.kind ?? 'Request',
      ...(id && isUuid(id) ? { id } : { id: null, slug: id ?? null }),
    },
    decision: denied?.decision ?? {
      decision: 'deny',
      code: err.code,
      action,
      roles: [...(ctx.roles ?? [])],
      ...(Object.keys(err.details).length ? { details: err.details } : {}),
    },
  });
}
