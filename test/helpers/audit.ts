import { randomUUID } from 'node:crypto';
import { type RawBuilder, sql } from 'kysely';
import type pg from 'pg';
import { appendAudit } from '../../src/audit/append-audit.js';
import { type AuditRecordRow, RECORD_COLUMNS, recordFromRow } from '../../src/audit/audit.repository.js';
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
    sql<AuditRecordRow>`select ${RECORD_COLUMNS} from audit_records a where a.id = any(${ids}::uuid[])`.execute(
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

/**
 * Runs SQL as the owner with the append-only triggers switched off: what an attacker with
 * database access would do.
 */
export async function tamper(owner: pg.Pool, statements: string, params: unknown[] = []): Promise<void> {
  const c = await owner.connect();
  try {
    await c.query('begin');
    await c.query('alter table audit_records disable trigger user');
    await c.query('alter table audit_checkpoints disable trigger user');
    await c.query('alter table audit_retention disable trigger user');
    await c.query(statements, params);
    await c.query('alter table audit_records enable trigger user');
    await c.query('alter table audit_checkpoints enable trigger user');
    await c.query('alter table audit_retention enable trigger user');
    await c.query('commit');
  } catch (err) {
    await c.query('rollback');
    throw err;
  } finally {
    c.release();
  }
}

/** The INSERT of a record complete with its position and hash (what a forger writes as the owner). */
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
