import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db } from '../db/database.js';
import { type Completion, completeJobs } from './queue/complete-job.js';
import type { QueuedJob } from './queue/job.js';
import { type Settled, type Settlement, settleAll } from './settle.js';

/** How long a batch's writes of job rows wait on a lock before the batch is written one by one. */
const JOB_LOCK_TIMEOUT_MS = 100;
/** SQLSTATE of a lock timeout. */
const LOCK_NOT_AVAILABLE = '55P03';

interface Waiting {
  s: Settlement;
  job: QueuedJob;
  complete: boolean;
  resolve: (s: Settled) => void;
  reject: (err: unknown) => void;
}

/**
 * Group settlement of the reconciles of one claimed batch: each reconcile hands its status to
 * `settlerFor(job)` and waits; when every reconcile of the batch still running is waiting (or
 * `maxWaitMs` after the first one began to wait, so that a slow provider call holds no one else up),
 * all waiting settlements are written in one transaction — settle.ts's settleAll, then the jobs of
 * those that asked for it completed in one statement (complete-job.ts), so status and job release
 * still commit together. If that transaction fails (after one more try when it timed out on a lock), each settlement is tried again in a transaction
 * of its own, so one bad settlement fails only its own reconcile.
 *
 * Every job of the batch must end with `left()` exactly once (whether it settled or not).
 */
export class SettleBatch {
  private waiting: Waiting[] = [];
  /** Reconciles of the batch that are running and not waiting on a settlement. */
  private busy: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: {
      db: Db;
      context: () => RequestContext;
      workerId: string;
      resyncMs: number;
      maxWaitMs: number;
    },
    jobs: number,
  ) {
    this.busy = jobs;
  }

  /** What a reconcile of `job` gives as its `settler` (ReconcileEnv). */
  settlerFor(job: QueuedJob): (s: Settlement, complete: boolean) => Promise<Settled> {
    return (s, complete) =>
      new Promise<Settled>((resolve, reject) => {
        this.waiting.push({ s, job, complete, resolve, reject });
        this.busy--;
        this.maybeFlush();
      });
  }

  /** A reconcile of the batch has ended. */
  left(): void {
    this.busy--;
    this.maybeFlush();
  }

  private maybeFlush(): void {
    if (this.waiting.length === 0) return;
    if (this.busy <= 0) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.opts.maxWaitMs);
  }

  private async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const items = this.waiting;
    this.waiting = [];
    if (items.length === 0) return;
    const { db, context, workerId, resyncMs } = this.opts;
    const done = (it: Waiting, settled: Settled) =>
      it.complete && !settled.moved ? [{ job: it.job, finalised: it.s.status.phase === 'Deleted' }] : [];
    const together = () =>
      asPlatform(db, async (trx) => {
        const r = await settleAll(
          trx,
          items.map((it) => it.s),
          context,
          { jobLockTimeoutMs: JOB_LOCK_TIMEOUT_MS },
        );
        const completions: Completion[] = items.flatMap((it, n) => done(it, r[n]!));
        await completeJobs(trx, completions, { workerId, resyncMs });
        return r;
      });
    let settled: Settled[];
    try {
      // A job row held a moment by a writer without the tenants' locks (a claim, a heartbeat) outlasts
      // the lock timeout now and then (at 100k objects, a few times in a run): the batch is tried again
      // once as a whole before it is written one by one (one 100k run had 43 batches fall back so,
      // each then written as a transaction per settlement).
      settled = await together().catch((err: unknown) => {
        if ((err as { code?: string }).code !== LOCK_NOT_AVAILABLE) throw err;
        return together();
      });
    } catch {
      // One at a time, each in its own transaction: only the settlement at fault fails its reconcile.
      await Promise.all(
        items.map(async (it) => {
          try {
            const one = await asPlatform(db, async (trx) => {
              const [r] = await settleAll(trx, [it.s], context);
              await completeJobs(trx, done(it, r!), { workerId, resyncMs });
              return r!;
            });
            this.busy++;
            it.resolve(one);
          } catch (err) {
            this.busy++;
            it.reject(err);
          }
        }),
      );
      return;
    }
    for (const [n, it] of items.entries()) {
      this.busy++;
      it.resolve(settled[n]!);
    }
  }
}
