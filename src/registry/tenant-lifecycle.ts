import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { allowedActions, type LifecycleAction, type LifecycleState, nextState } from '../domain/lifecycle.js';
import { ConflictError } from '../errors/errors.js';
import type { PlacementPolicy } from '../placement/placement.policy.js';
import { type ObjectRow, updateObject } from './object.repository.js';
import { checkGeneration, deleteWithChildren, locate, recordObjectChange } from './object-changes.js';

/**
 * A tenant lifecycle action (DESIGN.md §1) in the caller's transaction, so that a lifecycle
 * orchestrator can run it inside its own; `delete` also removes the tenant's deployments and
 * resources. Locks the tenant row until the transaction ends.
 */
export async function transitionTenant(
  trx: Trx,
  ctx: RequestContext,
  policy: PlacementPolicy,
  ref: string,
  action: LifecycleAction,
  expectedGeneration?: number,
): Promise<ObjectRow> {
  const row = await locate(trx, 'Tenant', ref, { forUpdate: true });
  checkGeneration('Tenant', row, expectedGeneration);
  const from = row.lifecycle as LifecycleState;
  const to = nextState(from, action);
  if (!to) {
    throw new ConflictError(
      'lifecycle.invalid_transition',
      `A ${from} tenant cannot ${action}; allowed: ${allowedActions(from).join(', ') || 'none'}.`,
      {
        details: { from, action, allowed: allowedActions(from) },
      },
    );
  }
  if (action === 'delete') return deleteWithChildren(trx, ctx, policy, 'Tenant', row);
  const updated = await updateObject(trx, 'Tenant', row.id, { lifecycle: to, phase: 'Pending' });
  await recordObjectChange(trx, ctx, 'Tenant', action, row, updated);
  return updated;
}
