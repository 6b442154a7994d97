import { createHash } from 'node:crypto';
import type { Trx } from '../db/database.js';

/** States of a workflow. Open ones (at most one per tenant) are Pending, Running, Waiting, Compensating. */
export const WORKFLOW_STATES = [
  'Pending',
  'Running',
  'Waiting',
  'Compensating',
  'Succeeded',
  'Failed',
  'Cancelled',
] as const;
export type WorkflowState = (typeof WORKFLOW_STATES)[number];
export const OPEN_STATES: readonly WorkflowState[] = ['Pending', 'Running', 'Waiting', 'Compensating'];

export interface WorkflowActor {
  principal: string;
  kind: string;
}

/** What a step sees: the workflow, its input and the outputs of the steps completed before it. */
export interface StepContext<I> {
  workflowId: string;
  tenantId: string;
  input: I;
  /** Outputs of completed steps, by step name. */
  outputs: Record<string, unknown>;
  /** Aborted when the step's timeout passes. */
  signal: AbortSignal;
}

/**
 * One step. `run` must be safe to run twice (a crash between its effect and its checkpoint runs it
 * again); `undo`, written beside it, reverses a completed run from its output and must be safe to
 * run twice too. `checkpoint` writes what the step established into Tenantry's own tables in the
 * same transaction as the step's checkpoint, so both persist or neither does.
 */
export interface StepDefinition<I> {
  name: string;
  run(ctx: StepContext<I>): Promise<unknown>;
  undo?(ctx: StepContext<I>, output: unknown): Promise<void>;
  checkpoint?(trx: Trx, ctx: StepContext<I>, output: unknown): Promise<void>;
  /** Milliseconds per attempt (default: the engine's step timeout). */
  timeoutMs?: number;
}

/**
 * Thrown by a step that has to wait for time to pass (a soak time, a maintenance window): the
 * workflow lets go of its lease and is due again after `delayMs`; the attempt is not counted as a
 * failure. The step runs again from its start then, so it must resume from what it recorded.
 */
export class StepDeferred extends Error {
  constructor(
    readonly delayMs: number,
    message: string,
  ) {
    super(message);
  }
}

/** A workflow type: its steps in order, and what its end writes (in the finishing transaction). */
export interface WorkflowDefinition<I = unknown> {
  type: string;
  steps: readonly StepDefinition<I>[];
  /** After the last step, in the transaction that marks the workflow Succeeded. */
  succeeded?(trx: Trx, ctx: Omit<StepContext<I>, 'signal'>): Promise<void>;
  /** After the compensations, in the transaction that marks it Failed or Cancelled. */
  compensated?(trx: Trx, ctx: Omit<StepContext<I>, 'signal'>, reason: string): Promise<void>;
}

/** The typed registry of workflow types the engine runs. */
export type WorkflowRegistry = ReadonlyMap<string, WorkflowDefinition<never>>;

export interface StepRecord {
  position: number;
  name: string;
  state: 'Pending' | 'Running' | 'Completed' | 'Failed' | 'Compensated';
  attempts: number;
  startedAt: string | null;
  endedAt: string | null;
  error: string | null;
}

export interface Workflow {
  id: string;
  tenantId: string;
  type: string;
  state: WorkflowState;
  input: unknown;
  actor: WorkflowActor;
  requestId: string;
  correlationId: string;
  error: string | null;
  attempts: number;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

export interface WorkflowRow {
  id: string;
  tenant_id: string;
  type: string;
  state: WorkflowState;
  input: unknown;
  actor: WorkflowActor;
  request_id: string;
  correlation_id: string;
  error: string | null;
  attempts: number;
  cancel_requested: WorkflowActor | null;
  run_after: Date;
  locked_by: string | null;
  locked_until: Date | null;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
}

export function toWorkflow(r: WorkflowRow): Workflow {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    type: r.type,
    state: r.state,
    input: r.input,
    actor: r.actor,
    requestId: r.request_id,
    correlationId: r.correlation_id,
    error: r.error,
    attempts: r.attempts,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    finishedAt: r.finished_at?.toISOString() ?? null,
  };
}

/**
 * The workflow id of a request: a UUID (v8 layout) from the SHA-256 of its parts, e.g. the tenant
 * and the generation its lifecycle change produced. A retried start computes the same id.
 */
export function workflowIdOf(...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('\u0000')).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
