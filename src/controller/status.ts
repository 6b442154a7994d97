import { sql } from 'kysely';
import { type AuditEntry, auditEntryOf, prepareAuditAppends } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { appendEventsSql, type EventInput } from '../events/append-event.js';
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
 * Writes objects' observed status: phase, observedGeneration, conditions — one statement per table
 * for any number of objects (a settled batch). Never bumps the generation and never goes through the
 * desired-state change path (status is not desired state). The transitions are in `items`' order.
 *
 * Concurrency contract: each row is written only if its `generation` is still the one reconciled —
 * if the desired state moved on meanwhile, nothing is written for it (that change enqueued the
 * object again).
 */
export async function writeStatuses(
  trx: Trx,
  items: { target: StatusTarget; status: ObservedStatus }[],
  now = new Date(),
): Promise<StatusTransition[]> {
  const written = new Set<string>();
  const byTable = new Map<string, typeof items>();
  for (const it of items) {
    const table = TABLES[it.target.kind];
    byTable.set(table, [...(byTable.get(table) ?? []), it]);
  }
  for (const [table, group] of byTable) {
    const rows = group.map(({ target, status }) => ({
      id: target.id,
      generation: target.generation,
      phase: status.phase,
      ready: mergeReady(target.conditions, status.ready, now)[0],
    }));
    // The other conditions are the row's own as they are now (a cell's AgentConnected is written by
    // src/agent meanwhile), not the ones read before the provider call.
    // `t.id = any(…)` besides the join: the planner does not know how many rows jsonb_to_recordset
    // yields, and must not scan the table whole for them (see pokeParentsOf).
    const r = await sql<{ id: string }>`
      update ${sql.table(table)} t
      set phase = v.phase, observed_generation = v.generation,
          conditions = jsonb_build_array(v.ready) || coalesce(
            (select jsonb_agg(c) from jsonb_array_elements(t.conditions) c where c->>'type' <> 'Ready'), '[]'::jsonb)
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as v(id uuid, generation bigint, phase text, ready jsonb)
      where t.id = v.id and t.generation = v.generation and t.id = any(${rows.map((x) => x.id)}::uuid[])
      returning t.id`.execute(trx);
    for (const row of r.rows) written.add(String(row.id).toLowerCase());
  }
  return items.map(({ target, status }) => {
    const w = written.has(target.id.toLowerCase());
    const prevReady = target.conditions.find((c) => c.type === 'Ready')?.status;
    return {
      written: w,
      changed: w && (prevReady !== status.ready.status || target.phase !== status.phase),
      becameReady: w && status.phase === 'Ready' && target.phase !== 'Ready',
      becameFailed: w && status.phase === 'Failed' && target.phase !== 'Failed',
    };
  });
}

/** Writes one object's observed status (writeStatuses of one). */
export async function writeStatus(
  trx: Trx,
  target: StatusTarget,
  status: ObservedStatus,
  now = new Date(),
): Promise<StatusTransition> {
  return (await writeStatuses(trx, [{ target, status }], now))[0]!;
}

/** What a status event says (the published StatusData shape of docs/events/*.ready|failed|drifted.v1). */
export interface StatusEventData {
  previousPhase: string;
  phase: string;
  reason: string;
  message: string;
  drift?: string[];
}

/** One status event to record: the transition of `target`, in the context of its reconcile. */
export interface StatusEvent {
  ctx: RequestContext;
  target: Pick<StatusTarget, 'kind' | 'id' | 'slug' | 'tenantId' | 'generation'>;
  what: 'ready' | 'failed' | 'drifted';
  event: StatusEventData;
}

/**
 * Status transitions that matter (ready, failed, drifted) as audit records and events, by the system
 * actor, in the status write's transaction — any number in one statement (a settled batch): the
 * events appended as src/events/append-event.ts appends them (appendEventsSql: numbered in their
 * tenant's sequence at commit, migration 0045, in `events`' order), the audit records as
 * prepareAuditAppends' unsequenced inserts, both data-modifying CTEs of the one statement.
 */
export async function recordStatusEvents(trx: Trx, events: StatusEvent[]): Promise<void> {
  const audits: AuditEntry[] = [];
  const outbox: EventInput[] = [];
  for (const { ctx, target, what, event: e } of events) {
    const name = `${target.kind.toLowerCase()}.${what}`;
    if (!(EVENT_NAMES as readonly string[]).includes(name)) continue;
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
    audits.push(
      auditEntryOf(ctx, {
        tenantId: target.tenantId,
        action: name,
        target: { kind: target.kind, id: target.id, slug: target.slug },
        after: data,
        outcome: what === 'failed' ? 'failure' : 'success',
        decision: null,
      }),
    );
    outbox.push({
      tenantId: target.tenantId,
      name: name as EventName,
      subject: `${target.kind.toLowerCase()}s/${target.id}`,
      data,
      correlationId: ctx.correlationId,
    });
  }
  if (outbox.length === 0) return;
  await sql`
    with audit as (${prepareAuditAppends(audits).insert}),
    ${appendEventsSql(outbox, 'ev')}
    select count(*) from ev`.execute(trx);
}

/** One status transition that matters as an audit record and an event (recordStatusEvents of one). */
export function recordStatusEvent(
  trx: Trx,
  ctx: RequestContext,
  target: Pick<StatusTarget, 'kind' | 'id' | 'slug' | 'tenantId' | 'generation'>,
  what: 'ready' | 'failed' | 'drifted',
  e: StatusEventData,
): Promise<void> {
  return recordStatusEvents(trx, [{ ctx, target, what, event: e }]);
}
