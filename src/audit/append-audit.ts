import { type RawBuilder, sql } from 'kysely';
import type { Db, Trx } from '../db/database.js';
import { platformDb } from '../db/database.js';
import { newObjectId } from '../domain/identifiers.js';
import { type AuditOutcome, chainOf, jsonValue } from './audit-hash.js';

/** What a caller says about one audited operation; the sequencer adds the chain position and hashes. */
export interface AuditEntry {
  id?: string;
  tenantId: string | null;
  appId: string | null;
  actor: { principal: string; kind: string };
  sessionId: string | null;
  action: string;
  target: { kind: string; id: string | null; slug: string | null };
  before?: unknown;
  after?: unknown;
  outcome: AuditOutcome;
  decision?: unknown;
  requestId: string;
  correlationId: string;
}

/**
 * An audit record as written by the change: everything but its chain position. The sequencer
 * (audit-sequencer.ts) gives it `seq`, `prevHash`, `time`-ordered integration and its hash, within a
 * second; until then it is an unsequenced entry (searchable, counted by verify, not yet in the tree).
 */
export interface AppendedAudit {
  id: string;
  chain: string;
  tenantId: string | null;
  action: string;
  outcome: AuditOutcome;
}

/** An entry and the SQL that stores it, for embedding in the caller's statement. */
export interface PreparedAudit {
  record: AppendedAudit;
  /** `insert into audit_records …` (usable as a data-modifying CTE). */
  insert: RawBuilder<unknown>;
}

/**
 * An entry's values as stored: ids in lower case (UUID columns read back so, and what is hashed
 * must be what is read), JSON as text, the chain of its tenant.
 */
function storedValues(entry: AuditEntry) {
  // Time-ordered (UUIDv7) like new objects' keys, so audit_records' key entries stay on its right-hand pages.
  const id = (entry.id ?? newObjectId()).toLowerCase();
  const tenantId = entry.tenantId?.toLowerCase() ?? null;
  const record: AppendedAudit = {
    id,
    chain: chainOf(tenantId),
    tenantId,
    action: entry.action,
    outcome: entry.outcome,
  };
  const json = (v: unknown) => JSON.stringify(jsonValue(v));
  return {
    record,
    targetId: entry.target.id?.toLowerCase() ?? null,
    before: json(entry.before),
    after: json(entry.after),
    decision: json(entry.decision),
  };
}

/**
 * The insert of one unsequenced record (no round trip). Concurrency contract: it takes no lock that
 * any other change takes — appends to one chain run in parallel; their order in the chain is the
 * order in which the sequencer integrates them after they commit. Its `time` is the database clock
 * at the insert. A rolled-back transaction leaves nothing to sequence.
 */
export function prepareAuditAppend(entry: AuditEntry): PreparedAudit {
  const { records, insert } = prepareAuditAppends([entry]);
  return { record: records[0]!, insert };
}

/**
 * The insert of many unsequenced records in one statement (a change that writes many: a bulk
 * operation, a workflow step over many objects): one round trip and one statement's per-row work
 * instead of one per record, under the same contract as prepareAuditAppend. Their order in their
 * chains is the order the sequencer integrates them.
 */
export function prepareAuditAppends(entries: readonly AuditEntry[]): {
  records: AppendedAudit[];
  insert: RawBuilder<unknown>;
} {
  if (entries.length === 0) throw new RangeError('no audit entries to append');
  const rows = entries.map((entry) => {
    const v = storedValues(entry);
    return {
      record: v.record,
      values: sql`(${v.record.id}::uuid, ${v.record.tenantId}::uuid, ${entry.appId}, ${entry.actor.principal},
        ${entry.actor.kind}, ${entry.sessionId}, ${entry.action}, ${entry.target.kind}, ${v.targetId}::uuid,
        ${entry.target.slug}, ${v.before}::jsonb, ${v.after}::jsonb, ${entry.outcome}, ${v.decision}::jsonb,
        ${entry.requestId}, ${entry.correlationId}, ${v.record.chain})`,
    };
  });
  const insert = sql`insert into audit_records
      (id, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
       target_slug, before, after, outcome, decision, request_id, correlation_id, chain)
    values ${sql.join(rows.map((r) => r.values))}`;
  return { records: rows.map((r) => r.record), insert };
}

