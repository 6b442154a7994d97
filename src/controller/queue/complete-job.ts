import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/**
 * Ends a successful reconcile. If the object was enqueued again while it was being worked on
 * (`ticket` moved), the job stays due now; otherwise it comes back at the next resync (with ±10%
 * spread so that resyncs do not bunch up). A finalised tombstone's job is removed.
 *
 * Concurrency contract: fenced on `locked_by` (a worker whose lease was taken over changes
 * nothing) and compared on `ticket` (an enqueue that raced with the work is never lost).
 */
export async function completeJob(
  trx: Trx,
  job: QueuedJob,
  input: { workerId: string; resyncMs: number; finalised: boolean },
): Promise<void> {
  const key = sql`object_kind = ${job.kind} and object_id = ${job.objectId} and locked_by = ${input.workerId}`;
  if (input.finalised) {
    const r = await sql`delete from reconcile_jobs where ${key} and ticket = ${job.ticket}`.execute(trx);
    if (Number(r.numAffectedRows ?? 0) > 0) return;
  }
  await sql`
    update reconcile_jobs
    set locked_by = null, locked_until = null, attempts = 0, last_error = null, updated_at = now(),
        run_after = case when ticket = ${job.ticket}
          then now() + make_interval(secs => ${input.resyncMs / 1000} * (0.9 + 0.2 * random()))
          else now() end
    where ${key}`.execute(trx);
}
