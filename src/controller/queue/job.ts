import type { Kind } from '../../registry/kinds/index.js';

/**
 * The reconcile queue is the per-object table `reconcile_jobs` that the change path already
 * writes in the change's own transaction (src/changes/change-path.ts), with a small lease-based
 * claimer here, rather than pg-boss 10 (evaluated and rejected; no longer a dependency) — deliberately:
 * - Level-triggered work wants exactly one row per object whose enqueues merge. pg-boss's
 *   `stately` policy allows one queued job next to the active one, but in 10.x fetching that queued
 *   job while its twin is active violates the policy's unique index and the failing fetch blocks the
 *   whole queue (timgit/pg-boss#535, #492; the maintainer declined to change it) — the common case
 *   for a controller, where objects change while they reconcile.
 * - pg-boss's retry backoff is uncapped half-jitter; we want capped full jitter per object.
 * - The row carries `tenant_id` under row-level security like every tenant table, and the change
 *   path already writes it in one statement with the lineage, audit record and outbox event.
 * The claim/complete/fail/renew statements are one per file below, each with its contract.
 *
 * The queue serves more than reconciles: a row's `object_kind` is its job type (a kind's name for
 * a reconcile, else a type registered in job-types.ts, e.g. a workflow step or a retention sweep)
 * and `object_id` its key (the object, step, … it is about). Every type gets the same lease, fence,
 * ticket, backoff and crash recovery.
 */
export interface QueuedJob {
  /** The job type: a kind (reconcile that object) or a type registered in job-types.ts. */
  kind: string;
  /** The job's key: which object, step or sweep it is about. One row per (type, key). */
  objectId: string;
  tenantId: string | null;
  /** The highest generation enqueued; a hint only (reconcilers read the object itself). */
  generation: number;
  /** Failed attempts in a row so far. */
  attempts: number;
  /** The enqueue counter when claimed: a different value at the end means "changed meanwhile". */
  ticket: number;
  /** W3C trace context of the change that enqueued it (the reconcile continues that trace). */
  traceparent: string | null;
}

/** A reconcile job: its type is the kind of the object to reconcile. */
export interface ReconcileJob extends QueuedJob {
  kind: Kind;
}

export interface JobRow {
  object_kind: string;
  object_id: string;
  tenant_id: string | null;
  generation: number;
  attempts: number;
  ticket: number;
  traceparent: string | null;
}

export const toJob = (r: JobRow): QueuedJob => ({
  kind: r.object_kind,
  objectId: r.object_id,
  tenantId: r.tenant_id,
  generation: r.generation,
  attempts: r.attempts,
  ticket: r.ticket,
  traceparent: r.traceparent,
});
