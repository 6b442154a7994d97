import { type RawBuilder, type Selectable, sql } from 'kysely';
import type { Trx } from '../db/database.js';
import type { AuditRecordTable } from '../db/schema.js';
import type { AuditRecord } from './audit-hash.js';
import type { AuditWindow, RetentionMark } from './audit-verifier.js';

/**
 * An audit record as read for hashing, by `tenantry_audit_scan` and by RECORD_COLUMNS over
 * RECORD_FROM: audit_records' own columns with `time` as exact microsecond text
 * (`tenantry_audit_time`) instead of a Date, and its position (audit_positions: seq, prev_hash,
 * hash), null while it is still queued. As in the row types, `seq` (bigint) comes back as a string
 * and the jsonb columns parsed.
 */
export type AuditRecordRow = Omit<Selectable<AuditRecordTable>, 'time'> & {
  time: string;
  seq: number | string | null;
  prev_hash: string | null;
  hash: string | null;
};

/** A record and its position, if it has one: `select ${RECORD_COLUMNS} from ${RECORD_FROM}`. */
export const RECORD_FROM: RawBuilder<unknown> = sql`audit_records a left join audit_positions p on p.record_id = a.id`;

export const RECORD_COLUMNS: RawBuilder<unknown> = sql`a.id, coalesce(p.chain, a.chain) as chain, p.seq,
  tenantry_audit_time(a.time) as time, a.tenant_id, a.app_id, a.actor_principal, a.actor_kind, a.session_id,
  a.action, a.target_kind, a.target_id, a.target_slug, a.before, a.after, a.outcome, a.decision, a.request_id,
  a.correlation_id, p.prev_hash, p.hash`;

