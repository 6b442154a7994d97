import { randomUUID } from 'node:crypto';
import { type RawBuilder, sql } from 'kysely';
import type pg from 'pg';
import { appendAudit } from '../../src/audit/append-audit.js';
import {
  type AuditRecordRow,
  RECORD_COLUMNS,
  RECORD_FROM,
  recordFromRow,
} from '../../src/audit/audit.repository.js';
import type { AuditRecord } from '../../src/audit/audit-hash.js';
import { integrateAudit } from '../../src/audit/audit-sequencer.js';
import { asPlatform, type Db } from '../../src/db/database.js';

/** Runs the audit sequencer until every committed entry is in its chain (what the server does within a second). */
export async function sequenceAudit(db: Db): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await integrateAudit(db)) !== null) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('the audit sequencer lock stayed taken');
}

/** The records `ids`, sequenced, in that order. */
export async function sequencedRecords(db: Db, ids: string[]): Promise<AuditRecord[]> {
  await sequenceAudit(db);
  const { rows } = await asPlatform(db, (trx) =>
    sql<AuditRecordRow>`select ${RECORD_COLUMNS} from ${RECORD_FROM} where a.id = any(${ids}::uuid[])`.execute(
      trx,
    ),
  );
  const byId = new Map(rows.map((r) => [r.id, recordFromRow(r)]));
  return ids.map((id) => byId.get(id)!);
}

/**
 * Appends `n` records to a tenant's chain (or the platform's), one transaction each, and sequences
 * them: returned as they are in the chain.
 */
export async function appendMany(
  db: Db,
  tenantId: string | null,
  n: number,
  overrides: { actor?: string; action?: string; correlationId?: string } = {},
): Promise<AuditRecord[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = randomUUID();
    out.push(
      (
        await asPlatform(db, (trx) =>
          appendAudit(trx, {
            tenantId,
            appId: 'test',
            actor: { principal: overrides.actor ?? 'alice', kind: 'user' },
            sessionId: null,
            action: overrides.action ?? 'tenant.update',
            target: { kind: 'Tenant', id: tenantId, slug: `t-${i}` },
            before: { n: i - 1 },
            after: { n: i, nested: { list: [1, 2.5, 'x'], flag: true } },
            outcome: 'success',
            decision: null,
            requestId: id,
            correlationId: overrides.correlationId ?? id,
          }),
        )
      ).id,
    );
  }
  return sequencedRecords(db, out);
}

const AUDIT_TABLES = ['audit_records', 'audit_positions', 'audit_checkpoints', 'audit_retention'];

/**
 * Sequenced records with their positions, as one relation for tests' SQL: `select … from
 * ${SEQUENCED} r where chain = $1 order by seq` (the columns of audit_records, then seq, prev_hash
 * and hash from audit_positions).
 */
export const SEQUENCED =
  '(select a.*, p.seq, p.prev_hash, p.hash from audit_records a join audit_positions p on p.record_id = a.id)';

/** The id of the record at `seq` in `chain`, as SQL (for tampering statements). */
export const recordAt = (chain: string, seq: number): string =>
  `(select record_id from audit_positions where chain = '${chain}' and seq = ${seq})`;

/**
 * Runs SQL as the owner with the append-only triggers switched off: what an attacker with
 * database access would do.
 */
export async function tamper(owner: pg.Pool, statements: string, params: unknown[] = []): Promise<void> {
  const c = await owner.connect();
  try {
    await c.query('begin');
    for (const table of AUDIT_TABLES) await c.query(`alter table ${table} disable trigger user`);
    await c.query(statements, params);
    for (const table of AUDIT_TABLES) await c.query(`alter table ${table} enable trigger user`);
    await c.query('commit');
  } catch (err) {
    await c.query('rollback');
    throw err;
  } finally {
    c.release();
  }
}

/**
 * The INSERT of a record complete with its position and hash (what a forger writes as the owner):
 * the record and its row in audit_positions. Run it through tamper() (with the triggers off, as a
 * forger would), or the record is also queued for the sequencer.
 */
export function auditInsertSql(r: AuditRecord): RawBuilder<unknown> {
  return sql`with record as (insert into audit_records
      (id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
       target_slug, before, after, outcome, decision, request_id, correlation_id, chain)
    values (${r.id}, ${r.time}::timestamptz, ${r.tenantId}, ${r.appId}, ${r.actor.principal}, ${r.actor.kind},
      ${r.sessionId}, ${r.action}, ${r.target.kind}, ${r.target.id}, ${r.target.slug},
      ${JSON.stringify(r.before)}::jsonb, ${JSON.stringify(r.after)}::jsonb, ${r.outcome},
      ${JSON.stringify(r.decision)}::jsonb, ${r.requestId}, ${r.correlationId}, ${r.chain}) returning id)
    insert into audit_positions (chain, seq, record_id, prev_hash, hash)
    select ${r.chain}, ${r.seq}, id, ${r.prevHash}, ${r.hash} from record`;
}
