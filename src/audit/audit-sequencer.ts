import { type RawBuilder, type Selectable, sql } from 'kysely';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import type { AuditRecordTable } from '../db/schema.js';
import { loadLeafRows } from './audit.repository.js';
import { type AuditDocumentText, GENESIS_HASH, hashAuditText } from './audit-hash.js';
import { auditTime } from './copy-records.js';
import { CompactRange, leafHash } from './merkle.js';

/**
 * Transaction-level advisory lock key of the sequencer ('tens'): every batch takes it shared, so
 * whoever takes it exclusively stops all sequencing; each part's batch also takes (key, part)
 * exclusively, which elects one sequencer per part.
 */
const SEQUENCER_LOCK = 0x74656e73;

/**
 * The logs are integrated in this many parts, each its own transactions on its own connection, in
 * parallel: logs are independent (a batch touches its logs' heads, positions and trees only), so a
 * busy server's sequencer is not one connection among all the writers'. A log's part is fixed by
 * its name (partOf), so one log is always integrated by one part, in order.
 */
export const SEQUENCER_PARTS = 8;

/** The part of the log whose chain is `chain` (SQL over a chain column). */
const partOf = (chain: RawBuilder<unknown>) =>
  sql`get_byte(decode(md5(${chain}), 'hex'), 0) % ${sql.lit(SEQUENCER_PARTS)}`;

export interface IntegratedBatch {
  /** Entries integrated by this batch. */
  records: number;
  /** Each chain this batch moved: its new head (seq = the chain's tree size). */
  heads: Map<string, { seq: number; hash: string }>;
  /** Per entry, ms from its write (its `time`) to its integration. */
  delaysMs: number[];
  /** The chains whose Merkle tree (audit_trees) advanced with this batch. */
  trees: string[];
}

/** A queued record as the sequencer reads it: its columns as text, and its chain's head on the chain's first. */
type QueuedRow = Omit<Selectable<AuditRecordTable>, 'time' | 'before' | 'after' | 'decision'> & {
  time: string;
  before: string | null;
  after: string | null;
  decision: string | null;
  age_ms: string;
  head_seq: string | null;
  head_hash: string | null;
  tree_size: string | null;
  tree_peaks: string[] | null;
  first: boolean;
};

/** The v1 document of a queued record at its chain position (what its hash covers). */
function documentOf(r: QueuedRow, seq: number, prevHash: string): AuditDocumentText {
  return {
    v: 1,
    id: r.id,
    chain: r.chain,
    seq,
    time: auditTime(r.time)!,
    tenantId: r.tenant_id,
    appId: r.app_id,
    actor: { principal: r.actor_principal, kind: r.actor_kind },
    sessionId: r.session_id,
    action: r.action,
    target: { kind: r.target_kind, id: r.target_id, slug: r.target_slug },
    before: r.before ?? 'null',
    after: r.after ?? 'null',
    outcome: r.outcome,
    decision: r.decision ?? 'null',
    requestId: r.request_id,
    correlationId: r.correlation_id,
    prevHash,
  };
}

/**
 * Integrates up to `limit` committed unsequenced audit entries (audit_queue), oldest first, in one
 * transaction: per chain, each gets the next seq, the previous record's hash and its own v1 hash
 * (RFC 9162 leaf of the chain's Merkle tree), inserted into audit_positions by
 * tenantry_audit_sequence(), which takes them off the queue and refuses a batch that does not
 * continue every chain's head gap-free and linked. The record itself is not written again.
 *
 * Only the logs of `part` (of SEQUENCER_PARTS). Concurrency contract: any number of processes may
 * call it; `pg_try_advisory_xact_lock` elects one sequencer per part and batch, and the others
 * return null at once. A sequencer that dies mid-batch rolls
 * back, releasing the lock; its entries stay unsequenced and the next caller integrates them —
 * nothing is lost. Entries committed while a batch runs are left for the next one.
 */
