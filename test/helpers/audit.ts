import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { appendAudit } from '../../src/audit/append-audit.js';
import type { AuditRecord } from '../../src/audit/audit-hash.js';
import { asPlatform, type Db } from '../../src/db/database.js';

/** Appends `n` records to a tenant's chain (or the platform's), one transaction each. */
export async function appendMany(
  db: Db,
  tenantId: string | null,
  n: number,
  overrides: { actor?: string; action?: string; correlationId?: string } = {},
): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (let i = 0; i < n; i++) {
    const id = randomUUID();
    out.push(
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
      ),
    );
  }
  return out;
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
