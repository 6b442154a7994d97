import { sql } from 'kysely';
import type { Trx } from '../db/database.js';
import type { OutboxRow } from './cloud-event.js';

/**
 * Reads one stream (a tenant's UUID or 'platform') after a sequence, in order.
 *
 * Concurrency contract: a stream's sequence is assigned under its counter row lock, held to commit
 * (src/events/append-event.ts), so sequence order is commit order: once `n` is visible every
 * `m < n` is too, and a reader that resumes after `n` never misses one. Row-level security limits a
 * tenant caller to its own stream.
 */
export async function readStream(
  trx: Trx,
  stream: string,
  after: number,
  limit: number,
): Promise<OutboxRow[]> {
  const r = await sql<OutboxRow>`
    select id, tenant_id, type, subject, time, data, correlation_id, stream, seq, txid::text as txid, position
    from outbox_events where stream = ${stream} and seq > ${after}
    order by seq limit ${limit}`.execute(trx);
  return r.rows;
}

/** A position in the merged log of every stream. */
export interface GlobalCursor {
  txid: string;
  position: string;
}

/**
 * Reads every stream the caller may see, after a global cursor, in (txid, position) order.
 *
 * Concurrency contract: transactions commit out of txid order, so only rows of transactions older
 * than the oldest one still running (`pg_snapshot_xmin`) are returned; nothing can later appear
 * before a cursor handed out. Events of a running transaction wait for it to end.
 */
export async function readAll(trx: Trx, after: GlobalCursor | null, limit: number): Promise<OutboxRow[]> {
  const r = await sql<OutboxRow>`
    select id, tenant_id, type, subject, time, data, correlation_id, stream, seq, txid::text as txid, position
    from outbox_events
    where txid < pg_snapshot_xmin(pg_current_snapshot())
      ${after ? sql`and (outbox_events.txid, position) > (${after.txid}::xid8, ${after.position}::bigint)` : sql``}
    order by outbox_events.txid, outbox_events.position limit ${limit}`.execute(trx);
  return r.rows;
}

/**
 * The newest `limit` events of one stream (`stream`), or of every stream the caller may see (null),
 * newest first: where a live reader starts. The merged log has the same horizon as readAll, so a
 * cursor made from its newest row is one readAll can resume after.
 */
export async function readTail(trx: Trx, stream: string | null, limit: number): Promise<OutboxRow[]> {
  const r = await sql<OutboxRow>`
    select id, tenant_id, type, subject, time, data, correlation_id, stream, seq, txid::text as txid, position
    from outbox_events
    where ${stream === null ? sql`txid < pg_snapshot_xmin(pg_current_snapshot())` : sql`stream = ${stream}`}
    order by ${stream === null ? sql`outbox_events.txid desc, outbox_events.position desc` : sql`seq desc`}
    limit ${limit}`.execute(trx);
  return r.rows;
}

export const encodeGlobalCursor = (row: { txid: string; position: number | string }): string =>
  `g${row.txid}-${row.position}`;

export function decodeGlobalCursor(text: string): GlobalCursor | undefined {
  const m = /^g(\d{1,20})-(\d{1,19})$/.exec(text);
  return m ? { txid: m[1]!, position: m[2]! } : undefined;
}