export async function integrateAuditBatch(db: Db, limit = 5000, part = 0): Promise<IntegratedBatch | null> {
  return asPlatform(db, async (trx) => {
    // The time is hashed as PostgreSQL prints a timestamptz in UTC, ISO (auditTime formats it, as
    // verify does): no SQL function per record.
    const { rows: lock } = await sql<{ ok: boolean }>`
      select pg_try_advisory_xact_lock_shared(${SEQUENCER_LOCK}::bigint)
        and pg_try_advisory_xact_lock(${SEQUENCER_LOCK}::int, ${part}::int)
        and set_config('timezone', 'UTC', true) is not null
        and set_config('datestyle', 'ISO, YMD', true) is not null as ok`.execute(trx);
    if (!lock[0]?.ok) return null;
    // The queue's oldest entries (its primary key's order), each with its record as text (the jsonb
    // values as PostgreSQL prints them, hashed without parsing), and on the first entry of each
    // chain that chain's head and tree. No row locks: the part's advisory lock makes this the only
    // sequencer of these chains (a publisher writes only a tree's published_* columns), and
    // tenantry_audit_sequence locks each head and refuses a batch that does not continue it.
    const { rows } = await sql<QueuedRow>`
      select a.id, a.chain, a.time::text as time, a.tenant_id, a.app_id, a.actor_principal, a.actor_kind,
        a.session_id, a.action, a.target_kind, a.target_id, a.target_slug, a.before::text as before,
        a.after::text as after, a.outcome, a.decision::text as decision, a.request_id, a.correlation_id,
        extract(epoch from clock_timestamp() - a.time) * 1000 as age_ms,
        h.seq as head_seq, h.hash as head_hash, t.size as tree_size, t.peaks as tree_peaks, q.first
      from (select q.record_id, q.time,
              row_number() over (partition by q.chain order by q.time, q.record_id) = 1 as first
            from audit_queue q
            -- A queued record that has a position (only a forger with the triggers off writes one) is
            -- left queued, counted as unsequenced, rather than stopping every batch.
            where ${partOf(sql`q.chain`)} = ${part}
              and not exists (select from audit_positions p where p.record_id = q.record_id)
            order by q.time, q.record_id limit ${limit}) q
      join audit_records a on a.id = q.record_id
      left join audit_chain_heads h on q.first and h.chain = a.chain
      left join audit_trees t on q.first and t.chain = a.chain
      order by q.time, q.record_id`.execute(trx);
    const heads = new Map<string, { seq: number; hash: string }>();
    if (rows.length === 0) return { records: 0, heads, delaysMs: [], trees: [] };
    const stored = rows.filter((r) => r.first);
    const current = new Map(
      stored.flatMap((h) =>
        h.head_seq === null ? [] : [[h.chain, { seq: Number(h.head_seq), hash: h.head_hash! }]],
      ),
    );
    const sizes = new Map(stored.map((h) => [h.chain, Number(h.head_seq ?? 0)]));
    const ids: string[] = [];
    const seqs: number[] = [];
    const prevs: string[] = [];
    const hashes: string[] = [];
    for (const row of rows) {
      const head = current.get(row.chain) ?? { seq: 0, hash: GENESIS_HASH };
      const seq = head.seq + 1;
      const next = { seq, hash: hashAuditText(documentOf(row, seq, head.hash)) };
      current.set(row.chain, next);
      heads.set(row.chain, next);
      ids.push(row.id);
      seqs.push(next.seq);
      prevs.push(head.hash);
      hashes.push(next.hash);
    }
    const trees = await advanceTrees(
      trx,
      stored.map((h) => ({ chain: h.chain, size: h.tree_size, peaks: h.tree_peaks })),
      sizes,
      seqs,
      hashes,
      rows,
    );
    // The positions and the trees in one statement (a data-modifying WITH always runs to completion).
    // Peaks travel comma-joined: a PostgreSQL array of arrays must be rectangular.
    await sql`with trees as (
        insert into audit_trees (chain, size, peaks)
        select u.chain, u.size, string_to_array(u.peaks, ',')
        from unnest(${trees.map((t) => t.chain)}::text[], ${trees.map((t) => t.range.size)}::bigint[],
          ${trees.map((t) => t.range.peaks.map((h) => h.toString('hex')).join(','))}::text[]) as u(chain, size, peaks)
        on conflict (chain) do update set size = excluded.size, peaks = excluded.peaks)
      select tenantry_audit_sequence(${ids}::uuid[], ${seqs}::bigint[], ${prevs}::text[], ${hashes}::text[])`.execute(
      trx,
    );
    return {
      records: rows.length,
      heads,
      delaysMs: rows.map((r) => Number(r.age_ms)),
      trees: trees.map((t) => t.chain),
    };
  });
}

/**
 * Each chain's compact range (audit_trees) with the batch's leaves appended, for the chains the
 * batch moved. A chain without one (it predates the table) gets one built from its leaves (records,
 * and the hashes retention kept); one pruned before those hashes were kept has none, and its
 * checkpoints are not published as events.
 */
