import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';
import { appendEventsSql } from '../events/append-event.js';
import { PLATFORM_CHAIN } from './audit-hash.js';
import { signCheckpoint } from './checkpoint-note.js';
import type { AuditSigner } from './checkpoint-signer.js';
import { logOrigin } from './log-origin.js';
import { CompactRange } from './merkle.js';

export interface PublishedCheckpoint {
  chain: string;
  origin: string;
  treeSize: number;
  rootHash: string;
  checkpoint: string;
}

/**
 * Transaction-level advisory lock key of checkpoint publication ('audp'), with the log's hashtext:
 * one publisher per log at a time.
 */
const PUBLISHER_LOCK = 0x61756470;

/** At most this many logs' checkpoints in one transaction (one statement of events). */
const PUBLISH_CHUNK = 500;

/**
 * Publishes the signed C2SP checkpoint of each audit log that has grown since its last one, as the
 * event `audit.checkpoint` in that log's own stream (the tenant's, or the platform's): every webhook
 * subscriber of the tenant and the event bus then hold copies, and a tenant's subscribers see no
 * other tenant's log. The root comes from the compact range the sequencer keeps (audit_trees), so
 * no chain is read.
 *
 * `chains` limits it to those logs; `minIntervalMs` skips a log published more recently than that
 * (the scheduled call, without it, publishes what was skipped).
 *
 * The due logs are published together (up to PUBLISH_CHUNK per transaction): one read of their
 * trees, one statement that appends every event and marks every log published, one commit. The
 * events and the published marks commit together. Numbering several streams at commit takes their
 * locks in stream order (migration 0067), so a publication cannot deadlock with a change.
 *
 * Concurrency contract: a publisher takes each due log's advisory lock (PUBLISHER_LOCK) or skips
 * the log, then reads its tree and published mark again: concurrent publishers never sign the same
 * log twice for the same size, nor a smaller size after a larger one. The marks are in
 * audit_publications (migration 0077), not in the trees the sequencer rewrites, so a publication
 * never holds up a sequencer batch, nor the reverse.
 */
export async function publishCheckpoints(
  db: Db,
  signer: AuditSigner,
  opts: { chains?: string[]; minIntervalMs?: number } = {},
): Promise<PublishedCheckpoint[]> {
  return (await publishDue(db, signer, opts)).published;
}

/**
 * publishCheckpoints, and the logs it left for later because they were published less than
 * `minIntervalMs` ago (`deferred`). A log another publisher holds is neither: that one publishes it.
 */
async function publishDue(
  db: Db,
  signer: AuditSigner,
  opts: { chains?: string[]; minIntervalMs?: number },
): Promise<{ published: PublishedCheckpoint[]; deferred: string[] }> {
  const published: PublishedCheckpoint[] = [];
  const deferred: string[] = [];
  for (;;) {
    const { rows, chunk } = await asPlatform(db, async (trx) => {
      // The due logs, each taken by this publisher if no other holds it (its advisory lock).
      const { rows } = await sql<{ chain: string; mine: boolean }>`
        select d.chain, pg_try_advisory_xact_lock(${PUBLISHER_LOCK}::int, hashtext(d.chain)) as mine
        from (select t.chain from audit_trees t left join audit_publications p on p.chain = t.chain
              where t.size > coalesce(p.published_size, 0)
                ${opts.chains ? sql`and t.chain = any(${opts.chains}::text[])` : sql``}
              order by t.chain limit ${PUBLISH_CHUNK}) d`.execute(trx);
      const mine = rows.filter((r) => r.mine).map((r) => r.chain);
      if (mine.length === 0) return { rows, chunk: [] };
      // Read again once held (a new snapshot): what another publisher committed meanwhile counts.
      const { rows: trees } = await sql<{ chain: string; size: string; peaks: string[]; ripe: boolean }>`
        select t.chain, t.size, t.peaks,
          ${opts.minIntervalMs ? sql`p.published_at is null or p.published_at < now() - ${opts.minIntervalMs} * interval '1 millisecond'` : sql`true`} as ripe
        from audit_trees t left join audit_publications p on p.chain = t.chain
        where t.chain = any(${mine}::text[]) and t.size > coalesce(p.published_size, 0)`.execute(trx);
      for (const r of trees) if (!r.ripe) deferred.push(r.chain);
      const ripe = trees.filter((r) => r.ripe);
      if (ripe.length === 0) return { rows, chunk: [] };
      const data = ripe.map((r): PublishedCheckpoint => {
        const size = Number(r.size);
        const root = new CompactRange(
          size,
          r.peaks.map((h) => Buffer.from(h, 'hex')),
        ).root();
        const origin = logOrigin(r.chain);
        return {
          chain: r.chain,
          origin,
          treeSize: size,
          rootHash: root.toString('hex'),
          checkpoint: signCheckpoint(signer, { origin, size, root }),
        };
      });
      const events = data.map((d) => ({
        tenantId: d.chain === PLATFORM_CHAIN ? null : d.chain,
        name: 'audit.checkpoint' as const,
        subject: `auditlogs/${d.chain}`,
        data: d,
        correlationId: randomUUID(),
      }));
      await sql`with ${appendEventsSql(events)}, marked as (
          insert into audit_publications (chain, published_size, published_at)
          select u.chain, u.size, now()
          from unnest(${data.map((d) => d.chain)}::text[], ${data.map((d) => d.treeSize)}::bigint[]) as u(chain, size)
          on conflict (chain) do update set published_size = excluded.published_size, published_at = excluded.published_at
          returning 1)
        select (select count(*) from event), (select count(*) from marked)`.execute(trx);
      return { rows, chunk: data };
    });
    published.push(...chunk);
    // A full chunk of deferred logs only: the rest would be read again; they wait for the next call.
    if (rows.length < PUBLISH_CHUNK || chunk.length === 0) return { published, deferred };
  }
}

/**
 * Publishes the checkpoints of the logs this process's sequencer moved on a cadence of its own,
 * not per batch: every `intervalMs` one publishCheckpoints of the logs moved since (each at most
 * once per `minIntervalMs`), so its cost follows time and the number of logs, not the append rate.
 * A log skipped (published too recently, or locked) stays pending for the next tick. What a crash
 * loses is published by the scheduled checkpointer (AuditCheckpointer). Long-running: start() and stop().
 */
export class CheckpointPublisher {
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly signer: AuditSigner,
    private readonly opts: {
      intervalMs?: number;
      minIntervalMs?: number;
      onPublished?: (published: PublishedCheckpoint[]) => void;
      onError?: (err: unknown) => void;
    } = {},
  ) {}

  /** Logs that moved (a sequencer batch's trees): published at the next tick. */
  add(chains: Iterable<string>): void {
    for (const c of chains) this.pending.add(c);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.running = this.running.then(() => this.tick()).catch((err: unknown) => this.opts.onError?.(err));
    }, this.opts.intervalMs ?? 250);
    this.timer.unref();
  }

  async tick(): Promise<PublishedCheckpoint[]> {
    if (this.pending.size === 0) return [];
    const chains = [...this.pending];
    this.pending.clear();
    let due: { published: PublishedCheckpoint[]; deferred: string[] };
    try {
      due = await publishDue(this.db, this.signer, {
        chains,
        minIntervalMs: this.opts.minIntervalMs ?? 1000,
      });
    } catch (err) {
      for (const c of chains) this.pending.add(c);
      throw err;
    }
    // Published too recently: at a later tick.
    for (const c of due.deferred) this.pending.add(c);
    if (due.published.length > 0) this.opts.onPublished?.(due.published);
    return due.published;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
