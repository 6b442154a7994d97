import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import { type JobRow, type QueuedJob, toJob } from './job.js';

/**
 * Leases up to `limit` due jobs to `workerId` for `leaseMs`.
 *
 * Concurrency contract: `for update skip locked` lets many workers claim at once without waiting
 * on each other or taking the same row; a row is due when `run_after` has passed and it is not
 * leased (`locked_until` null or in the past — a dead worker's lease simply runs out). Since an
 * object has one row, and a leased row is not due, at most one worker holds an object at a time
 * (as long as it renews its lease, see renew-lease.ts). Runs in the caller's (platform) transaction.
 *
 * Order: by `run_after`, and among jobs due at the same instant (what one change's transaction
 * enqueued: it writes every job with its `now()`) children before parents: resources, then
 * deployments, then tenants, so that a parent applied with its dependents tends to find them settled
 * and is reconciled once rather than once before and once after (issue 24). The index on `run_after`
 * still drives the scan; only each instant's jobs are sorted (an incremental sort).
 */
export async function claimJobs(
  trx: Trx,
  input: { workerId: string; limit: number; leaseMs: number },
): Promise<QueuedJob[]> {
  const r = await sql<JobRow>`
    with due as (
      select object_kind, object_id from reconcile_jobs
      where run_after <= now() and (locked_until is null or locked_until < now())
      order by run_after, case object_kind when 'Tenant' then 2 when 'Deployment' then 1 else 0 end
      limit ${input.limit}
      for update skip locked
    )
    update reconcile_jobs j
    set locked_by = ${input.workerId},
        locked_until = now() + make_interval(secs => ${input.leaseMs / 1000}),
        updated_at = now()
    from due
    where j.object_kind = due.object_kind and j.object_id = due.object_id
    returning j.object_kind, j.object_id, j.tenant_id, j.generation, j.attempts, j.ticket, j.traceparent`.execute(
    trx,
  );
  return r.rows.map(toJob);
}
