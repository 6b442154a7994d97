import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/**
 * Extends the lease of a job this worker holds. Returns false when the lease was lost (it ran out
 * and another worker claimed the row): the caller's work is then no longer exclusive.
 *
 * Concurrency contract: fenced on `locked_by`, so a worker can only extend its own lease.
 */
export async function renewLease(
  trx: Trx,
  job: QueuedJob,
  input: { workerId: string; leaseMs: number },
): Promise<boolean> {
  const r = await sql`
    update reconcile_jobs
    set locked_until = now() + make_interval(secs => ${input.leaseMs / 1000})
    where object_kind = ${job.kind} and object_id = ${job.objectId} and locked_by = ${input.workerId}`.execute(
    trx,
  );
  return Number(r.numAffectedRows ?? 0) > 0;
}
