import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';

/**
 * Gives every object that is not finalised a job if it has none (e.g. rows restored from a backup,
 * or jobs removed by hand). Jobs are otherwise kept for an object's whole life, and their
 * `run_after` is the next resync, so this is a safety net, not the resync itself.
 *
 * Concurrency contract: `on conflict do nothing`; existing jobs and their leases are untouched, so
 * any number of workers may run it at once.
 */
export async function backfillJobs(trx: Trx): Promise<number> {
  const r = await sql`
    insert into reconcile_jobs (object_kind, object_id, tenant_id, generation)
    select 'Customer', id, null::uuid, generation from customers where phase <> 'Deleted'
    union all select 'System', id, null::uuid, generation from systems where phase <> 'Deleted'
    union all select 'Tenant', id, id, generation from tenants where phase <> 'Deleted'
    union all select 'Deployment', id, tenant_id, generation from deployments where phase <> 'Deleted'
    union all select 'IntegrationResource', id, tenant_id, generation from integration_resources where phase <> 'Deleted'
    on conflict do nothing`.execute(trx);
  return Number(r.numAffectedRows ?? 0);
}
