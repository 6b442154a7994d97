import { randomUUID } from 'node:crypto';
import { type RawBuilder, sql } from 'kysely';
import { tenantWriteLockSql } from '../changes/tenant-write-lock.js';
import type { Db, Trx } from '../db/database.js';
import { asPlatform } from '../db/database.js';
import {
  type AuditOutcome,
  type AuditRecord,
  chainOf,
  GENESIS_HASH,
  hashAuditDocument,
  jsonValue,
} from './audit-hash.js';

/** What a caller says about one audited operation; the chain position and hashes are added here. */
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

/** The next position of a chain, reserved under the chain head's row lock. */
export interface AuditPosition {
  chain: string;
  seq: number;
  prevHash: string;
  /** The database clock when the lock was granted: non-decreasing along a chain. */
  time: string;
}

/** A sealed record and the SQL that stores it, for embedding in the caller's statement. */
export interface PreparedAudit {
  record: AuditRecord;
  /** `insert into audit_records …` (usable as a data-modifying CTE). */
  insert: RawBuilder<unknown>;
  /** `update audit_chain_heads …` to the new record (usable as a data-modifying CTE). */
  advanceHead: RawBuilder<unknown>;
}

/**
 * Reserves the next position of `chain`: one statement that creates or bumps the chain head and
 * returns the previous hash.
 *
 * Concurrency contract: takes the chain's tenant write lock, then `insert … on conflict do update`
 * takes the head row's lock, both held until the
 * caller's transaction ends, so appends to one chain are serialised and `seq` is gap-free (a rolled
 * back transaction also rolls back its bump). Different chains (tenants) never wait on each other.
 * The caller must store the record and advance the head in the same transaction
 * (`PreparedAudit.insert` / `advanceHead`); a transaction that appends to several chains should take
 * them in a stable order where it can, or be ready to retry a deadlock (40P01).
 */
export async function reserveAuditPosition(trx: Trx, chain: string): Promise<AuditPosition> {
  // The chain's tenant write lock first (src/changes/tenant-write-lock.ts), in the same round trip.
  const { rows } = await sql<{ seq: number; prev_hash: string; time: string }>`
    insert into audit_chain_heads as h (chain, seq, hash)
    select ${chain}, 1, ${GENESIS_HASH} from (select ${tenantWriteLockSql(chain)}) as tenant_write_lock where true
    on conflict (chain) do update set seq = h.seq + 1, updated_at = now()
    returning h.seq, h.hash as prev_hash, tenantry_audit_time(clock_timestamp()) as time
  `.execute(trx);
  const row = rows[0]!;
  return { chain, seq: row.seq, prevHash: row.prev_hash, time: row.time };
}

/** Pure: the record at `position`, with its hash. */
export function sealAuditRecord(entry: AuditEntry, position: AuditPosition): AuditRecord {
  // UUID columns read back in lower case; what is hashed must be what is read.
  const doc = {
    v: 1 as const,
    id: (entry.id ?? randomUUID()).toLowerCase(),
    chain: position.chain,
    seq: position.seq,
    time: position.time,
    tenantId: entry.tenantId?.toLowerCase() ?? null,
    appId: entry.appId,
    actor: { principal: entry.actor.principal, kind: entry.actor.kind },
    sessionId: entry.sessionId,
    action: entry.action,
    target: { kind: entry.target.kind, id: entry.target.id?.toLowerCase() ?? null, slug: entry.target.slug },
    before: jsonValue(entry.before),
    after: jsonValue(entry.after),
    outcome: entry.outcome,
    decision: jsonValue(entry.decision),
    requestId: entry.requestId,
    correlationId: entry.correlationId,
    prevHash: position.prevHash,
  };
  return { ...doc, hash: hashAuditDocument(doc) };
}

export function auditInsertSql(r: AuditRecord): RawBuilder<unknown> {
  return sql`insert into audit_records
      (id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
       target_slug, before, after, outcome, decision, request_id, correlation_id, chain, seq, prev_hash, hash)
    values (${r.id}, ${r.time}::timestamptz, ${r.tenantId}, ${r.appId}, ${r.actor.principal}, ${r.actor.kind},
      ${r.sessionId}, ${r.action}, ${r.target.kind}, ${r.target.id}, ${r.target.slug},
      ${JSON.stringify(r.before)}::jsonb, ${JSON.stringify(r.after)}::jsonb, ${r.outcome},
      ${JSON.stringify(r.decision)}::jsonb, ${r.requestId}, ${r.correlationId}, ${r.chain}, ${r.seq},
      ${r.prevHash}, ${r.hash})`;
}

export function advanceHeadSql(r: AuditRecord): RawBuilder<unknown> {
  return sql`update audit_chain_heads set hash = ${r.hash} where chain = ${r.chain} and seq = ${r.seq}`;
}

/**
 * Reserves the position (one round trip) and seals the record; the caller writes `insert` and
 * `advanceHead` in its own statement, in the same transaction — this is how the change path keeps
 * the audit record in the one statement that writes lineage, outbox event and reconcile job.
 */
export async function prepareAuditAppend(trx: Trx, entry: AuditEntry): Promise<PreparedAudit> {
  const position = await reserveAuditPosition(trx, chainOf(entry.tenantId?.toLowerCase() ?? null));
  const record = sealAuditRecord(entry, position);
  return { record, insert: auditInsertSql(record), advanceHead: advanceHeadSql(record) };
}

/** Appends one record in the caller's transaction: two round trips. */
export async function appendAudit(trx: Trx, entry: AuditEntry): Promise<AuditRecord> {
  const p = await prepareAuditAppend(trx, entry);
  await sql`with audit as (${p.insert}) ${p.advanceHead}`.execute(trx);
  return p.record;
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
 * rolled back or never began). Written as the platform, since the record may concern a tenant the
 * caller may not see. Compatible with RequestContext.
 */
export async function recordAuditAttempt(
  db: Db,
  ctx: AttemptContext,
  attempt: AuditAttempt,
): Promise<AuditRecord> {
  return asPlatform(db, (trx) =>
    appendAudit(
      trx,
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
    ),
  );
}