/** Appends many records in the caller's transaction, in one statement (prepareAuditAppends). */
export async function appendAudits(trx: Trx, entries: readonly AuditEntry[]): Promise<AppendedAudit[]> {
  if (entries.length === 0) return [];
  const p = prepareAuditAppends(entries);
  await p.insert.execute(trx);
  return p.records;
}

/** Appends one record in the caller's transaction: one round trip, no lock shared with other changes. */
export async function appendAudit(trx: Trx, entry: AuditEntry): Promise<AppendedAudit> {
  const p = prepareAuditAppend(entry);
  await p.insert.execute(trx);
  return p.record;
}

/**
 * Appends one record in a transaction of its own, as the platform (the record may concern a tenant
 * the caller may not see), in one round trip: `tenantry_audit_append` (migration 0066) inserts it in
 * the platform scope, and the statement is its own transaction, so when this resolves the record and
 * its queue entry are committed; when it rejects, neither is. Same contract as prepareAuditAppend.
 * For an operation that writes nothing else (a refused or failed attempt, a disclosure); one that
 * writes appends in its own transaction (appendAudit, prepareAuditAppend).
 */
export async function appendAuditAlone(db: Db, entry: AuditEntry): Promise<AppendedAudit> {
  const v = storedValues(entry);
  await sql`select tenantry_audit_append(${v.record.id}, ${v.record.tenantId}, ${entry.appId},
    ${entry.actor.principal}, ${entry.actor.kind}, ${entry.sessionId}, ${entry.action}, ${entry.target.kind},
    ${v.targetId}, ${entry.target.slug}, ${v.before}, ${v.after}, ${entry.outcome}, ${v.decision},
    ${entry.requestId}, ${entry.correlationId})`.execute(platformDb(db));
  return v.record;
}

export interface AuditAttempt {
  tenantId: string | null;
  action: string;
  outcome: 'denied' | 'failure';
  target: { kind: string; id?: string | null; slug?: string | null };
  /** The policy decision or error that refused it: a stable code and a safe message, never secrets. */
  decision?: unknown;
}

export interface AttemptContext {
  actor: { principal: string; kind: string };
  appId: string | null;
  sessionId: string | null;
  requestId: string;
  correlationId: string;
}

/**
 * The entry for an operation done in `ctx`: who did it (actor, application, session) and the
 * request's ids come from the identity envelope, so callers say only what was done.
 */
export function auditEntryOf(
  ctx: AttemptContext,
  what: Omit<AuditEntry, 'actor' | 'appId' | 'sessionId' | 'requestId' | 'correlationId'>,
): AuditEntry {
  return {
    ...what,
    actor: ctx.actor,
    appId: ctx.appId,
    sessionId: ctx.sessionId,
    requestId: ctx.requestId,
    correlationId: ctx.correlationId,
  };
}

/**
 * Records a refused or failed attempt in a transaction of its own (the operation's transaction has
 * rolled back or never began): appendAuditAlone. Compatible with RequestContext.
 */
export async function recordAuditAttempt(
  db: Db,
  ctx: AttemptContext,
  attempt: AuditAttempt,
): Promise<AppendedAudit> {
  return appendAuditAlone(
    db,
    auditEntryOf(ctx, {
      tenantId: attempt.tenantId,
      action: attempt.action,
      target: {
        kind: attempt.target.kind,
        id: attempt.target.id ?? null,
        slug: attempt.target.slug ?? null,
      },
      before: null,
      after: null,
      outcome: attempt.outcome,
      decision: attempt.decision ?? null,
    }),
  );
}
