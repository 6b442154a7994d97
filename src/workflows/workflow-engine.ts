import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { backoffDelay } from '../controller/backoff.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { ProviderError } from '../providers/provider.js';
import { checkpointStep, LeaseLost, onDb, type Statement } from './checkpoint-step.js';
import { claimWorkflows, renewWorkflowLease } from './claim-workflows.js';
import { type EngineSession, engineSession } from './engine-session.js';
import { finishWorkflow, rescheduleWorkflow } from './settle-workflow.js';
import {
  type StepContext,
  StepDeferred,
  type WorkflowDefinition,
  type WorkflowRegistry,
  type WorkflowRow,
} from './workflow.js';

export interface WorkflowEngineOptions {
  db: Db;
  registry: WorkflowRegistry;
  logger: Logger;
  config: {
    /** Workflows this process runs at once. */
    workers: number;
    leaseMs: number;
    backoffBaseMs: number;
    backoffCapMs: number;
    /** Attempts of one step before the workflow waits for an operator (`retry` or `cancel`). */
    maxAttempts: number;
    pollIntervalMs: number;
    /** Default per-attempt timeout of a step. */
    stepTimeoutMs: number;
  };
  workerId?: string;
}

interface StepRow {
  position: number;
  name: string;
  state: 'Completed' | 'Failed' | 'Compensated';
  output: unknown;
}

class StepTimeout extends Error {}

/**
 * The workflow engine of one process (issue 18). Workflows live in `workflows` (record and queue at
 * once) and are leased like reconcile jobs: an engine claims due ones, renews its lease while it
 * works, and checkpoints every step's end (`workflow_steps`, fenced on the lease). A process that
 * dies — SIGKILL included — holds nothing: its leases run out, and any engine (its own restart or
 * another controller) claims the workflow and resumes at the first step without a checkpoint. A step
 * that fails is retried with capped exponential backoff and full jitter, each attempt under a
 * timeout; a permanent failure runs the undo of every completed step, last first (each undo
 * checkpointed, so the stack survives a crash too) and ends the workflow Failed with the reason; a
 * step that keeps failing for a transient reason leaves the workflow Waiting for an operator.
 */
export class WorkflowEngine {
  readonly workerId: string;
  private readonly inFlight = new Map<string, Promise<void>>();
  private running = false;
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;
  /** Set by wake(): look again before sleeping (a NOTIFY may arrive while a claim is running). */
  private woken = false;
  /** The engine's platform-scoped connections while it runs (engine-session.ts). */
  private session: EngineSession | undefined;
  /** Steps run by this process (successful attempts), for benchmarks. */
  stepsRun = 0;

  constructor(private readonly opts: WorkflowEngineOptions) {
    this.workerId = opts.workerId ?? `workflows-${randomUUID()}`;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    // One connection per workflow in flight, one for claims, one for lease renewals.
    this.session = engineSession(this.opts.db, this.opts.config.workers + 2);
    this.loop = this.run();
  }

