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

/** What settling needs of a delivery (a claimed one, or one a cell's agent reported on). */
export type SettledDelivery = Pick<
  ClaimedDelivery,
  'id' | 'tenant_id' | 'endpoint_id' | 'event_id' | 'attempts' | 'trigger' | 'correlation_id'
>;

export interface Settlement {
  delivery: SettledDelivery;
  result: AttemptResult;
  outcome: Outcome;
}

/**
 * Records the attempts and settles the deliveries of one dispatch round, in the caller's transaction,
 * with two statements whatever their number.
 *
 * Concurrency contract: a delivery is only settled while `owner` still holds its lease
 * (`locked_by = owner`); if the lease expired and another dispatcher took it over, only the attempt
 * is recorded and the new owner decides. Returns the ids that were settled.
 */
export async function completeDeliveries(trx: Trx, owner: string, items: Settlement[]): Promise<Set<string>> {
  if (items.length === 0) return new Set();
  const rows = JSON.stringify(
    items.map(({ delivery: d, result: r, outcome: o }) => ({
      id: d.id,
      tenant_id: d.tenant_id,
      endpoint_id: d.endpoint_id,
      event_id: d.event_id,
      attempt: d.attempts,
      trigger: d.trigger,
      status_code: r.statusCode,
      latency_ms: r.latencyMs,
      response_excerpt: r.responseExcerpt,
      error: o.kind === 'dead' || o.kind === 'parked' ? o.reason : r.error,
      started_at: r.startedAt.toISOString(),
      status: o.kind === 'delivered' ? 'delivered' : o.kind === 'dead' ? 'dead' : 'pending',
      delay_ms: o.kind === 'retry' ? o.delayMs : 0,
    })),
  );
  await sql`
    insert into webhook_attempts
      (tenant_id, delivery_id, endpoint_id, event_id, attempt, trigger, status_code, latency_ms, response_excerpt, error, started_at)
    select tenant_id, id, endpoint_id, event_id, attempt, trigger, status_code, latency_ms, response_excerpt, error, started_at
    from jsonb_to_recordset(${rows}::jsonb) as x(id uuid, tenant_id uuid, endpoint_id uuid, event_id uuid, attempt int,
      trigger text, status_code int, latency_ms int, response_excerpt text, error text, started_at timestamptz)`.execute(
    trx,
  );
  const r = await sql<{ id: string }>`
    update webhook_deliveries d set
      status = x.status,
      attempts = greatest(d.attempts, x.attempt),
      next_attempt_at = now() + x.delay_ms * interval '1 millisecond',
      locked_by = null, locked_until = null,
      last_status = x.status_code, last_error = x.error, updated_at = now()
    from jsonb_to_recordset(${rows}::jsonb) as x(id uuid, status text, attempt int, delay_ms bigint, status_code int, error text)
    where d.id = x.id and d.locked_by = ${owner}
    returning d.id`.execute(trx);
  return new Set(r.rows.map((row) => row.id));
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