async function advanceTrees(
  trx: Trx,
  stored: { chain: string; size: string | null; peaks: string[] | null }[],
  sizesBefore: Map<string, number>,
  seqs: number[],
  hashes: string[],
  rows: { chain: string }[],
): Promise<{ chain: string; range: CompactRange }[]> {
  const ranges = new Map<string, CompactRange>();
  for (const t of stored) {
    const size = sizesBefore.get(t.chain) ?? 0;
    if (t.size !== null && Number(t.size) === size) {
      ranges.set(
        t.chain,
        new CompactRange(
          size,
          t.peaks!.map((p) => Buffer.from(p, 'hex')),
        ),
      );
      continue;
    }
    // Built once per chain from its leaves before this batch.
    const leaves = (await loadLeafRows(trx, t.chain)).filter((l) => l.seq <= size);
    if (leaves.length !== size || leaves.some((l, i) => l.seq !== i + 1)) continue;
    const range = new CompactRange();
    for (const l of leaves) range.append(leafHash(Buffer.from(l.hash, 'hex')));
    ranges.set(t.chain, range);
  }
  for (let i = 0; i < seqs.length; i++) {
    const range = ranges.get(rows[i]!.chain);
    if (range && range.size === seqs[i]! - 1) range.append(leafHash(Buffer.from(hashes[i]!, 'hex')));
  }
  return [...ranges].map(([chain, range]) => ({ chain, range }));
}

/** Integrates one part's entries committed so far, batch after batch; null if another sequencer holds it. */
async function integratePart(
  db: Db,
  limit: number,
  part: number,
  onBatch: (batch: IntegratedBatch) => Promise<void> = async () => undefined,
): Promise<IntegratedBatch[] | null> {
  const batches: IntegratedBatch[] = [];
  for (;;) {
    const batch = await integrateAuditBatch(db, limit, part);
    if (!batch) return batches.length > 0 ? batches : null;
    if (batch.records > 0) {
      batches.push(batch);
      await onBatch(batch);
    }
    if (batch.records < limit) return batches;
  }
}

/**
 * Integrates every entry committed so far (every part, in parallel, batch after batch); null if
 * another sequencer holds a part (then it integrates that part).
 */
export async function integrateAudit(db: Db, limit = 5000): Promise<IntegratedBatch[] | null> {
  const parts = await Promise.all(
    Array.from({ length: SEQUENCER_PARTS }, (_, part) => integratePart(db, limit, part)),
  );
  if (parts.some((p) => p === null)) return null;
  return parts.flatMap((p) => p ?? []);
}

export interface AuditSequencerOptions {
  /**
   * How often each part looks for new entries when it is idle; a part whose last batch took longer
   * starts the next one at once. The integration delay is at most about this plus two batches.
   */
  intervalMs?: number;
  batchSize?: number;
  /** Called after each committed batch (e.g. to publish checkpoints); its failure is reported, not retried. */
  onBatch?: (batch: IntegratedBatch) => Promise<void> | void;
  onError?: (err: unknown) => void;
}

/**
 * Runs the sequencer in this process: each part (SEQUENCER_PARTS) in a loop of its own that starts a
 * pass at most every `intervalMs`, and at once when the last pass took longer (a backlog), so a busy
 * part neither waits for the others nor for the next interval. Every process runs one; the advisory
 * locks make one of them the sequencer of each part at a time. Long-running: start() and stop().
 */
export class AuditSequencer {
  private loops: Promise<unknown> | undefined;
  private stopping = false;
  private readonly wakers = new Set<() => void>();
  integrated = 0;

  constructor(
    private readonly db: Db,
    private readonly opts: AuditSequencerOptions = {},
  ) {}

  start(): void {
    if (this.loops) return;
    this.stopping = false;
    this.loops = Promise.all(Array.from({ length: SEQUENCER_PARTS }, (_, part) => this.loop(part)));
  }

  private async loop(part: number): Promise<void> {
    const interval = this.opts.intervalMs ?? 200;
    while (!this.stopping) {
      const started = performance.now();
      await this.pass(part).catch((err: unknown) => this.opts.onError?.(err));
      const wait = interval - (performance.now() - started);
      if (wait > 0 && !this.stopping) await this.sleep(wait);
    }
  }

  /** A timer that does not keep the process alive, ended early by stop(). */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      this.wakers.add(wake);
    });
  }

  /** Integrates what `part` has committed so far, batch after batch; how many entries this process integrated. */
  private async pass(part: number): Promise<number> {
    let total = 0;
    await integratePart(this.db, this.opts.batchSize ?? 5000, part, async (batch) => {
      total += batch.records;
      this.integrated += batch.records;
      if (this.opts.onBatch)
        await Promise.resolve(this.opts.onBatch(batch)).catch((err: unknown) => this.opts.onError?.(err));
    });
    return total;
  }

  /** Integrates everything committed so far; returns how many entries this process integrated. */
  async tick(): Promise<number> {
    const counts = await Promise.all(Array.from({ length: SEQUENCER_PARTS }, (_, part) => this.pass(part)));
    return counts.reduce((a, b) => a + b, 0);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const wake of [...this.wakers]) wake();
    await this.loops;
    this.loops = undefined;
  }
}
