import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/**
 * Takes the current `ticket` of jobs this worker holds into `jobs`, in the transaction that then
 * reads their objects. The reconciles act on what that transaction reads, so an enqueue committed
 * before this statement (e.g. a child's settlement earlier in the same batch poking its parent) is
 * already seen by them and need not leave the job due again: the parent is reconciled once, after
 * its children (issue 24). An enqueue after it moves the ticket again and is not lost.
 *
 * Concurrency contract: fenced on `locked_by`; a job whose lease was lost keeps the ticket it was
 * claimed with (its completion is fenced anyway). Runs before the reads of the objects in the same
 * transaction (read committed: those statements see at least what this one saw).
 */
export async function readTickets(trx: Trx, jobs: QueuedJob[], input: { workerId: string }): Promise<void> {
  if (jobs.length === 0) return;
  const r = await sql<{ object_kind: string; object_id: string; ticket: number }>`
    select j.object_kind, j.object_id, j.ticket from reconcile_jobs j
    join unnest(${jobs.map((j) => j.kind)}::text[], ${jobs.map((j) => j.objectId)}::uuid[]) as v(kind, id)
      on j.object_kind = v.kind and j.object_id = v.id
    where j.locked_by = ${input.workerId}`.execute(trx);
  const tickets = new Map(
    r.rows.map((x) => [`${x.object_kind}/${String(x.object_id).toLowerCase()}`, x.ticket]),
  );
  for (const job of jobs) {
    const t = tickets.get(`${job.kind}/${job.objectId.toLowerCase()}`);
    if (t !== undefined) job.ticket = Number(t);
  }
}
