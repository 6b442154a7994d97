import { randomUUID } from 'node:crypto';
import { type RawBuilder, sql } from 'kysely';
import type { Trx } from '../db/database.js';
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
 * The data-modifying CTEs that append one event, for embedding in the caller's statement:
 * `event_seq` bumps the stream's counter, `event` inserts the outbox row with that sequence, and
 * `event_done` (one row; the caller must select from it, or Postgres skips it) fans the event out to
 * matching webhook endpoints and NOTIFYs listeners (delivered at commit).
 *
 * Concurrency contract: `insert … on conflict do update` on `event_sequences` takes the stream's
 * counter row lock until the transaction ends, so a stream's writers are serialised and its sequence
 * is gap-free and in commit order (a rolled-back transaction rolls back its bump too). Different
 * tenants never wait on each other. (Since the audit record no longer takes a chain-head lock, this
 * counter is what serialises one tenant's changes from here to commit.)
 *
 * `onlyIf` names an earlier CTE of the caller's statement: the event is appended only when it
 * returned a row (e.g. a fenced update that may match nothing), so an autocommit statement needs
 * no rollback to leave no event behind.
 */
export function appendEventSql(e: EventInput, onlyIf?: string): RawBuilder<unknown> {
  const id = randomUUID();
  const stream = e.tenantId?.toLowerCase() ?? 'platform';
  const type = cloudEventType(e.name);
  return sql`event_seq as (
      insert into event_sequences as s (stream, seq)
      ${onlyIf ? sql`select ${stream}, 1 where exists (select from ${sql.id(onlyIf)})` : sql`values (${stream}, 1)`}
      on conflict (stream) do update set seq = s.seq + 1
      returning s.seq
    ), event as (
      insert into outbox_events (id, tenant_id, type, subject, data, correlation_id, seq, traceparent)
      select ${id}, ${e.tenantId}, ${type}, ${e.subject}, ${JSON.stringify(e.data)}, ${e.correlationId}, event_seq.seq,
        ${e.traceparent ?? null}
      from event_seq
      returning seq
    ), event_done as (
      select tenantry_event_appended(${id}, ${e.tenantId}::uuid, ${type}, ${e.subject}, event.seq) as deliveries, event.seq
      from event
    )`;
}

/** Appends one event in the caller's transaction (e.g. the controller's `ready`/`failed`); returns its sequence. */
export async function appendEvent(trx: Trx, e: EventInput): Promise<number> {
  const r = await sql<{ seq: number }>`with ${appendEventSql(e)} select seq from event_done`.execute(trx);
  return r.rows[0]!.seq;
}
