import type { Config } from '../config/config.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, type Db } from '../db/database.js';
import { releaseDeliveries } from './claim-deliveries.js';
import {
  type AttemptResult,
  completeDeliveries,
  failingSince,
  type Outcome,
  type Settlement,
} from './complete-delivery.js';
import { disableEndpoint } from './disable-endpoint.js';
import { nextAttemptDelay } from './retry-schedule.js';

/**
 * Pure: what one attempt comes to. 2xx: delivered. 410 Gone: parked (the endpoint is disabled).
 * Anything else: retried after the schedule's delay (full jitter, `Retry-After` a floor), or dead
 * once the schedule is exhausted.
 */
export function outcomeOf(
  attempt: number,
  result: AttemptResult & { retryAfterMs: number | null },
  schedule: readonly number[],
): Outcome {
  if (result.statusCode !== null && result.statusCode >= 200 && result.statusCode < 300)
    return { kind: 'delivered' };
  if (result.statusCode === 410)
    return { kind: 'parked', reason: 'endpoint answered 410 Gone; endpoint disabled' };
  const delay = nextAttemptDelay(attempt, schedule, result.retryAfterMs);
  return delay === null
    ? { kind: 'dead', reason: `gave up after ${attempt} attempts: ${result.error}` }
    : { kind: 'retry', delayMs: delay };
}

/** The metric label of an outcome. */
export const outcomeLabel = (o: Outcome): string =>
  ({ delivered: 'delivered', retry: 'retry', dead: 'dead_letter', parked: 'endpoint_gone' })[o.kind];

/**
 * Settles one round of attempts, whoever sent them (the control plane's dispatcher or a cell's
 * agent), in one transaction: the deliveries not attempted are released, every attempt is recorded
 * and its delivery settled (two statements whatever their number), and an endpoint is disabled on
 * 410 Gone or once it has failed for longer than `webhookDisableAfterMs`.
 *
 * Concurrency contract: as `completeDeliveries` and `releaseDeliveries`: only rows `owner` still
 * holds are settled or released; an attempt whose lease was taken over is recorded, not settled.
 */
export async function settleRound(
  db: Db,
  owner: string,
  events: Pick<Config['events'], 'webhookDisableAfterMs'>,
  settlements: Settlement[],
  released: string[],
): Promise<Set<string>> {
  return asPlatform(db, async (trx) => {
    await releaseDeliveries(trx, owner, released);
    const settled = await completeDeliveries(trx, owner, settlements);
    const failing = new Set<string>();
    for (const { delivery: d, outcome } of settlements) {
      if (!settled.has(d.id) || outcome.kind === 'delivered') continue;
      const ctx = systemContext('tenantry-webhooks', { correlationId: d.correlation_id });
      if (outcome.kind === 'parked') {
        await disableEndpoint(
          trx,
          ctx,
          d.endpoint_id,
          'EndpointGone',
          'The endpoint answered 410 Gone; re-enable it to resume deliveries.',
        );
        continue;
      }
      // Once per endpoint per round.
      if (failing.has(d.endpoint_id)) continue;
      failing.add(d.endpoint_id);
      const since = await failingSince(trx, d.endpoint_id);
      if (since && Date.now() - since.getTime() >= events.webhookDisableAfterMs) {
        await disableEndpoint(
          trx,
          ctx,
          d.endpoint_id,
          'EndpointFailing',
          `Every attempt since ${since.toISOString()} failed; re-enable it to resume deliveries.`,
        );
      }
    }
    return settled;
  });
}
