import { randomUUID } from 'node:crypto';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { Authorizer } from '../authz/authorizer.js';
import type { RequestContext } from '../context/request-context.js';
import type { Db } from '../db/database.js';
import type { BreakGlassGrantRow } from '../db/schema.js';
import { FieldErrors, NotFoundError } from '../errors/errors.js';
import { writeInScope } from '../idempotency/idempotent-write.js';
import { listReadable } from './list-readable.js';

export interface BreakGlassGrant {
  id: string;
  principal: string;
  roles: string[];
  reason: string;
  createdAt: string;
  expiresAt: string;
  endedAt: string | null;
  endedBy: string | null;
  active: boolean;
}

const toGrant = (r: BreakGlassGrantRow): BreakGlassGrant => ({
  id: r.id,
  principal: r.principal,
  roles: r.roles,
  reason: r.reason,
  createdAt: r.created_at.toISOString(),
  expiresAt: r.expires_at.toISOString(),
  endedAt: r.ended_at?.toISOString() ?? null,
  endedBy: r.ended_by,
  active: !r.ended_at && r.expires_at.getTime() > Date.now(),
});

/** Break-glass elevates to these roles. */
export const BREAK_GLASS_ROLES = ['platform-admin'];

/**
 * Break-glass (seed 001, security posture): a time-limited elevation to platform-admin that needs
 * a reason, is audited when it starts and ends, marks every decision taken under it
 * (`decision.elevation`), and expires by itself: the authenticator applies only grants whose
 * `expires_at` is in the future, so nothing has to run for it to end. Who may request one is a
 * policy (`breakglass.request`; by default platform operators and the `break-glass` role).
 */
export class BreakGlassService {
  constructor(
    private readonly db: Db,
    private readonly authz: Authorizer,
    private readonly maxSeconds: number,
  ) {}

  async start(
    ctx: RequestContext,
    input: { reason?: unknown; ttlSeconds?: unknown },
  ): Promise<BreakGlassGrant> {
    const errors = new FieldErrors();
    const reason = typeof input.reason === 'string' ? input.reason.trim() : '';
    if (reason.length < 10 || reason.length > 1000)
      errors.add('/reason', 'break_glass.reason_required', 'a reason of 10-1000 characters is required');
    const ttl = input.ttlSeconds === undefined ? Math.min(900, this.maxSeconds) : input.ttlSeconds;
    if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 60 || ttl > this.maxSeconds)
      errors.add('/ttlSeconds', 'break_glass.ttl_invalid', `must be an integer 60-${this.maxSeconds}`);
    const decision = this.authz.authorize(ctx, 'breakglass.request', {
      kind: 'BreakGlass',
      tenantId: ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null,
      owner: ctx.actor.principal,
    });
    errors.throwIfAny('break_glass.invalid', 'The break-glass request is invalid.');
    const tenantId = ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null;
    return writeInScope(this.db, ctx, async (trx) => {
      const row = await trx
        .insertInto('break_glass_grants')
        .values({
          id: randomUUID(),
          tenant_id: tenantId,
          issuer: ctx.issuer ?? '',
          principal: ctx.actor.principal,
          roles: BREAK_GLASS_ROLES,
          reason,
          expires_at: new Date(Date.now() + Number(ttl) * 1000),
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      const grant = toGrant(row);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId,
          action: 'breakglass.start',
          target: { kind: 'BreakGlass', id: grant.id, slug: null },
          before: null,
          after: { roles: grant.roles, reason, expiresAt: grant.expiresAt },
          outcome: 'success',
          decision,
        }),
      );
      return grant;
    });
  }

  async end(ctx: RequestContext, id: string): Promise<BreakGlassGrant> {
    return writeInScope(this.db, ctx, async (trx) => {
      const row = await trx
        .selectFrom('break_glass_grants')
        .selectAll()
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst();
      if (!row)
        throw new NotFoundError('break_glass.not_found', `Break-glass grant ${id} does not exist.`, { id });
      const decision = this.authz.authorize(ctx, 'breakglass.end', {
        kind: 'BreakGlass',
        id,
        tenantId: row.tenant_id,
        owner: row.principal,
      });
      if (row.ended_at) return toGrant(row);
      const updated = await trx
        .updateTable('break_glass_grants')
        .set({ ended_at: new Date(), ended_by: ctx.actor.principal })
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirstOrThrow();
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: row.tenant_id,
          action: 'breakglass.end',
          target: { kind: 'BreakGlass', id, slug: null },
          before: { expiresAt: row.expires_at.toISOString() },
          after: { endedAt: updated.ended_at?.toISOString() ?? null },
          outcome: 'success',
          decision,
        }),
      );
      return toGrant(updated);
    });
  }

  async list(ctx: RequestContext, limit: number): Promise<BreakGlassGrant[]> {
    const source = { table: 'break_glass_grants', kind: 'BreakGlass', action: 'breakglass.read' } as const;
    return listReadable(this.db, this.authz, ctx, source, limit, toGrant);
  }
}
