import type { Selectable } from 'kysely';
import type { Authorizer } from '../authz/authorizer.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope } from '../db/database.js';
import type { Database } from '../db/schema.js';

/** Identity tables whose rows belong to a principal in a tenant (or the platform), newest by created_at. */
type OwnedTable = 'sessions' | 'break_glass_grants';

/**
 * Lists `source.table` for the caller: the newest `limit` rows its scope sees (row-level security),
 * keeping those for which `source.action` on a `source.kind` resource (the row's id, its tenant and
 * its principal as owner) is allowed, newest first, mapped by `toDomain`. The limit is applied before
 * the decision, so a caller may get fewer than `limit` even when more readable rows exist.
 */
export async function listReadable<T extends OwnedTable, D>(
  db: Db,
  authz: Authorizer,
  ctx: RequestContext,
  source: { table: T; kind: string; action: string },
  limit: number,
  toDomain: (row: Selectable<Database[T]>) => D,
): Promise<D[]> {
  return inScope(db, ctx.scope, async (trx) => {
    // Kysely types a select from a union of table names as the merge of their columns; the rows are
    // the selected table's, hence the cast to it below.
    const rows = await trx
      .selectFrom(source.table as OwnedTable)
      .selectAll()
      .orderBy('created_at', 'desc')
      .limit(limit)
      .execute();
    return rows
      .filter(
        (r) =>
          authz.decide(ctx, source.action, {
            kind: source.kind,
            id: r.id,
            tenantId: r.tenant_id,
            owner: r.principal,
          }).decision === 'allow',
      )
      .map((r) => toDomain(r as Selectable<Database[T]>));
  });
}
