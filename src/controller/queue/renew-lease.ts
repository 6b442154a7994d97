import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/**
 * Extends the leases of jobs this worker holds (a claimed batch's, in one statement). Returns how
 * many it still held: fewer than asked means some lease was lost (it ran out and another worker
 * claimed the row), and the work on that job is no longer exclusive.
 *
 * Concurrency contract: fenced on `locked_by`, so a worker can only extend its own leases.
 */
export async function renewLeases(
  trx: Trx,
  jobs: QueuedJob[],
  input: { workerId: string; leaseMs: number },
): Promise<number> {
  if (jobs.length === 0) return 0;
  const r = await sql`
    update reconcile_jobs j
    set locked_until = now() + make_interval(secs => ${input.leaseMs / 1000})
    from unnest(${jobs.map((j) => j.kind)}::text[], ${jobs.map((j) => j.objectId)}::uuid[]) as v(kind, id)
    where j.object_kind = v.kind and j.object_id = v.id and j.locked_by = ${input.workerId}`.execute(trx);
  return Number(r.numAffectedRows ?? 0);
}

/** Extends the lease of one job; false when it was lost (renewLeases of one). */
export async function renewLease(
  trx: Trx,
  job: QueuedJob,
  input: { workerId: string; leaseMs: number },
): Promise<boolean> {
  return (await renewLeases(trx, [job], input)) > 0;
}
