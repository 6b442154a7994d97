import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import type { WorkflowRow } from './workflow.js';

/**
 * Leases up to `limit` due workflows to `workerId` for `leaseMs` and marks Pending ones Running.
 *
 * Concurrency contract: `for update skip locked` lets engines claim side by side without taking the
 * same row; a workflow is due when it is Pending, Running or Compensating, `run_after` has passed and
 * its lease is free (`locked_until` null or past). A controller that dies keeps no workflow: its
 * leases run out and another engine claims them, resuming at the first step without a checkpoint.
 * Every later write of the holder is fenced on `locked_by`, so a holder whose lease was taken over
 * changes nothing more. Runs in the platform scope (the caller's transaction or the engine's session), one statement.
 */
export async function claimWorkflows(
  trx: Db,
  input: { workerId: string; limit: number; leaseMs: number },
): Promise<WorkflowRow[]> {
  const r = await sql<WorkflowRow>`
    with due as (
      select id from workflows
      where state in ('Pending', 'Running', 'Compensating') and run_after <= now()
        and (locked_until is null or locked_until < now())
      order by run_after
      limit ${input.limit}
      for update skip locked
    )
    update workflows w
    set locked_by = ${input.workerId},
        locked_until = now() + make_interval(secs => ${input.leaseMs / 1000}),
        state = case when w.state = 'Pending' then 'Running' else w.state end,
        updated_at = now()
    from due where w.id = due.id
    returning w.*`.execute(trx);
  return r.rows;
}

/** Extends the lease while the holder works; false when it was lost (fenced on `locked_by`). */
export async function renewWorkflowLease(
  trx: Db,
  input: { id: string; workerId: string; leaseMs: number },
): Promise<boolean> {
  const r = await sql`
    update workflows set locked_until = now() + make_interval(secs => ${input.leaseMs / 1000})
    where id = ${input.id} and locked_by = ${input.workerId}`.execute(trx);
  return Number(r.numAffectedRows ?? 0) > 0;
}
