import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import type { LifecycleAction, LifecycleState } from '../domain/lifecycle.js';
import { assertNotFrozen } from './freezes.js';
import { type LifecycleInput, lifecycleType } from './lifecycle-workflows.js';
import { startWorkflow } from './start-workflow.js';
import { workflowIdOf } from './workflow.js';

/** The id of the workflow a tenant's lifecycle change (at the generation it produced) started. */
export const lifecycleWorkflowId = (tenantId: string, generation: number): string =>
  workflowIdOf('lifecycle', tenantId, String(generation));

/**
 * Starts the lifecycle workflow of a transition in the transaction that writes it (after the change
 * path), with an audit record naming the workflow. Delete leaves its tombstone in the request; its
 * workflow purges only what no retention window or legal hold keeps (src/workflows/retention.ts).
 * Throws 423 `workflow.frozen` under a freeze that covers the tenant, 409 `workflow.in_progress`
 * when the tenant has an open workflow.
 */
export async function startLifecycleWorkflow(
  trx: Trx,
  ctx: RequestContext,
  t: {
    tenantId: string;
    tenantSlug: string;
    action: LifecycleAction;
    from: LifecycleState;
    to: LifecycleState;
    generation: number;
  },
): Promise<string> {
  await assertNotFrozen(trx, t.tenantId, lifecycleType(t.action));
  const id = lifecycleWorkflowId(t.tenantId, t.generation);
  const input: LifecycleInput = {
    action: t.action,
    from: t.from,
    to: t.to,
    tenantSlug: t.tenantSlug,
    generation: t.generation,
  };
  const started = await startWorkflow(trx, {
    id,
    tenantId: t.tenantId,
    type: lifecycleType(t.action),
    input,
    actor: ctx.actor,
    requestId: ctx.requestId,
    correlationId: ctx.correlationId,
  });
  if (started.created)
    await appendAudit(
      trx,
      auditEntryOf(ctx, {
        tenantId: t.tenantId,
        action: 'workflow.start',
        target: { kind: 'Workflow', id, slug: `${t.tenantSlug}/${t.action}` },
        before: null,
        after: { type: lifecycleType(t.action), state: 'Pending', input },
        outcome: 'success',
        decision: null,
      }),
    );
  return id;
}
