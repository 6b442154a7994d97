import type { ControlledTransaction } from 'kysely';
import type { AtomicWrite, RequestContext } from '../context/request-context.js';
import { type Db, inScope, platformDb, type Scope, setScope, type Trx } from '../db/database.js';
import type { Database } from '../db/schema.js';
import { ConflictError } from '../errors/errors.js';
import {
  completeKey,
  type IdempotencyRecordKey,
  insertPendingKey,
  type StoredResponse,
} from './idempotency.repository.js';

/**
 * The write of a request with an Idempotency-Key, and its saved answer, in one transaction (issue 15).
 *
 * `run` opens the write's transaction and first inserts the key's record in it; the transaction is
 * left open when the work succeeds, and `commit` writes the answer into the record and commits. So
 * the key's record exists exactly when the write it answers committed, with its answer: a database
 * outage, a lost commit acknowledgement or a killed process can neither apply the write twice (a
 * retry with the key replays the answer) nor keep the answer of a write that did not commit (a retry
 * runs the write).
 *
 * Concurrency: the record's primary key serialises duplicates. A second request with the same key
 * waits on the first one's uncommitted record; when the first commits, the insert finds it and the
 * second gives up (409 idempotency.in_progress, nothing written; a retry replays). When the first
 * rolls back, the second's insert goes through and it runs the write.
 */
export class IdempotentWrite implements AtomicWrite {
  private trx: ControlledTransaction<Database> | undefined;
  /** Whether a transaction was opened by `run` (only the first write of the request is made atomic). */
  private used = false;

  constructor(
    readonly key: IdempotencyRecordKey,
    readonly hash: string,
    private readonly ttlSeconds: number,
  ) {}

  /** True until the request's first write has taken the key. */
  get available(): boolean {
    return !this.used;
  }

  /** True while a write waits for its answer to commit. */
  get open(): boolean {
    return this.trx !== undefined;
  }

  /**
   * Runs `work` in a new transaction in `scope` that holds the key's record; on success the
   * transaction stays open until `commit` or `rollback`. A failure rolls back and rethrows.
   */
  async run<T>(db: Db, scope: Scope, work: (trx: Trx) => Promise<T>): Promise<T> {
    this.used = true;
    const trx = await (scope.kind === 'platform' ? platformDb(db) : db).startTransaction().execute();
    try {
      await setScope(trx, scope);
      if (!(await insertPendingKey(trx, this.key, this.hash, this.ttlSeconds))) {
        throw new ConflictError(
          'idempotency.in_progress',
          'A request with this Idempotency-Key was processed concurrently; retry to get its answer.',
        );
      }
      const value = await work(trx);
      this.trx = trx;
      return value;
    } catch (err) {
      await trx
        .rollback()
        .execute()
        .catch(() => undefined);
      // Another attempt (a deadlock retry) may open a transaction again.
      this.used = false;
      throw err;
    }
  }

  /** Saves the answer with the write and commits both. Rejects when the commit may not have happened. */
  async commit(answer: StoredResponse): Promise<void> {
    const trx = this.take();
    try {
      await completeKey(trx, this.key, answer);
      await trx.commit().execute();
    } catch (err) {
      await trx
        .rollback()
        .execute()
        .catch(() => undefined);
      throw err;
    }
  }

  /** The request failed after its write: nothing of it commits. */
  async rollback(): Promise<void> {
    await this.take()
      .rollback()
      .execute()
      .catch(() => undefined);
  }

  private take(): ControlledTransaction<Database> {
    const trx = this.trx;
    if (!trx) throw new Error('no open idempotent write');
    this.trx = undefined;
    return trx;
  }
}

/**
 * A service's write in the caller's scope: under the request's Idempotency-Key (a route marked
 * `idempotency: 'atomic'`) it commits with the answer; otherwise it is one ordinary transaction.
 */
export function writeInScope<T>(db: Db, ctx: RequestContext, work: (trx: Trx) => Promise<T>): Promise<T> {
  const write = ctx.idempotency;
  return write?.available ? write.run(db, ctx.scope, work) : inScope(db, ctx.scope, work);
}
