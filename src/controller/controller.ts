import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { ControllerConfig } from '../config/config.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { isDatabaseUnavailable } from '../errors/errors.js';
import type { Metrics } from '../observability/metrics.js';
import { inSpan, withTraceparent } from '../observability/tracing.js';
import { ProviderError } from '../providers/provider.js';
import { isKind, KINDS } from '../registry/kinds/index.js';
import { backoffDelay } from './backoff.js';
import type { ProviderSet } from './providers.js';
import { backfillJobs } from './queue/backfill-jobs.js';
import { claimJobs } from './queue/claim-jobs.js';
import { type Completion, completeJob, completeJobs } from './queue/complete-job.js';
import { failJob } from './queue/fail-job.js';
import type { QueuedJob, ReconcileJob } from './queue/job.js';
import { type Finish, type JobResult, JobTypes } from './queue/job-types.js';
import { readTickets } from './queue/read-tickets.js';
import { renewLease, renewLeases } from './queue/renew-lease.js';
import { rescheduleJobs } from './queue/reschedule-jobs.js';
import {
  jobKey,
  type Loaded,
  loadForReconcile,
  type ReconcileEnv,
  reconcile,
  settleFailure,
} from './reconcilers.js';
import { lockTenantsWrites } from './settle.js';
import { SettleBatch } from './settle-batch.js';

/** How long a batch's settlements wait for its slowest reconcile before they are written without it. */
const SETTLE_WAIT_MS = 100;

/**
 * The reconciles of one batch run in tiers, children before parents (resources and the rest, then
 * deployments, then tenants): a parent reads its dependents after they have settled, and is
 * reconciled once (issue 24).
 */
const tierOf = (kind: string): number => (kind === 'Tenant' ? 2 : kind === 'Deployment' ? 1 : 0);

/**
 * At most `n` calls at once, in the order asked. (Hand-written: ten lines, where a library such as
 * p-limit would be a new dependency for the same ten lines.)
 */
function limiter(n: number): <T>(call: () => Promise<T>) => Promise<T> {
  let running = 0;
  const queue: (() => void)[] = [];
  return async (call) => {
    if (running >= n) await new Promise<void>((go) => queue.push(go));
    running++;
    try {
      return await call();
    } finally {
      running--;
      queue.shift()?.();
    }
  };
}

export interface ControllerOptions {
  db: Db;
  config: ControllerConfig;
  providers: ProviderSet;
  logger: Logger;
  workerId?: string;
  /**
   * Job types served besides reconciles (workflow steps, retention sweeps, …). Every kind's
   * reconcile handler is added to it; a type registered here under a kind's name replaces it.
   */
  jobTypes?: JobTypes;
  /** Where reconciles are counted (the process's metrics, from src/app.ts). */
  metrics?: Metrics;
}

/**
 * The reconcile controller of one process: claims due jobs in batches (up to `batchSize` in one
 * statement), reconciles them, renews their leases while it works (one statement per batch), and
 * ends each with success (next run at the resync) or failure (capped exponential backoff with full
 * jitter; after `maxAttempts` the object shows Ready=False/Failed and is tried again at the next
 * resync). A batch's reconciles read their objects in one transaction, call their providers (up to
 * `workers` calls at once) and write their statuses together (settle-batch.ts), children before
 * parents. Jobs of other types (workflow steps, sweeps) run one by one as before. Any number of
 * processes may run one against the same database; the leases keep them from working on one object
 * at once.
 */
export class Controller {
  readonly workerId: string;
  private readonly env: ReconcileEnv;
  readonly jobTypes: JobTypes;
  /** Claimed batches of reconciles being worked on. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Jobs of other types being worked on. */
  private readonly others = new Set<Promise<void>>();
  /** Kinds whose handler is the built-in reconcile (batched); other types run one by one. */
  private readonly batched = new Set<string>();
  private readonly limit: <T>(call: () => Promise<T>) => Promise<T>;
  private running = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private paused = false;
  /** Reconciles finished in this process (successes and failures), for metrics and benchmarks. */
  processed = 0;

