import { sql } from 'kysely';
import type { Trx } from '../db/database.js';
import { appendEvent } from '../events/append-event.js';

export interface StepCheckpoint {
  workflowId: string;
  tenantId: string;
  workerId: string;
  position: number;
  name: string;
  state: 'Completed' | 'Failed' | 'Compensated';
  attempts: number;
  output: unknown;
  error: string | null;
  startedAt: Date;
  correlationId: string;
}

/**
 * Records a step's end, in the caller's transaction: the step row (its output is
 * what a resumed workflow and the step's undo read), the workflow's attempt counter reset, and for a
 * completed step (only once the fenced write matched) the `workflow.step_completed` event in the tenant's stream. A compensated step's
 * row replaces its completed one, which is how the undo stack shrinks.
 *
 * Concurrency contract: fenced on `locked_by` — when the caller's lease was taken over, the update
 * matches no row, nothing is written and `kept` is false; the caller stops working on it. An
 * operator's cancel, requested while the step ran, is returned so the engine compensates next.
 */
export async function checkpointStep(
  trx: Trx,
  c: StepCheckpoint,
): Promise<{ kept: boolean; cancelRequested: { principal: string; kind: string } | null }> {
  const r = await sql<{ position: number; cancel_requested: { principal: string; kind: string } | null }>`
    with w as (
      update workflows set attempts = 0, error = null, updated_at = now()
      where id = ${c.workflowId} and locked_by = ${c.workerId}
      returning tenant_id, cancel_requested
    )
    insert into workflow_steps (tenant_id, workflow_id, position, name, state, attempts, output, error, started_at)
    select tenant_id, ${c.workflowId}, ${c.position}, ${c.name}, ${c.state}, ${c.attempts},
           ${JSON.stringify(c.output ?? null)}, ${c.error}, ${c.startedAt} from w
    on conflict (tenant_id, workflow_id, position) do update
      set state = excluded.state, attempts = excluded.attempts, error = excluded.error,
          output = case when excluded.state = 'Compensated' then workflow_steps.output else excluded.output end,
          ended_at = now()
    returning position, (select cancel_requested from w)`.execute(trx);
  const row = r.rows[0];
  if (!row) return { kept: false, cancelRequested: null };
  if (c.state === 'Completed') {
    await appendEvent(trx, {
      tenantId: c.tenantId,
      name: 'workflow.step_completed',
      subject: `workflows/${c.workflowId}`,
      data: {
        workflowId: c.workflowId,
        tenantId: c.tenantId,
        step: c.name,
        position: c.position,
        attempts: c.attempts,
      },
      correlationId: c.correlationId,
    });
  }
  return { kept: true, cancelRequested: row.cancel_requested };
}
