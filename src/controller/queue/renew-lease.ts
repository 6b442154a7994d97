import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/**
 * Extends the leases of jobs this worker holds (a claimed batch's, in one statement). Returns how
 * many it still holds: fewer than asked means some lease was lost (it ran out and another worker
 * claimed the row), and the work on that job is no longer exclusive.
 *
 * Concurrency contract: fenced on `locked_by`, so a worker can only extend its own leases. Rows
 * locked by another transaction at that moment (a change enqueuing the object again, a status
 * write poking it) are skipped, not waited for (`for update skip locked`): a statement that held
 * some of a batch's rows while it waited for others could deadlock with such a transaction. A
 * skipped lease is extended at the next heartbeat (a third of the lease later).
 */
export async function renewLeases(
  trx: Trx,
  jobs: QueuedJob[],
  input: { workerId: string; leaseMs: number },
): Promise<number> {
  if (jobs.length === 0) return 0;
  const r = await sql<{ held: number }>`
    with v as (
      select * from unnest(${jobs.map((j) => j.kind)}::text[], ${jobs.map((j) => j.objectId)}::uuid[]) as v(kind, id)
    ), free as (
      select j.object_kind, j.object_id from reconcile_jobs j join v on j.object_kind = v.kind and j.object_id = v.id
      where j.locked_by = ${input.workerId}
      for update of j skip locked
    ), renewed as (
      update reconcile_jobs j
      set locked_until = now() + make_interval(secs => ${input.leaseMs / 1000})
      from free where j.object_kind = free.object_kind and j.object_id = free.object_id
      returning 1
    )
    select count(*)::int as held from reconcile_jobs j join v on j.object_kind = v.kind and j.object_id = v.id
    where j.locked_by = ${input.workerId}`.execute(trx);
  return Number(r.rows[0]?.held ?? 0);
}

/** Extends the lease of one job; false when it was lost (renewLeases of one). */
export async function renewLease(
  trx: Trx,
  job: QueuedJob,
  input: { workerId: string; leaseMs: number },
): Promise<boolean> {
  return (await renewLeases(trx, [job], input)) > 0;
}