  constructor(private readonly opts: ControllerOptions) {
    this.workerId = opts.workerId ?? `controller-${randomUUID()}`;
    this.env = {
      db: opts.db,
      providers: opts.providers,
      context: () => systemContext('tenantry-controller'),
    };
    this.jobTypes = opts.jobTypes ?? new JobTypes();
    const env = this.env;
    this.limit = limiter(opts.config.workers);
    for (const kind of KINDS) {
      if (this.jobTypes.handlerOf(kind)) continue;
      this.batched.add(kind);
      // Registered under the kind's name, so the job is a ReconcileJob of that kind.
      this.jobTypes.register(kind, {
        run: (job, finish) => reconcile(env, job as ReconcileJob, finish),
        failed: (job, err, final, retryInMs) =>
          settleFailure(env, job as ReconcileJob, err as ProviderError, final, retryInMs),
      });
    }
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
    const backfill = () =>
      void asPlatform(this.opts.db, backfillJobs)
        .then((n) => n > 0 && this.opts.logger.info({ jobs: n }, 'reconcile jobs backfilled'))
        .catch((err) => this.opts.logger.warn({ err }, 'reconcile job backfill failed'));
    backfill();
    this.resyncTimer = setInterval(backfill, this.opts.config.resyncIntervalMs);
    this.resyncTimer.unref();
  }

  /** Stops claiming and waits for the reconciles in flight to finish and release their jobs. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.resyncTimer);
    this.wake?.();
    await this.loop;
    await Promise.allSettled([...this.inFlight, ...this.others]);
  }

  /** Applies this process's providers and resync interval to the jobs already scheduled. */
  private async reschedule(): Promise<void> {
    const { providers, config, logger, db } = this.opts;
    const configured = new Set<string>();
    for (const slots of [providers, ...Object.values(providers.regions ?? {})])
      for (const [type, slot] of Object.entries(slots))
        if (type !== 'regions' && slot && typeof slot === 'object' && 'provider' in slot)
          configured.add(type);
    try {
      const r = await asPlatform(db, (trx) =>
        rescheduleJobs(trx, { resyncMs: config.resyncIntervalMs, configuredTypes: [...configured] }),
      );
      if (r.providerRetried > 0 || r.resynced > 0) logger.info(r, 'reconcile jobs rescheduled at start');
    } catch (err) {
      logger.warn({ err }, 'rescheduling reconcile jobs at start failed');
    }
  }

  private async run(): Promise<void> {
    const { config, logger } = this.opts;
    const batchSize = config.batchSize ?? 256;
    // Claimed batches worked on at once: some settle while the others' provider calls run.
    const batchesAtOnce = config.batchesAtOnce ?? 4;
    await this.reschedule();
    while (this.running) {
      // Room for a batch, and fewer jobs of other types running than `workers`.
      const free = this.inFlight.size < batchesAtOnce && this.others.size < config.workers;
      let claimed: QueuedJob[] = [];
      if (free) {
        try {
          claimed = await asPlatform(this.opts.db, (trx) =>
            claimJobs(trx, { workerId: this.workerId, limit: batchSize, leaseMs: config.leaseMs }),
          );
          if (this.paused) logger.info('database reachable again; controller resumed');
          this.paused = false;
        } catch (err) {
          // While the database is away the loop keeps polling (so it resumes within one poll
          // interval of its return) and says so once, not on every poll.
          if (!isDatabaseUnavailable(err)) logger.warn({ err }, 'claiming reconcile jobs failed');
          else if (!this.paused)
            logger.warn({ err: (err as Error).message }, 'database unavailable; controller paused');
          this.paused = isDatabaseUnavailable(err);
        }
      }
      // Jobs of other types (a workflow step may run long) each run on their own, beside the
      // batches, so that they never hold a batch (and with it the claiming of more jobs) up.
      for (const job of claimed.filter((j) => !this.batched.has(j.kind))) {
        const one: Promise<void> = this.process(job).finally(() => {
          this.others.delete(one);
          this.wake?.();
        });
        this.others.add(one);
      }
      const reconciles = claimed.filter((j) => this.batched.has(j.kind)) as ReconcileJob[];
      if (reconciles.length > 0) {
        const batch: Promise<void> = this.processBatch(reconciles).finally(() => {
          this.inFlight.delete(batch);
          this.wake?.();
        });
        this.inFlight.add(batch);
      }
      // A full batch and room for another: claim again at once. Otherwise sleep until a batch ends
      // or the poll interval.
      if (claimed.length < batchSize || this.inFlight.size >= batchesAtOnce) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, config.pollIntervalMs);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }

