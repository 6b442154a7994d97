import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/** One successful reconcile to end: the job as claimed (its `ticket`) and whether its object is finalised. */
export interface Completion {
  job: QueuedJob;
  finalised: boolean;
}

/**
 * Ends successful reconciles, any number in one statement. If an object was enqueued again while it
 * was being worked on (`ticket` moved), its job stays due now; otherwise it comes back at the next
 * resync. A finalised tombstone's job is removed.
 *
 * The resync is spread by ±10% so that resyncs do not bunch up, drawn once per statement: the jobs
 * ended together come back together (in one claim, as they went), and the batches are spread. One
 * instant per batch, not one per job, because the new `run_after` is an entry in the queue's index:
 * a batch's entries of one key sit side by side (in heap order) on one leaf page, where entries at
 * random instants of the ±10% band each landed on a page of their own among the registry's other
 * jobs, one full-page image per job after a checkpoint in a registry of 100k tenants (issue 24).
 *
 * Concurrency contract: fenced on `locked_by` (a worker whose lease was taken over changes
 * nothing for that job) and compared on `ticket` (an enqueue that raced with the work is never
 * lost), per row. The delete and the update see the same snapshot; the update skips the rows the
 * delete took, so no row is written twice.
 */
export async function completeJobs(
  trx: Trx,
  done: Completion[],
  input: { workerId: string; resyncMs: number },
): Promise<void> {
  if (done.length === 0) return;
  const kinds = done.map((d) => d.job.kind);
  const ids = done.map((d) => d.job.objectId);
  const tickets = done.map((d) => d.job.ticket);
  const finalised = done.map((d) => d.finalised);
  const resyncSecs = (input.resyncMs / 1000) * (0.9 + 0.2 * Math.random());
  await sql`
    with v as (
      select * from unnest(${kinds}::text[], ${ids}::uuid[], ${tickets}::bigint[], ${finalised}::boolean[])
        as v(kind, id, ticket, finalised)
    ), gone as (
      delete from reconcile_jobs j using v
      where j.object_kind = v.kind and j.object_id = v.id and j.locked_by = ${input.workerId}
        and v.finalised and j.ticket = v.ticket
      returning j.object_kind, j.object_id
    )
    update reconcile_jobs j
    set locked_by = null, locked_until = null, attempts = 0, last_error = null, updated_at = now(),
        run_after = case when j.ticket = v.ticket
          then now() + make_interval(secs => ${resyncSecs})
          else now() end
    from v
    where j.object_kind = v.kind and j.object_id = v.id and j.locked_by = ${input.workerId}
      and not exists (select from gone g where g.object_kind = j.object_kind and g.object_id = j.object_id)`.execute(
    trx,
  );
}

/** Ends one successful reconcile (completeJobs of one). */
export function completeJob(
  trx: Trx,
  job: QueuedJob,
  input: { workerId: string; resyncMs: number; finalised: boolean },
): Promise<void> {
  return completeJobs(trx, [{ job, finalised: input.finalised }], input);
}
