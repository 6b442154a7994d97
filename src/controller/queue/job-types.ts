import type { Trx } from '../../db/database.js';
import type { QueuedJob } from './job.js';

/** How a handler's run ended (a failure is a thrown error; see the controller for retries). */
export interface JobResult {
  /** The job's work is over for good (e.g. a finalised tombstone): its row can go. */
  finalised: boolean;
  /** The handler already ended the job with `finish` inside its own transaction. */
  finished: boolean;
}

/** Ends the job in the handler's own transaction, so its effect and the job's release commit together. */
export type Finish = (trx: Trx, finalised: boolean) => Promise<void>;

/**
 * The handler of one job type. `run` must be safe to run twice (a lease can run out mid-run, and a
 * crash leaves the job to be claimed again); it throws to fail (a `ProviderError` with
 * `retryable: false` ends the retries until the next resync).
 */
export interface JobHandler<J extends QueuedJob = QueuedJob> {
  run(job: J, finish: Finish): Promise<JobResult>;
  /** After a failed run, before the job is rescheduled: e.g. show the failure on the object. */
  failed?(job: J, err: Error & { reason?: string }, final: boolean, retryInMs: number): Promise<void>;
}

/**
 * The typed job-type → handler registry the controller serves from the leased queue
 * (`reconcile_jobs`): reconciles (one type per kind) and any other job type, e.g. workflow steps or
 * retention sweeps. `Types` maps each type name to its job shape, so a handler sees its own type.
 */
export class JobTypes<Types extends Record<string, QueuedJob> = Record<string, QueuedJob>> {
  private readonly handlers = new Map<string, JobHandler>();

  register<T extends keyof Types & string>(type: T, handler: JobHandler<Types[T]>): this {
    if (this.handlers.has(type)) throw new Error(`job type ${type} is registered twice`);
    this.handlers.set(type, handler as unknown as JobHandler);
    return this;
  }

  handlerOf(type: string): JobHandler | undefined {
    return this.handlers.get(type);
  }

  get types(): string[] {
    return [...this.handlers.keys()];
  }
}
