import { type RawBuilder, sql } from 'kysely';
import type { Db } from '../db/database.js';
import { appendEventSql } from '../events/append-event.js';

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
  /**
   * Whether the workflow row has something to reset (attempts or an error of failed attempts): it
   * is then updated (attempts 0, no error, `updated_at`), else only locked.
   */
  reset: boolean;
}

/** Thrown inside the checkpoint's transaction when the lease was lost, so that nothing of it persists. */
export class LeaseLost extends Error {}

/**
 * Records a step's end as one statement: the step row (its output is what a resumed workflow and the
 * step's undo read), the workflow's attempt counter reset when it has one to reset, and for a completed step the
 * `workflow.step_completed` event in the tenant's stream. A compensated step's row replaces its
 * completed one, which is how the undo stack shrinks. Runs in the caller's transaction, or alone
 * (autocommit: one round trip, one commit) when the step writes nothing else.
 *
 * Concurrency contract: fenced on `locked_by` — when the caller's lease was taken over, the fence
 * (the row's lock or update) matches no row, so neither the step row nor the event (gated on the fence) is written, and
 * `LeaseLost` is thrown, so a caller's transaction rolls back what else it wrote and the caller stops
 * working on the workflow. An operator's cancel, requested while the step ran, is returned so the
 * engine compensates next.
 */
export async function checkpointStep(
  run: Statement,
  c: StepCheckpoint,
): Promise<{ cancelRequested: { principal: string; kind: string } | null }> {
  const row = (await run(checkpointStepSql(c)))[0];
  if (!row) throw new LeaseLost(`workflow ${c.workflowId}: lease lost`);
  return { cancelRequested: row.cancel_requested };
}

/** Runs one statement and returns its rows: on a Db or transaction, or prepared on the engine's session. */
export type Statement = <R>(query: RawBuilder<R>) => Promise<R[]>;
export const onDb =
  (db: Db): Statement =>
  async (query) =>
    (await query.execute(db)).rows;

/** The checkpoint statement (its text is the same for every completed step, so it can be prepared). */
export function checkpointStepSql(
  c: StepCheckpoint,
): RawBuilder<{ position: number; cancel_requested: { principal: string; kind: string } | null }> {
  const completed = c.state === 'Completed';
  // The fence: the workflow row, locked (the lock is the fence: a claim that took the lease over
  // updates the row, so this waits for it and then finds another holder, or the claim waits for
  // this commit and then reads the step). It is written only when it has something to reset —
  // attempts or an error left by failed attempts, or a compensation's — so that a run of steps
  // writes no new version of it per step.
  const w = c.reset
    ? sql`update workflows set attempts = 0, error = null, updated_at = now()
      where id = ${c.workflowId} and locked_by = ${c.workerId}
      returning tenant_id, cancel_requested`
    : sql`select tenant_id, cancel_requested from workflows
      where id = ${c.workflowId} and locked_by = ${c.workerId}
      for share`;
  // A step completes once: its row is new (a second completion of the same position is a unique
  // violation, not an overwrite). A failed or compensated one may replace the row it finds.
  const conflict = completed
    ? sql``
    : sql`on conflict (tenant_id, workflow_id, position) do update
        set state = excluded.state, attempts = excluded.attempts, error = excluded.error,
            output = case when excluded.state = 'Compensated' then workflow_steps.output else excluded.output end,
            ended_at = now()`;
  return sql<{ position: number; cancel_requested: { principal: string; kind: string } | null }>`
    with w as (${w}), step as (
      insert into workflow_steps (tenant_id, workflow_id, position, name, state, attempts, output, error, started_at)
      select tenant_id, ${c.workflowId}, ${c.position}, ${c.name}, ${c.state}, ${c.attempts},
             ${JSON.stringify(c.output ?? null)}, ${c.error}, ${c.startedAt} from w
      ${conflict}
      returning position
    )${
      completed
        ? sql`, ${appendEventSql(
            {
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
            },
            'w',
          )}`
        : sql``
    }
    select step.position, w.cancel_requested from step, w ${completed ? sql`, event_done` : sql``}`;
}
