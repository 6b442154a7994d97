import { sql } from 'kysely';
import { auditEntryOf, prepareAuditAppend } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { appendEventSql } from '../events/append-event.js';
import { EVENT_NAMES, type EventName, type Kind, TABLES } from '../registry/kinds/index.js';
import type { Condition } from '../registry/representation.js';

/** Phases the controller writes. `Terminating` is set by the registry when an object is deleted. */
export type Phase =
  | 'Pending'
  | 'Provisioning'
  | 'Ready'
  | 'Failed'
  | 'Suspended'
  | 'Archived'
  | 'Draft'
  | 'Deleted';

export interface ObservedStatus {
  phase: Phase | 'Terminating';
  ready: { status: Condition['status']; reason: string; message: string };
}

export interface StatusTarget {
  kind: Kind;
  id: string;
  slug: string;
  tenantId: string | null;
  /** The generation that was reconciled. */
  generation: number;
  phase: string;
  conditions: Condition[];
}

export interface StatusTransition {
  written: boolean;
  /** The Ready condition's status or the phase changed. */
  changed: boolean;
  becameReady: boolean;
  becameFailed: boolean;
}

/** The Ready condition merged into the existing ones; lastTransitionTime moves only when status does. */
export function mergeReady(existing: Condition[], next: ObservedStatus['ready'], now: Date): Condition[] {
  const prev = existing.find((c) => c.type === 'Ready');
  const ready: Condition = {
    type: 'Ready',
    status: next.status,
    reason: next.reason,
    message: next.message,
    lastTransitionTime: prev && prev.status === next.status ? prev.lastTransitionTime : now.toISOString(),
  };
  return [ready, ...existing.filter((c) => c.type !== 'Ready')];
}

/**
 * Writes an object's observed status: phase, observedGeneration, conditions. Never bumps the
 * generation and never goes through the desired-state change path (status is not desired state).
 *
 * Concurrency contract: conditional on `generation` still being the one reconciled — if the
 * desired state moved on meanwhile, nothing is written (that change enqueued the object again).
 */
export async function writeStatus(
  trx: Trx,
  target: StatusTarget,
  status: ObservedStatus,
  now = new Date(),
): Promise<StatusTransition> {
  const [ready] = mergeReady(target.conditions, status.ready, now);
  // The other conditions are the row's own as they are now (a cell's AgentConnected is written by
  // src/agent meanwhile), not the ones read before the provider call.
  const r = await sql`
    update ${sql.table(TABLES[target.kind])}
    set phase = ${status.phase}, observed_generation = ${target.generation},
        conditions = jsonb_build_array(${JSON.stringify(ready)}::jsonb) || coalesce(
          (select jsonb_agg(c) from jsonb_array_elements(conditions) c where c->>'type' <> 'Ready'), '[]'::jsonb)
    where id = ${target.id} and generation = ${target.generation}`.execute(trx);
  const written = Number(r.numAffectedRows ?? 0) > 0;
  const prevReady = target.conditions.find((c) => c.type === 'Ready')?.status;
  const changed = written && (prevReady !== status.ready.status || target.phase !== status.phase);
  return {
    written,
    changed,
    becameReady: written && status.phase === 'Ready' && target.phase !== 'Ready',
    becameFailed: written && status.phase === 'Failed' && target.phase !== 'Failed',
  };
}

/** What a status event says (the published StatusData shape of docs/events/*.ready|failed|drifted.v1). */
export interface StatusEventData {
  previousPhase: string;
  phase: string;
  reason: string;
  message: string;
  drift?: string[];
}

/**
 * A status transition that matters (ready, failed, drifted) as an audit record and an event (numbered
 * in the tenant's sequence at commit), by the system actor, in the status write's transaction.
 */
export async function recordStatusEvent(
  trx: Trx,
  ctx: RequestContext,
  target: Pick<StatusTarget, 'kind' | 'id' | 'slug' | 'tenantId' | 'generation'>,
  what: 'ready' | 'failed' | 'drifted',
  e: StatusEventData,
): Promise<void> {
  const name = `${target.kind.toLowerCase()}.${what}`;
  if (!(EVENT_NAMES as readonly string[]).includes(name)) return;
  const data = {
    kind: target.kind,
    uuid: target.id,
    slug: target.slug,
    observedGeneration: target.generation,
    previous: { phase: e.previousPhase },
    current: { phase: e.phase },
    reason: e.reason,
    message: e.message,
    ...(e.drift ? { drift: e.drift } : {}),
  };
  const audit = prepareAuditAppend(
    auditEntryOf(ctx, {
      tenantId: target.tenantId,
      action: name,
      target: { kind: target.kind, id: target.id, slug: target.slug },
      after: data,
      outcome: what === 'failed' ? 'failure' : 'success',
      decision: null,
    }),
  );
  await sql`
    with audit as (${audit.insert}),
    ${appendEventSql({
      tenantId: target.tenantId,
      name: name as EventName,
      subject: `${target.kind.toLowerCase()}s/${target.id}`,
      data,
      correlationId: ctx.correlationId,
    })}
    select id from event_done`.execute(trx);
}