  /** Looks for due workflows now (e.g. right after this process started one). */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Stops claiming and waits for the workflows in flight to reach a checkpoint and let go. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wakeUp?.();
    await this.loop;
    await Promise.allSettled([...this.inFlight.values()]);
    const session = this.session;
    this.session = undefined;
    await session?.destroy();
  }

  /** One statement in the platform scope: autocommit on the engine's session (one round trip). */
  private one<T>(work: (q: Db) => Promise<T>): Promise<T> {
    return this.session ? work(this.session.db) : asPlatform(this.opts.db, work);
  }

  /** One statement in the platform scope, prepared on the engine's session (else as `one`). */
  private prepared<T>(work: (run: Statement) => Promise<T>): Promise<T> {
    return this.session ? work(this.session.prepared) : asPlatform(this.opts.db, (trx) => work(onDb(trx)));
  }

  /** A transaction in the platform scope, for a statement with what a step or the end writes. */
  private tx<T>(work: (trx: Trx) => Promise<T>): Promise<T> {
    return this.session ? this.session.db.transaction().execute(work) : asPlatform(this.opts.db, work);
  }

  private async run(): Promise<void> {
    const { config, logger } = this.opts;
    while (this.running) {
      this.woken = false;
      const free = config.workers - this.inFlight.size;
      let claimed: WorkflowRow[] = [];
      if (free > 0) {
        try {
          claimed = await this.one((q) =>
            claimWorkflows(q, { workerId: this.workerId, limit: free, leaseMs: config.leaseMs }),
          );
        } catch (err) {
          logger.warn({ err }, 'claiming workflows failed');
        }
      }
      for (const w of claimed) {
        this.inFlight.set(
          w.id,
          this.process(w).finally(() => {
            this.inFlight.delete(w.id);
            this.wake();
          }),
        );
      }
      if ((claimed.length < free || free <= 0) && !this.woken) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, config.pollIntervalMs);
          this.wakeUp = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wakeUp = undefined;
      }
    }
  }

  private async process(w: WorkflowRow): Promise<void> {
    const { config, logger } = this.opts;
    const log = logger.child({ workflow: w.id, type: w.type });
    let lost = false;
    const heartbeat = setInterval(() => {
      void this.one((q) =>
        renewWorkflowLease(q, { id: w.id, workerId: this.workerId, leaseMs: config.leaseMs }),
      )
        .then((held) => {
          if (!held) lost = true;
        })
        .catch((err) => log.warn({ err }, 'workflow lease renewal failed'));
    }, config.leaseMs / 3);
    try {
      const def = this.opts.registry.get(w.type) as WorkflowDefinition<unknown> | undefined;
      if (!def) {
        await this.one((q) => this.finish(q, w, 'Failed', `no workflow type "${w.type}" is known here`));
        return;
      }
      const steps = await this.stepsOf(w);
      const outputs: Record<string, unknown> = {};
      for (const s of steps) if (s.state === 'Completed') outputs[s.name] = s.output;
      if (w.state === 'Compensating' || w.cancel_requested) {
        await this.compensate(w, def, steps, outputs, () => lost);
        return;
      }
      const done = new Set(steps.filter((s) => s.state === 'Completed').map((s) => s.position));
      let attempts = w.attempts;
      // Attempts or an error of failed attempts on the row, which the next checkpoint resets.
      let reset = w.attempts !== 0 || w.error !== null;
      for (const [position, step] of def.steps.entries()) {
        if (done.has(position)) continue;
        if (lost || !this.running) return;
        const attempt = attempts + 1;
        const startedAt = new Date();
        const ctl = new AbortController();
        const ctx: StepContext<unknown> = {
          workflowId: w.id,
          tenantId: w.tenant_id,
          input: w.input,
          outputs,
          signal: ctl.signal,
        };
        let output: unknown;
        try {
          output = await withTimeout(step.run(ctx), step.timeoutMs ?? config.stepTimeoutMs, ctl);
        } catch (err) {
          await this.stepFailed(w, position, step.name, attempt, startedAt, err, log);
          return;
        }
        const record = (run: Statement) =>
          checkpointStep(run, {
            workflowId: w.id,
            tenantId: w.tenant_id,
            workerId: this.workerId,
            position,
            name: step.name,
            state: 'Completed',
            attempts: attempt,
            output,
            error: null,
            startedAt,
            correlationId: w.correlation_id,
            reset,
          });
        // A step that writes nothing of its own checkpoints in one autocommit statement; one that
        // does, in one transaction with what it writes. Either way the checkpoint is committed
        // before the engine goes on (or reports the step done).
        const hook = step.checkpoint;
        const kept = await this.checkpoint(() =>
          hook
            ? this.tx(async (trx) => {
                const r = await record(onDb(trx));
                await hook(trx, ctx, output);
                return r;
              })
            : this.prepared(record),
        );
        if (!kept) return log.warn('workflow lease lost; another engine continues it');
        this.stepsRun++;
        outputs[step.name] = output ?? null;
        attempts = 0;
        reset = false;
        if (kept.cancelRequested) {
          await this.compensate(
            { ...w, cancel_requested: kept.cancelRequested },
            def,
            await this.stepsOf(w),
            outputs,
            () => lost,
          );
          return;
        }
      }
      const succeeded = def.succeeded;
      if (!succeeded) await this.one((q) => this.finish(q, w, 'Succeeded', null));
      else
        await this.tx(async (trx) => {
          if (await this.finish(trx, w, 'Succeeded', null))
            await succeeded(trx, { workflowId: w.id, tenantId: w.tenant_id, input: w.input, outputs });
        });
    } catch (err) {
      // Bookkeeping failed (database unreachable): the lease runs out and the workflow is resumed.
      log.error({ err }, 'workflow bookkeeping failed');
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async stepsOf(w: WorkflowRow): Promise<StepRow[]> {
    return (
      await this.one((q) =>
        sql<StepRow>`select position, name, state, output from workflow_steps
          where tenant_id = ${w.tenant_id} and workflow_id = ${w.id} order by position`.execute(q),
      )
    ).rows;
  }

  private async stepFailed(
    w: WorkflowRow,
    position: number,
    name: string,
    attempt: number,
    startedAt: Date,
    err: unknown,
    log: Logger,
  ): Promise<void> {
    const { config } = this.opts;
    if (err instanceof StepDeferred) {
      log.info({ step: name, retryInMs: err.delayMs, reason: err.message }, 'workflow step waits');
      await this.one((q) =>
        rescheduleWorkflow(q, {
          id: w.id,
          workerId: this.workerId,
          state: 'Running',
          attempts: attempt - 1,
          delayMs: Math.max(0, err.delayMs),
          error: `waiting: ${err.message}`,
        }),
      );
      return;
    }
    const permanent = err instanceof ProviderError && !err.retryable;
    const message =
      err instanceof StepTimeout
        ? `step ${name} timed out`
        : `step ${name}: ${err instanceof ProviderError ? `${err.reason}: ` : ''}${(err as Error)?.message ?? String(err)}`;
    if (permanent) {
      log.warn({ step: name, err: message }, 'workflow step failed permanently; compensating');
      await this.checkpoint(() =>
        this.tx(async (trx) => {
          await checkpointStep(onDb(trx), {
            workflowId: w.id,
            tenantId: w.tenant_id,
            workerId: this.workerId,
            position,
            name,
            state: 'Failed',
            attempts: attempt,
            output: null,
            error: message,
            startedAt,
            correlationId: w.correlation_id,
            reset: true,
          });
          await rescheduleWorkflow(trx, {
            id: w.id,
            workerId: this.workerId,
            state: 'Compensating',
            attempts: 0,
            delayMs: 0,
            error: message,
          });
        }),
      );
      this.wake();
      return;
    }
    const exhausted = attempt >= config.maxAttempts;
    const delayMs = exhausted
      ? 0
      : backoffDelay(attempt, { baseMs: config.backoffBaseMs, capMs: config.backoffCapMs });
    log.info({ step: name, attempt, exhausted, retryInMs: delayMs, err: message }, 'workflow step failed');
    await this.one((q) =>
      rescheduleWorkflow(q, {
        id: w.id,
        workerId: this.workerId,
        state: exhausted ? 'Waiting' : 'Running',
        attempts: attempt,
        delayMs,
        error: exhausted
          ? `${message} (after ${attempt} attempts; waiting for an operator: retry or cancel)`
          : message,
      }),
    );
  }

  /** Runs the undo of every completed step, last first, each checkpointed; then ends the workflow. */
  private async compensate(
    w: WorkflowRow,
    def: WorkflowDefinition<unknown>,
    steps: StepRow[],
    outputs: Record<string, unknown>,
    lost: () => boolean,
  ): Promise<void> {
    const { config } = this.opts;
    const stack = steps.filter((s) => s.state === 'Completed').reverse();
    for (const s of stack) {
      if (lost() || !this.running) return;
      const step = def.steps[s.position];
      const startedAt = new Date();
      const ctl = new AbortController();
      const ctx: StepContext<unknown> = {
        workflowId: w.id,
        tenantId: w.tenant_id,
        input: w.input,
        outputs,
        signal: ctl.signal,
      };
      if (step?.undo) {
        try {
          await withTimeout(step.undo(ctx, s.output), step.timeoutMs ?? config.stepTimeoutMs, ctl);
        } catch (err) {
          const attempt = w.attempts + 1;
          await this.one((q) =>
            rescheduleWorkflow(q, {
              id: w.id,
              workerId: this.workerId,
              state: 'Compensating',
              attempts: attempt,
              delayMs: backoffDelay(attempt, { baseMs: config.backoffBaseMs, capMs: config.backoffCapMs }),
              error: w.error ?? `undo of ${s.name}: ${(err as Error)?.message ?? String(err)}`,
            }),
          );
          return;
        }
      }
      const kept = await this.checkpoint(() =>
        this.prepared((run) =>
          checkpointStep(run, {
            workflowId: w.id,
            tenantId: w.tenant_id,
            workerId: this.workerId,
            position: s.position,
            name: s.name,
            state: 'Compensated',
            attempts: 1,
            output: null,
            error: null,
            startedAt,
            correlationId: w.correlation_id,
            reset: true,
          }),
        ),
      );
      if (!kept) return;
    }
    const cancelled = w.cancel_requested !== null;
    const reason = cancelled
      ? `cancelled by ${w.cancel_requested?.principal ?? 'an operator'}`
      : (w.error ?? 'a step failed');
    await this.tx(async (trx) => {
      if (await this.finish(trx, w, cancelled ? 'Cancelled' : 'Failed', reason))
        await def.compensated?.(
          trx,
          { workflowId: w.id, tenantId: w.tenant_id, input: w.input, outputs },
          reason,
        );
    });
  }

  /** Runs a checkpoint (statement or transaction); undefined when the lease was lost (and nothing was written). */
  private async checkpoint<T>(work: () => Promise<T>): Promise<T | undefined> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof LeaseLost) return undefined;
      throw err;
    }
  }

  private finish(
    trx: Db,
    w: WorkflowRow,
    state: 'Succeeded' | 'Failed' | 'Cancelled',
    error: string | null,
  ): Promise<boolean> {
    return finishWorkflow(trx, {
      id: w.id,
      tenantId: w.tenant_id,
      workerId: this.workerId,
      type: w.type,
      state,
      error,
      correlationId: w.correlation_id,
    });
  }
}

async function withTimeout<T>(work: Promise<T>, ms: number, ctl: AbortController): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ctl.abort();
      reject(new StepTimeout(`timed out after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