  /** One claimed batch of reconciles, tier by tier. */
  private async processBatch(reconciles: ReconcileJob[]): Promise<void> {
    const { config, logger, db } = this.opts;
    const ended = new Set<ReconcileJob>();
    let done = false;
    const heartbeat = setInterval(() => {
      const open = reconciles.filter((j) => !ended.has(j));
      void asPlatform(db, (trx) =>
        renewLeases(trx, open, { workerId: this.workerId, leaseMs: config.leaseMs }),
      )
        .then((held) => {
          if (held < open.length && !done)
            logger.warn({ lost: open.length - held }, 'reconcile leases lost to another worker');
        })
        .catch((err) => logger.warn({ err }, 'lease renewal failed'));
    }, config.leaseMs / 3);
    try {
      for (const tier of [0, 1, 2]) {
        const some = reconciles.filter((j) => tierOf(j.kind) === tier);
        if (some.length > 0) await this.reconcileTogether(some);
        // Their jobs are released: the heartbeat no longer renews (nor counts) them.
        for (const j of some) ended.add(j);
      }
    } finally {
      done = true;
      clearInterval(heartbeat);
    }
  }

  /**
   * Reconciles of one tier of a batch: their objects read in one transaction (after their tickets:
   * read-tickets.ts), their statuses written together (settle-batch.ts), the jobs that ended
   * without a status write completed in one statement.
   */
  private async reconcileTogether(jobs: ReconcileJob[]): Promise<void> {
    const { config, db } = this.opts;
    let loaded: Map<string, Loaded | undefined> | undefined;
    let loadError: unknown;
    try {
      loaded = await asPlatform(db, async (trx) => {
        await readTickets(trx, jobs, { workerId: this.workerId });
        return loadForReconcile(trx, jobs);
      });
    } catch (err) {
      loadError = err;
    }
    const batch = new SettleBatch(
      {
        db,
        context: this.env.context,
        workerId: this.workerId,
        resyncMs: config.resyncIntervalMs,
        maxWaitMs: SETTLE_WAIT_MS,
      },
      jobs.length,
    );
    const deferred: Completion[] = [];
    await Promise.all(
      jobs.map((job) =>
        this.process(
          job,
          (finish) => {
            if (!loaded) throw loadError;
            const env = { ...this.env, settler: batch.settlerFor(job), limit: this.limit };
            return reconcile(env, job, finish, { loaded: loaded.get(jobKey(job)) });
          },
          deferred,
        ).finally(() => batch.left()),
      ),
    );
    // Under the tenants' write locks, like every other write of their jobs (settle.ts): a change
    // enqueuing some of these jobs in its transaction is then never waited for halfway through.
    if (deferred.length > 0)
      await asPlatform(db, async (trx) => {
        await lockTenantsWrites(
          trx,
          deferred.map((d) => d.job.tenantId),
        );
        await completeJobs(trx, deferred, { workerId: this.workerId, resyncMs: config.resyncIntervalMs });
      }).catch((err) => this.opts.logger.error({ err }, 'reconcile bookkeeping failed'));
  }

