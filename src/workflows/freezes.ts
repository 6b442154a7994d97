import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { ForbiddenError, NotFoundError, TenantryError } from '../errors/errors.js';

export interface Freeze {
  name: string;
  scope: 'platform' | 'region' | 'cell';
  target: string | null;
  allow: string[];
  reason: string;
  startsAt: string;
  endsAt: string | null;
  createdBy: { principal: string; kind: string };
}

interface FreezeRow {
  name: string;
  scope: Freeze['scope'];
  target: string | null;
  allow: string[];
  reason: string;
  starts_at: Date;
  ends_at: Date | null;
  created_by: Freeze['createdBy'];
}

const toFreeze = (r: FreezeRow): Freeze => ({
  name: r.name,
  scope: r.scope,
  target: r.target,
  allow: r.allow,
  reason: r.reason,
  startsAt: r.starts_at.toISOString(),
  endsAt: r.ends_at?.toISOString() ?? null,
  createdBy: r.created_by,
});

/**
 * Refuses (423 `workflow.frozen`, naming the freeze) a new workflow of `type` for the tenant when a
 * freeze in force covers it — platform-wide, its region or its cell — and does not allow the type.
 * Runs in the starting transaction (as the platform: freezes are platform objects).
 */
export async function assertNotFrozen(trx: Trx, tenantId: string, type: string): Promise<void> {
  const r = await sql<FreezeRow>`
    select f.* from workflow_freezes f, tenants t
    where t.id = ${tenantId} and f.lifted_at is null and f.starts_at <= now()
      and (f.ends_at is null or f.ends_at > now())
      and not (${type} = any (f.allow))
      and (f.scope = 'platform' or (f.scope = 'region' and f.target = t.region)
           or (f.scope = 'cell' and f.target = t.cell_id::text))
    order by f.created_at limit 1`.execute(trx);
  const f = r.rows[0];
  if (f)
    throw new TenantryError(
      'workflow.frozen',
      423,
      `Freeze "${f.name}" (${f.scope}${f.target ? ` ${f.target}` : ''}) holds new workflows: ${f.reason}`,
      { details: { freeze: f.name, scope: f.scope, target: f.target, reason: f.reason } },
    );
}

/** Freezes hold every tenant's workflows: no tenant's principal declares or lifts one. */
function platformOnly(ctx: RequestContext): void {
  if (ctx.scope.kind !== 'platform')
    throw new ForbiddenError('freeze.platform_only', 'Only the platform declares or lifts freezes.');
}

/** Declaring and lifting freezes, audited; only the platform may. */
export class FreezesService {
  constructor(private readonly db: Db) {}

  list(): Promise<Freeze[]> {
    return asPlatform(this.db, async (trx) => {
      const r =
        await sql<FreezeRow>`select * from workflow_freezes where lifted_at is null order by created_at`.execute(
          trx,
        );
      return r.rows.map(toFreeze);
    });
  }

  /** Declares (or replaces) freeze `name`. */
  put(
    ctx: RequestContext,
    name: string,
    f: { scope: Freeze['scope']; target?: string; allow?: string[]; reason: string; endsAt?: string },
  ): Promise<Freeze> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const r = await sql<FreezeRow>`
        insert into workflow_freezes (name, scope, target, allow, reason, ends_at, created_by)
        values (${name}, ${f.scope}, ${f.scope === 'platform' ? null : (f.target ?? null)}, ${f.allow ?? []},
                ${f.reason}, ${f.endsAt ?? null}, ${JSON.stringify(ctx.actor)})
        on conflict (name) do update set scope = excluded.scope, target = excluded.target, allow = excluded.allow,
          reason = excluded.reason, ends_at = excluded.ends_at, created_by = excluded.created_by,
          created_at = now(), starts_at = now(), lifted_at = null
        returning *`.execute(trx);
      const freeze = toFreeze(r.rows[0]!);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: null,
          action: 'freeze.declare',
          target: { kind: 'Freeze', id: null, slug: name },
          before: null,
          after: freeze,
          outcome: 'success',
          decision: null,
        }),
      );
      return freeze;
    });
  }

  lift(ctx: RequestContext, name: string): Promise<void> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const r =
        await sql`update workflow_freezes set lifted_at = now() where name = ${name} and lifted_at is null`.execute(
          trx,
        );
      if (Number(r.numAffectedRows ?? 0) === 0)
        throw new NotFoundError('freeze.not_found', `No freeze "${name}" in force.`);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: null,
          action: 'freeze.lift',
          target: { kind: 'Freeze', id: null, slug: name },
          before: null,
          after: null,
          outcome: 'success',
          decision: null,
        }),
      );
    });
  }
}
