import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { appendEventSql } from '../events/append-event.js';
import type { WorkflowState } from './workflow.js';

/**
 * A failed attempt: the workflow stays open, its lease is released and it is due again after
 * `delayMs` (`state` Running to retry the step, Waiting to wait for an operator, Compensating to
 * run the undo stack). Fenced on `locked_by` like every write of a lease holder.
 */
export async function rescheduleWorkflow(
  trx: Db,
  input: {
    id: string;
    workerId: string;
    state: 'Running' | 'Waiting' | 'Compensating';
    attempts: number;
    delayMs: number;
    error: string;
  },
): Promise<boolean> {
  const r = await sql`
    update workflows
    set state = ${input.state}, attempts = ${input.attempts}, error = ${input.error},
        run_after = now() + make_interval(secs => ${input.delayMs / 1000}),
        locked_by = null, locked_until = null, updated_at = now()
    where id = ${input.id} and locked_by = ${input.workerId}`.execute(trx);
  return Number(r.numAffectedRows ?? 0) > 0;
}

/**
 * Closes a workflow (Succeeded, Failed or Cancelled) with its `workflow.succeeded` or
 * `workflow.failed` event, as one statement, in the caller's transaction (which also holds what the
 * end writes into the registry) or alone. Fenced on `locked_by`; false when the lease was lost (and
 * then no event is written either).
 */
export async function finishWorkflow(
  trx: Db,
  input: {
    id: string;
    tenantId: string;
    workerId: string;
    type: string;
    state: Extract<WorkflowState, 'Succeeded' | 'Failed' | 'Cancelled'>;
    error: string | null;
    correlationId: string;
  },
): Promise<boolean> {
  const r = await sql<{ n: number }>`
    with w as (
      update workflows
      set state = ${input.state}, error = ${input.error}, finished_at = now(), updated_at = now(),
          locked_by = null, locked_until = null
      where id = ${input.id} and locked_by = ${input.workerId}
      returning id
    ), ${appendEventSql(
      {
        tenantId: input.tenantId,
        name: input.state === 'Succeeded' ? 'workflow.succeeded' : 'workflow.failed',
        subject: `workflows/${input.id}`,
        data: {
          workflowId: input.id,
          tenantId: input.tenantId,
          type: input.type,
          state: input.state,
          error: input.error,
        },
        correlationId: input.correlationId,
      },
      'w',
    )}
    select (select count(*) from w)::int as n, (select count(*) from event_done)::int as events`.execute(trx);
  return (r.rows[0]?.n ?? 0) > 0;
}