  /**
   * One job: `run` (default: its type's handler) and its end. Alone, it renews its own lease and
   * completes its job itself; in a batch (`deferred`), the batch renews the leases, and a job that
   * ended without completing in its handler's transaction is completed with the batch's others.
   */
  private async process(
    job: QueuedJob,
    run?: (finish: Finish) => Promise<JobResult>,
    deferred?: Completion[],
  ): Promise<void> {
    const { config, logger, db } = this.opts;
    const log = logger.child({ kind: job.kind, uuid: job.objectId });
    let done = false;
    const heartbeat = deferred
      ? undefined
      : setInterval(() => {
          void asPlatform(db, (trx) =>
            renewLease(trx, job, { workerId: this.workerId, leaseMs: config.leaseMs }),
          )
            .then((held) => held || done || log.warn('reconcile lease lost to another worker'))
            .catch((err) => log.warn({ err }, 'lease renewal failed'));
        }, config.leaseMs / 3);
    const { metrics } = this.opts;
    metrics?.queueJobs.inc({ kind: job.kind });
    const timer = metrics?.reconcileDuration.startTimer({ kind: job.kind }) ?? (() => 0);
    try {
      let outcome: { finalised: boolean; finished: boolean } | undefined;
      let failure: ProviderError | undefined;
      const finish = (trx: Trx, finalised: boolean) =>
        completeJob(trx, job, { workerId: this.workerId, resyncMs: config.resyncIntervalMs, finalised });
      try {
        const handler = this.jobTypes.handlerOf(job.kind);
        if (!handler && !run)
          throw new ProviderError(`no handler for job type ${job.kind}`, 'UnknownJobType', false);
        outcome = await withTraceparent(job.traceparent, () =>
          inSpan(
            `${isKind(job.kind) ? 'reconcile' : 'job'} ${job.kind}`,
            {
              'tenantry.kind': job.kind,
              'tenantry.object_id': job.objectId,
              'tenantry.tenant_id': job.tenantId ?? 'platform',
            },
            () => (run ? run(finish) : handler!.run(job, finish)),
          ),
        );
      } catch (err) {
        failure =
          err instanceof ProviderError
            ? err
            : new ProviderError((err as Error).message, 'ReconcileError', true, { cause: err });
      }
      if (outcome) {
        timer({ outcome: 'ready' });
        if (!outcome.finished && deferred) deferred.push({ job, finalised: outcome.finalised });
        else if (!outcome.finished) await asPlatform(db, (trx) => finish(trx, outcome.finalised));
        return;
      }
      const f = failure!;
      const attempts = job.attempts + 1;
      const final = !f.retryable || attempts >= config.maxAttempts;
      timer({ outcome: final ? 'failed' : 'retry' });
      metrics?.controllerErrors.inc({
        kind: job.kind,
        category:
          f.reason === 'ReconcileError'
            ? 'internal'
            : f.retryable
              ? 'provider_retryable'
              : 'provider_permanent',
      });
      const delayMs = final
        ? config.resyncIntervalMs
        : backoffDelay(attempts, { baseMs: config.backoffBaseMs, capMs: config.backoffCapMs });
      (final ? log.warn.bind(log) : log.info.bind(log))(
        { reason: f.reason, attempts, final, retryInMs: delayMs, err: f.message },
        'reconcile failed',
      );
      await this.jobTypes.handlerOf(job.kind)?.failed?.(job, f, final, delayMs);
      await asPlatform(db, (trx) =>
        failJob(trx, job, {
          workerId: this.workerId,
          attempts: final ? 0 : attempts,
          delayMs,
          error: `${f.reason}: ${f.message}`,
        }),
      );
    } catch (err) {
      // The lease runs out and another attempt follows; nothing is dropped.
      log.error({ err }, 'reconcile bookkeeping failed');
    } finally {
      done = true;
      clearInterval(heartbeat);
      this.processed++;
    }
  }
}
