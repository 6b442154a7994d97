import { sql } from 'kysely';
import type { Trx } from '../db/database.js';
import type { ClaimedDelivery } from './claim-deliveries.js';

/** What one attempt came to. */
export interface AttemptResult {
  startedAt: Date;
  latencyMs: number;
  statusCode: number | null;
  responseExcerpt: string | null;
  error: string | null;
}

export type Outcome =
  | { kind: 'delivered' }
  | { kind: 'retry'; delayMs: number }
  | { kind: 'dead'; reason: string }
  /** 410 Gone: the endpoint is disabled; the delivery waits (pending) in case it is re-enabled. */
  | { kind: 'parked'; reason: string };

/**
 * Records the attempt and settles the delivery, in the caller's transaction.
 *
 * Concurrency contract: the delivery is only settled while `owner` still holds its lease
 * (`locked_by = owner`); if the lease expired and another dispatcher took it over, only the attempt
 * is recorded and the new owner decides. Returns whether the delivery was settled.
 */
export async function completeDelivery(
  trx: Trx,
  owner: string,
  d: ClaimedDelivery,
  result: AttemptResult,
  outcome: Outcome,
): Promise<boolean> {
  await sql`
    insert into webhook_attempts
      (tenant_id, delivery_id, endpoint_id, event_id, attempt, trigger, status_code, latency_ms, response_excerpt, error, started_at)
    values (${d.tenant_id}, ${d.id}, ${d.endpoint_id}, ${d.event_id}, ${d.attempts}, ${d.trigger}, ${result.statusCode},
      ${result.latencyMs}, ${result.responseExcerpt}, ${result.error}, ${result.startedAt})`.execute(trx);
  const error = outcome.kind === 'dead' || outcome.kind === 'parked' ? outcome.reason : result.error;
  const r = await sql`
    update webhook_deliveries set
      status = ${outcome.kind === 'delivered' ? 'delivered' : outcome.kind === 'dead' ? 'dead' : 'pending'},
      next_attempt_at = now() + ${outcome.kind === 'retry' ? outcome.delayMs : 0} * interval '1 millisecond',
      locked_by = null, locked_until = null,
      last_status = ${result.statusCode}, last_error = ${error}, updated_at = now()
    where id = ${d.id} and locked_by = ${owner}`.execute(trx);
  return Number(r.numAffectedRows ?? 0) === 1;
}

/** When the endpoint's current run of failures began (the first failed attempt after its last success). */
export async function failingSince(trx: Trx, endpointId: string): Promise<Date | null> {
  const r = await sql<{ since: Date | null }>`
    select min(a.started_at) as since from webhook_attempts a
    where a.endpoint_id = ${endpointId}
      and a.id > coalesce((select max(s.id) from webhook_attempts s
                           where s.endpoint_id = ${endpointId} and s.status_code between 200 and 299), 0)`.execute(
    trx,
  );
  return r.rows[0]?.since ?? null;
}
