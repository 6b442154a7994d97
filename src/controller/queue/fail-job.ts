import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/**
 * Ends a failed reconcile: the job comes back after `delayMs` with `attempts` failures counted. If
 * the object was enqueued again meanwhile (`ticket` moved), that new desired state is tried now
 * with a fresh count instead.
 *
 * Concurrency contract: fenced on `locked_by` and compared on `ticket`, as in complete-job.ts.
 */
export async function failJob(
  trx: Trx,
  job: QueuedJob,
  input: { workerId: string; attempts: number; delayMs: number; error: string },
): Promise<void> {
  await sql`
    update reconcile_jobs
    set locked_by = null, locked_until = null, last_error = ${input.error}, updated_at = now(),
        attempts = case when ticket = ${job.ticket} then ${input.attempts} else 0 end,
        run_after = case when ticket = ${job.ticket}
          then now() + make_interval(secs => ${input.delayMs / 1000}) else now() end
    where object_kind = ${job.kind} and object_id = ${job.objectId} and locked_by = ${input.workerId}`.execute(
    trx,
  );
}
