import type { RequestContext } from '../context/request-context.js';
import { type Settlement, settleAll } from '../controller/settle.js';
import type { Trx } from '../db/database.js';
import { provisionedCondition } from '../providers/observed-details.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import type { DesiredResource, ObservedResource, ResourceProvider } from '../providers/provider.js';
import { findById } from '../registry/object.repository.js';

/**
 * What the arriving side of a move (a migration's cut-over or rollback, a failover) holds for one
 * resource, observed by its provider just before the registry switches: the details the
 * controller's reconcile would observe once it has (the Ready condition's message). Plain JSON, so
 * a cell's agent returns it as a command's result.
 */
export interface Arrival {
  resourceId: string;
  provider: string;
  exists: boolean;
  drift: string[];
  details: Record<string, unknown>;
}

/**
 * Observes `desired` (the arriving side, its credentials still under the key `desired.id` until the
 * switch) as the resource `resourceId` will be once the switch commits: the secret reference named
 * is the resource's own, which the switch makes resolve to these credentials.
 */
export async function observeArrival(
  provider: ResourceProvider,
  resourceId: string,
  desired: DesiredResource,
): Promise<Arrival> {
  return arrivalOf(provider, resourceId, await provider.observe(desired));
}

/** What `provider` observed (or ensured) of the arriving side, as the resource `resourceId` (see observeArrival). */
export function arrivalOf(
  provider: Pick<ResourceProvider, 'name'>,
  resourceId: string,
  o: ObservedResource,
): Arrival {
  const details =
    'secretRef' in o.details ? { ...o.details, secretRef: SecretStore.ref(resourceId) } : o.details;
  return { resourceId, provider: provider.name, exists: o.exists, drift: o.drift, details };
}

/**
 * The status of the moved resources (`moved`, their ids), in the switch's own transaction (after
 * their registry rows changed): Ready at their current generation with the arriving side's details,
 * written and announced as the controller's reconcile writes and announces it
 * (src/controller/settle.ts: `integrationresource.ready` and its audit record when the phase
 * becomes Ready, the parents poked). So the credentials route answers with the new side the moment
 * the switch commits, with no Pending window in between. One whose arrival was not found in sync
 * (missing, drift, not observed) is Provisioning until the reconcile, which the switch enqueues for
 * every one (it finds nothing more to change for the others): never Ready with the leaving side's
 * details beside the arriving side's secret.
 */
export async function settleArrivals(
  trx: Trx,
  ctx: RequestContext,
  moved: string[],
  arrivals: Arrival[],
): Promise<void> {
  const items: Settlement[] = [];
  for (const id of moved) {
    const row = await findById(trx, 'IntegrationResource', id);
    if (!row) continue;
    const a = arrivals.find((x) => x.resourceId === id && x.exists && x.drift.length === 0);
    items.push({
      kind: 'IntegrationResource',
      row,
      status: a
        ? {
            phase: 'Ready',
            ready: provisionedCondition(a.provider, a.details),
          }
        : {
            phase: 'Provisioning',
            ready: {
              status: 'False',
              reason: 'Moved',
              message: 'Moved to another data plane: its reconcile there observes it next.',
            },
          },
    });
  }
  await settleAll(trx, items, () => ctx);
}
