import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import {
  allowedActions,
  LIFECYCLE_STATES,
  type LifecycleAction,
  type LifecycleState,
  nextState,
} from '../domain/lifecycle.js';
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
    throw new ConflictError('lifecycle.invalid_transition', refusal(row.slug, from, action), {
      details: { from, action, allowed: allowedActions(from) },
    });
  }
  if (action === 'delete') return deleteWithChildren(trx, ctx, policy, 'Tenant', row);
  const updated = await updateObject(trx, 'Tenant', row.id, { lifecycle: to, phase: 'Pending' });
  await recordObjectChange(trx, ctx, 'Tenant', action, row, updated);
  return updated;
}

const DONE: Record<LifecycleAction, string> = {
  activate: 'activated',
  suspend: 'suspended',
  resume: 'resumed',
  archive: 'archived',
  delete: 'deleted',
};

const DOING: Record<LifecycleAction, string> = {
  activate: 'activating',
  suspend: 'suspending',
  resume: 'resuming',
  archive: 'archiving',
  delete: 'deleting',
};

/**
 * "Tenant circlek-eu-uat is Active; archive it before deleting it.": what the operator does next,
 * as a sentence (the first allowed action that leads towards the wanted one, else what is allowed).
 */
function refusal(slug: string, from: LifecycleState, action: LifecycleAction): string {
  const is = `Tenant ${slug} is ${from}`;
  if (LIFECYCLE_STATES.some((s) => nextState(s, action) === from)) return `${is} already.`;
  const allowed = allowedActions(from);
  // The action that makes the wanted one possible (archive before delete, activate before suspend, …).
  const first = allowed.find((a) => {
    const to = nextState(from, a);
    return to !== undefined && nextState(to, action) !== undefined;
  });
  if (first) return `${is}; ${first} it before ${DOING[action]} it.`;
  if (allowed.length === 0) return `${is}; it cannot change any more.`;
  return `${is}; it cannot be ${DONE[action]} (allowed: ${allowed.join(', ')}).`;
}
