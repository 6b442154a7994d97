import { sql } from 'kysely';
import type { Trx } from '../db/database.js';
import { ConflictError } from '../errors/errors.js';
import { appendEventSql } from '../events/append-event.js';
import type { WorkflowActor } from './workflow.js';

export interface StartWorkflow {
  id: string;
  tenantId: string;
  type: string;
  input: unknown;
  actor: WorkflowActor;
  requestId: string;
  correlationId: string;
}

/**
 * Starts a workflow in the caller's transaction (the one that writes the change asking for it), with
 * its `workflow.started` event in the tenant's stream. A start with an id that exists is the same
 * workflow (a retried request) and changes nothing.
 *
 * Concurrency contract: the partial unique index `workflows_one_open_per_tenant` admits one open
 * workflow per tenant; `on conflict do nothing` turns a second start into no row, answered with 409
 * `workflow.in_progress` naming the open one. Two transactions racing to start both insert; the
 * second waits on the first's index entry and, once it commits, finds the conflict.
 */
export async function startWorkflow(trx: Trx, w: StartWorkflow): Promise<{ id: string; created: boolean }> {
  const inserted = await sql<{ id: string }>`
    insert into workflows (id, tenant_id, type, input, actor, request_id, correlation_id)
    values (${w.id}, ${w.tenantId}, ${w.type}, ${JSON.stringify(w.input)}, ${JSON.stringify(w.actor)},
            ${w.requestId}, ${w.correlationId})
    on conflict do nothing
    returning id`.execute(trx);
  if (inserted.rows.length > 0) {
    await sql`with ${appendEventSql({
      tenantId: w.tenantId,
      name: 'workflow.started',
      subject: `workflows/${w.id}`,
      data: {
        workflowId: w.id,
        type: w.type,
        tenantId: w.tenantId,
        state: 'Pending',
        actor: w.actor,
        input: w.input,
      },
      correlationId: w.correlationId,
    })} select 1 from event_done`.execute(trx);
    await sql`select pg_notify('tenantry_workflows', ${w.id})`.execute(trx);
    return { id: w.id, created: true };
  }
  const open = await sql<{ id: string; type: string; same: boolean }>`
    select id, type, id = ${w.id} as same from workflows
    where id = ${w.id} or (tenant_id = ${w.tenantId} and state in ('Pending', 'Running', 'Waiting', 'Compensating'))
    order by (id = ${w.id}) desc limit 1`.execute(trx);
  const row = open.rows[0];
  if (row?.same) return { id: row.id, created: false };
  throw new ConflictError(
    'workflow.in_progress',
    `The tenant has a lifecycle workflow in progress (${row?.type ?? 'unknown'} ${row?.id ?? ''}); wait for it or cancel it.`,
    { details: { workflowId: row?.id ?? null, type: row?.type ?? null } },
  );
}
