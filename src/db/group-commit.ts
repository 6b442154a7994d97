import { AsyncResource } from 'node:async_hooks';
import { type Db, inScope, type Scope, type Trx } from './database.js';

interface Member {
  key: string;
  scope: Scope;
  work: (trx: Trx) => Promise<unknown>;
  alone: () => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** A transaction that aborted before its commit: nothing of it persisted, its members may run again. */
const ROLLED_BACK = new Set(['40001', '40P01']);

/**
 * Group commit of concurrent writes (issue 24): while `maxInFlight` batches are running, the writes
 * that arrive queue, and the next batch runs every queued write of one scope (up to `maxBatch`) in
 * one transaction, one after another, and commits once: one BEGIN, one COMMIT, one commit-time event
 * numbering and one WAL flush for all of them. Nothing waits for a batch to fill: a write that finds
 * a free slot runs at once, alone.
 *
 * Each write keeps its own outcome. A write is answered only after its batch commits (its caller
 * reads its own writes). When any write of a batch fails, or the transaction is aborted by a deadlock
 * or serialization failure (also at commit), the batch rolls back and every write of it runs again
 * alone (`alone`: the caller's ordinary transaction with its retries), so a failing write neither
 * fails nor changes the others, and its own error is the one it would have had alone. A commit that
 * fails otherwise (the connection lost: the outcome is unknown) rejects every write of the batch with
 * that error, as it would have rejected each alone.
 *
 * Each write runs in its own request's async context (its trace, its logger), not the batch's.
 * Only writes whose whole outcome is in the transaction belong here: a write under an
 * Idempotency-Key (committed with its answer) or a dry run (rolled back) runs `alone` instead.
 */
export class GroupCommit {
  private queue: Member[] = [];
  private running = 0;

  constructor(
    private readonly db: Db,
    private readonly opts: { maxInFlight: number; maxBatch: number },
  ) {}

  /** Runs `work` in a batch's transaction in `scope`; `alone` is the same write in its own transaction. */
  run<T>(scope: Scope, work: (trx: Trx) => Promise<T>, alone: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        key: scope.kind === 'platform' ? 'platform' : `tenant:${scope.tenantId}`,
        scope,
        work: AsyncResource.bind(work),
        alone: AsyncResource.bind(alone),
        resolve: resolve as (value: unknown) => void,
        reject,
      });
      this.pump();
    });
  }

  private pump(): void {
    while (this.running < this.opts.maxInFlight && this.queue.length > 0) {
      const key = this.queue[0]!.key;
      const batch: Member[] = [];
      const rest: Member[] = [];
      for (const m of this.queue) (m.key === key && batch.length < this.opts.maxBatch ? batch : rest).push(m);
      this.queue = rest;
      this.running++;
      void this.commit(batch).finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  private async commit(batch: Member[]): Promise<void> {
    if (process.env.S32_DEBUG) { (globalThis as any).__gc ??= {}; const h = (globalThis as any).__gc; h[batch.length] = (h[batch.length] ?? 0) + 1; if (!h.t) { h.t = setInterval(() => console.error('GC', JSON.stringify({ ...h, t: undefined })), 5000); h.t.unref(); } }
    if (batch.length === 1) return settle(batch[0]!);
    let done = 0;
    let values: unknown[];
    try {
      values = await inScope(this.db, batch[0]!.scope, async (trx) => {
        const out: unknown[] = [];
        for (const m of batch) {
          out.push(await m.work(trx));
          done++;
        }
        return out;
      });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (done < batch.length || (typeof code === 'string' && ROLLED_BACK.has(code))) {
        await Promise.all(batch.map(settle));
      } else {
        for (const m of batch) m.reject(err);
      }
      return;
    }
    batch.forEach((m, i) => m.resolve(values[i]));
  }
}

function settle(m: Member): Promise<void> {
  return m.alone().then(m.resolve, m.reject);
}
