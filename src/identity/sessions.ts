import { randomUUID } from 'node:crypto';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { Authorizer } from '../authz/authorizer.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope } from '../db/database.js';
import type { SessionRow } from '../db/schema.js';
import { NotFoundError } from '../errors/errors.js';
import { listReadable } from './list-readable.js';

export interface Session {
  id: string;
  issuer: string;
  appId: string;
  tenantId: string | null;
  principal: string;
  createdAt: string;
  expiresAt: string;
  revokedAt: string | null;
  revokedBy: string | null;
}

const toSession = (r: SessionRow): Session => ({
  id: r.id,
  issuer: r.issuer,
  appId: r.app_id,
  tenantId: r.tenant_id,
  principal: r.principal,
  createdAt: r.created_at.toISOString(),
  expiresAt: r.expires_at.toISOString(),
  revokedAt: r.revoked_at?.toISOString() ?? null,
  revokedBy: r.revoked_by,
});

/**
 * Sessions: created on first sight of a token's `sid` (tenantry_identify, migration 0004), listed
 * and revoked here. Revocation is checked on every request, so it takes effect on the next one.
 * Callers see their own tenant's sessions (row-level security); each decision goes through Cedar.
 */
export class SessionService {
  constructor(
    private readonly db: Db,
    private readonly authz: Authorizer,
  ) {}

  async list(ctx: RequestContext, limit: number): Promise<Session[]> {
    const source = { table: 'sessions', kind: 'Session', action: 'session.read' } as const;
    return listReadable(this.db, this.authz, ctx, source, limit, toSession);
  }

  /** Revokes a session (idempotent); audited with the decision. */
  async revoke(ctx: RequestContext, id: string): Promise<Session> {
    return inScope(this.db, ctx.scope, async (trx) => {
      const row = await trx
        .selectFrom('sessions')
        .selectAll()
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst();
      if (!row) throw new NotFoundError('session.not_found', `Session "${id}" does not exist.`, { id });
      const decision = this.authz.authorize(ctx, 'session.revoke', {
        kind: 'Session',
        id,
        tenantId: row.tenant_id,
        owner: row.principal,
      });
      if (row.revoked_at) return toSession(row);
      const updated = await trx
        .updateTable('sessions')
        .set({ revoked_at: new Date(), revoked_by: ctx.actor.principal })
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirstOrThrow();
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          id: randomUUID(),
          tenantId: row.tenant_id,
          action: 'session.revoke',
          target: { kind: 'Session', id: null, slug: id },
          before: { revokedAt: null },
          after: { revokedAt: updated.revoked_at?.toISOString() ?? null },
          outcome: 'success',
          decision,
        }),
      );
      return toSession(updated);
    });
  }
}