/** A sequenced record; throws for an unsequenced one (whose position and hash do not exist yet). */
export function recordFromRow(r: AuditRecordRow): AuditRecord {
  if (r.seq === null || r.prev_hash === null || r.hash === null)
    throw new Error(`audit record ${r.id} is not sequenced yet`);
  return {
    v: 1,
    id: r.id,
    chain: r.chain,
    seq: Number(r.seq),
    time: r.time,
    tenantId: r.tenant_id,
    appId: r.app_id,
    actor: { principal: r.actor_principal, kind: r.actor_kind },
    sessionId: r.session_id,
    action: r.action,
    target: { kind: r.target_kind, id: r.target_id, slug: r.target_slug },
    before: r.before,
    after: r.after,
    outcome: r.outcome,
    decision: r.decision,
    requestId: r.request_id,
    correlationId: r.correlation_id,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** A record as search shows it: an unsequenced one has no position or hash yet (null). */
export type AuditItem = Omit<AuditRecord, 'seq' | 'prevHash' | 'hash'> & {
  seq: number | null;
  prevHash: string | null;
  hash: string | null;
};

export function itemFromRow(r: AuditRecordRow): AuditItem {
  if (r.seq !== null) return recordFromRow(r);
  return {
    ...recordFromRow({ ...r, seq: 0, prev_hash: '', hash: '' }),
    seq: null,
    prevHash: null,
    hash: null,
  };
}

/**
 * Reads every record of one chain (or of all chains) in (chain, seq) order, in batches by keyset
 * on the unique (chain, seq) index. The next batch is requested before the current one is handed
 * out, so the database reads while the caller hashes. Run it in a repeatable-read transaction for
 * one consistent snapshot, in the platform scope.
 */
export async function* streamRecords(
  trx: Trx,
  opts: { chain?: string; batchSize?: number; fromSeq?: number; toSeq?: number } = {},
): AsyncGenerator<AuditRecord[]> {
  const size = opts.batchSize ?? 5000;
  // tenantry_audit_scan: platform scope only; reads by the (chain, seq) index (see migration 0002).
  const fetch = (after: { chain: string; seq: number } | null) =>
    sql<AuditRecordRow>`select * from tenantry_audit_scan(${opts.chain ?? null}::text, ${after?.chain ?? ''}::text,
      ${after?.seq ?? (opts.fromSeq ?? 1) - 1}::bigint, ${size}::integer)`.execute(trx);
  const toSeq = opts.toSeq ?? Number.POSITIVE_INFINITY;
  let pending = fetch(null);
  for (;;) {
    const { rows } = await pending;
    // The scan returns sequenced records only (seq > after).
    const inRange = rows.filter((r) => Number(r.seq) <= toSeq);
    if (inRange.length === 0) return;
    const last = rows[rows.length - 1]!;
    const more = rows.length === size && inRange.length === rows.length;
    if (more) pending = fetch({ chain: last.chain, seq: Number(last.seq) });
    yield inRange.map(recordFromRow);
    if (!more) return;
  }
}

/**
 * Per chain, the contiguous seq range of the records written in [since, until): from the first
 * record at or after `since` to the last before `until`, with the hash the range starts from.
 * Records of one chain take their time when their transaction began, so a range can hold a record a
 * few milliseconds outside the window; it never has a hole.
 */
export async function loadWindows(
  trx: Trx,
  opts: { chain?: string; since?: string; until?: string },
): Promise<AuditWindow[]> {
  const since = opts.since ?? '-infinity';
  const until = opts.until ?? 'infinity';
  const { rows } = await sql<{ chain: string; from_seq: number; to_seq: number; prev_hash: string }>`
    with ranges as (
      select p.chain, min(p.seq) filter (where a.time >= ${since}::timestamptz) as from_seq,
             max(p.seq) filter (where a.time < ${until}::timestamptz) as to_seq
      from audit_positions p join audit_records a on a.id = p.record_id
      where ${opts.chain === undefined ? sql`true` : sql`p.chain = ${opts.chain}`}
      group by p.chain)
    select r.chain, r.from_seq, r.to_seq, p.prev_hash from ranges r
    join audit_positions p on p.chain = r.chain and p.seq = r.from_seq
    where r.from_seq <= r.to_seq order by r.chain`.execute(trx);
  return rows.map((r) => ({
    chain: r.chain,
    fromSeq: r.from_seq,
    toSeq: r.to_seq,
    prevHash: r.prev_hash,
  }));
}

export async function loadRetention(trx: Trx, chain?: string): Promise<RetentionMark[]> {
  const { rows } = await sql<{
    id: string;
    time: string;
    chain: string;
    through_seq: number;
    through_hash: string;
    checkpoint_id: string;
    deleted: number;
  }>`select id, tenantry_audit_time(time) as time, chain, through_seq, through_hash, checkpoint_id, deleted
     from audit_retention where ${chain === undefined ? sql`true` : sql`chain = ${chain}`}
     order by chain, through_seq`.execute(trx);
  return rows.map((r) => ({
    id: r.id,
    time: r.time,
    chain: r.chain,
    throughSeq: r.through_seq,
    throughHash: r.through_hash,
    checkpointId: r.checkpoint_id,
    deleted: r.deleted,
  }));
}

export async function loadHeads(
  trx: Trx,
  chain?: string,
): Promise<{ chain: string; seq: number; hash: string }[]> {
  const { rows } = await sql<{ chain: string; seq: number; hash: string }>`
    select chain, seq, hash from audit_chain_heads
    where ${chain === undefined ? sql`true` : sql`chain = ${chain}`} order by chain`.execute(trx);
  return rows.map((r) => ({ chain: r.chain, seq: r.seq, hash: r.hash }));
}

/** The entries not yet sequenced (still queued; of one chain, or all), and the time of the oldest. */
export async function countUnsequenced(
  trx: Trx,
  chain?: string,
): Promise<{ records: number; oldest: string | null }> {
  const { rows } = await sql<{ n: number; oldest: string | null }>`
    select count(*)::int as n, tenantry_audit_time(min(q.time)) as oldest from audit_queue q
    ${chain !== undefined ? sql`where q.chain = ${chain}` : sql``}`.execute(trx);
  return { records: rows[0]?.n ?? 0, oldest: rows[0]?.oldest ?? null };
}

/**
 * A chain's leaf hashes (the v1 record hashes) in seq order: those retention pruned (kept in
 * audit_pruned_leaves) and the positions of the records there are. Whole when seq runs 1..n
 * without a gap.
 */
export async function loadLeafRows(trx: Trx, chain: string): Promise<{ seq: number; hash: string }[]> {
  const { rows } = await sql<{ seq: string; hash: string }>`
    select seq, hash from audit_pruned_leaves where chain = ${chain}
    union all
    select p.seq, p.hash from audit_positions p join audit_records a on a.id = p.record_id where p.chain = ${chain}
    order by seq`.execute(trx);
  return rows.map((r) => ({ seq: Number(r.seq), hash: r.hash }));
}
