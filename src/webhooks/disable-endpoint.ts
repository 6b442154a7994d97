import { recordChange } from '../changes/change-path.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { diff } from '../domain/diff.js';
import { findById, updateObject } from '../registry/object.repository.js';
import { stateOf } from '../registry/representation.js';

/**
 * Disables an endpoint through the change path (lineage, audit, `webhookendpoint.disabled` event),
 * with a `Ready=False` condition saying why. Its pending deliveries stay queued: re-enabling it (apply
 * with `enabled: true`) resumes them in order. Returns false when it was already disabled or is gone.
 */
export async function disableEndpoint(
  trx: Trx,
  ctx: RequestContext,
  endpointId: string,
  reason: string,
  message: string,
): Promise<boolean> {
  const row = await findById(trx, 'WebhookEndpoint', endpointId, { forUpdate: true });
  if (!row || (row.spec as { enabled?: boolean }).enabled === false) return false;
  const prior = stateOf(row);
  const updated = await updateObject(trx, 'WebhookEndpoint', endpointId, {
    spec: JSON.stringify({ ...(row.spec as object), enabled: false }),
    conditions: JSON.stringify([
      { type: 'Ready', status: 'False', reason, message, lastTransitionTime: new Date().toISOString() },
    ]),
  });
  const after = stateOf(updated);
  await recordChange(trx, ctx, {
    kind: 'WebhookEndpoint',
    objectId: endpointId,
    slug: updated.slug,
    tenantId: updated.tenant_id ?? null,
    action: 'disable',
    generation: updated.generation,
    before: prior,
    after,
    changes: diff(prior, after),
  });
  return true;
}
