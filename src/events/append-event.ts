import { type RawBuilder, sql } from 'kysely';
import type { Trx } from '../db/database.js';
import { newObjectId } from '../domain/identifiers.js';
import { cloudEventType, type EventName } from '../registry/kinds/index.js';

/** One event as the writer states it; id, sequence and time are assigned here and by the database. */
export interface EventInput {
  /** The tenant the event concerns; null for a platform event (its own 'platform' stream). */
  tenantId: string | null;
  name: EventName;
  /** The object, e.g. `tenants/<uuid>`. */
  subject: string;
  data: unknown;
  correlationId: string;
  /** W3C trace context of the change, continued by webhook attempts. */
  traceparent?: string | null;
}

/**
 * The data-modifying CTEs that append one event, for embedding in the caller's statement: `event`
 * inserts the outbox row, and `event_done` (one row; the caller must select from it, or Postgres
 * skips it) is what the caller selects from.
 *
 * Concurrency contract: the event is written without its sequence number; at COMMIT a deferred
 * trigger (migration 0045, `tenantry_sequence_events`) bumps its stream's counter row in
 * `event_sequences`, numbers the transaction's events, fans them out to matching webhook endpoints
 * and NOTIFYs listeners (delivered at commit). The counter's row lock is held only while the
 * transaction commits, so a stream's sequence is gap-free (a rolled-back transaction rolls back its
 * bump too) and in commit order, while one tenant's changes run side by side up to their commits
 * (issue 17). Different tenants never wait on each other. The number is not known inside the
 * transaction: consumers (GET /v1/events, SSE, webhooks, the Kafka relay) read committed events only.
 *
 * `onlyIf` names an earlier CTE of the caller's statement: the event is appended only when it
 * returned a row (e.g. a fenced update that may match nothing), so an autocommit statement needs
 * no rollback to leave no event behind.
 */
export function appendEventSql(e: EventInput, onlyIf?: string): RawBuilder<unknown> {
  return sql`${appendEventsSql([e], 'event', onlyIf)}, event_done as (
      select id from event
    )`;
}

/**
 * The data-modifying CTE `name` that appends any number of events in one insert (a settled batch of
 * the controller's), in their order, for embedding in the caller's statement; it returns their ids.
 * appendEventSql is this insert of one, under the same concurrency contract (numbered at commit).
 */
export function appendEventsSql(
  events: readonly EventInput[],
  name = 'event',
  onlyIf?: string,
): RawBuilder<unknown> {
  const rows = events.map((e, ord) => ({
    ord,
    // Time-ordered, like new objects' keys: the outbox's primary-key entries land on its right-hand pages.
    id: newObjectId(),
    tenant_id: e.tenantId,
    type: cloudEventType(e.name),
    subject: e.subject,
    data: e.data,
    correlation_id: e.correlationId,
    traceparent: e.traceparent ?? null,
  }));
  const insert = sql`insert into outbox_events (id, tenant_id, type, subject, data, correlation_id, traceparent)`;
  const guard = onlyIf ? sql`where exists (select from ${sql.id(onlyIf)})` : sql``;
  const one = rows.length === 1 ? rows[0] : undefined;
  // One event (every change of one object, every workflow step): its values as parameters, which
  // costs the server 0.02-0.045 ms less than unpacking a JSON array and sorting it.
  if (one)
    return sql`${sql.id(name)} as (
      ${insert}
      select ${one.id}::uuid, ${one.tenant_id}::uuid, ${one.type}, ${one.subject}, ${JSON.stringify(one.data)}::jsonb,
        ${one.correlation_id}, ${one.traceparent}
      ${guard}
      returning id
    )`;
  return sql`${sql.id(name)} as (
      ${insert}
      select x.id, x.tenant_id, x.type, x.subject, x.data, x.correlation_id, x.traceparent
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as x(ord int, id uuid, tenant_id uuid, type text,
        subject text, data jsonb, correlation_id text, traceparent text)
      ${guard}
      order by x.ord
      returning id
    )`;
}

/**
 * Appends one event in the caller's transaction (e.g. a promotion's); it is numbered in its
 * stream when the transaction commits. Returns its id.
 */
export async function appendEvent(trx: Trx, e: EventInput): Promise<string> {
  const r = await sql<{ id: string }>`with ${appendEventSql(e)} select id from event_done`.execute(trx);
  return r.rows[0]!.id;
}

/** Appends events in the caller's transaction, in one statement (appendEventsSql); none: no round trip. */
export async function appendEvents(trx: Trx, events: readonly EventInput[]): Promise<void> {
  if (events.length > 0) await sql`with ${appendEventsSql(events)} select count(*) from event`.execute(trx);
}
