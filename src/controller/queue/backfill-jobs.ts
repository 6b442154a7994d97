import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import { BACKFILL_KINDS, definitionOf, TABLES } from '../../registry/kinds/index.js';

/**
 * Gives every object that is not finalised a job if it has none (e.g. rows restored from a backup,
 * or jobs removed by hand). Jobs are otherwise kept for an object's whole life, and their
 * `run_after` is the next resync, so this is a safety net, not the resync itself.
 *
 * The kinds are those whose definition says `backfill: true` (src/registry/kinds).
 *
 * Concurrency contract: `on conflict do nothing`; existing jobs and their leases are untouched, so
 * any number of workers may run it at once.
 */
export async function backfillJobs(trx: Trx): Promise<number> {
  const selects = BACKFILL_KINDS.map((kind) => {
    const tenant = definitionOf(kind).scope;
    const tenantId = tenant === 'self' ? sql`id` : tenant === 'tenant' ? sql`tenant_id` : sql`null::uuid`;
    return sql`select ${kind}, id, ${tenantId}, generation from ${sql.table(TABLES[kind])} where phase <> 'Deleted'`;
  });
  const r = await sql`
    insert into reconcile_jobs (object_kind, object_id, tenant_id, generation)
    ${sql.join(selects, sql` union all `)}
    on conflict do nothing`.execute(trx);
  return Number(r.numAffectedRows ?? 0);
}
