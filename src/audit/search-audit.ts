import { sql } from 'kysely';
import { type Db, inScope, type Scope } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { FieldErrors, ValidationError } from '../errors/errors.js';
import {
  type AuditItem,
  type AuditRecordRow,
  itemFromRow,
  RECORD_COLUMNS,
  RECORD_FROM,
} from './audit.repository.js';
import type { AuditOutcome } from './audit-hash.js';

export interface AuditSearchQuery {
  /** A tenant id, or 'platform' for records of no tenant. */
  tenant?: string;
  /** The actor's principal, exactly. */
  actor?: string;
  /** An action (`tenant.update`), or a prefix ending in `.*` (`tenant.*`). */
  action?: string;
  outcome?: AuditOutcome;
  targetKind?: string;
  targetId?: string;
  targetSlug?: string;
  correlationId?: string;
  requestId?: string;
  /** Inclusive lower bound, ISO 8601. */
  from?: string | Date;
  /** Exclusive upper bound, ISO 8601. */
  to?: string | Date;
  /** 1-500, default 50. */
  limit?: number;
  cursor?: string;
}

export interface AuditPage {
  items: AuditItem[];
  nextCursor: string | null;
}

const OUTCOMES = ['success', 'failure', 'denied'];

function timeArg(v: string | Date | undefined, field: string, errors: FieldErrors): string | undefined {
  if (v === undefined) return undefined;
  const d = v instanceof Date ? v : new Date(v);
  if (Number.isNaN(d.getTime()) || (typeof v === 'string' && !/^\d{4}-\d{2}-\d{2}/.test(v))) {
    errors.add(`/${field}`, 'time.invalid', `"${String(v)}" is not an ISO 8601 time`);
    return undefined;
  }
  return typeof v === 'string' ? v : d.toISOString();
}

function encodeCursor(r: AuditItem): string {
  return Buffer.from(JSON.stringify([r.time, r.id])).toString('base64url');
}

function decodeCursor(cursor: string): { time: string; id: string } {
  try {
    const [time, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (
      typeof time === 'string' &&
      /^\d{4}-\d{2}-\d{2}T[\d:.]+Z$/.test(time) &&
      typeof id === 'string' &&
      isUuid(id)
    )
      return { time, id };
  } catch {
    // fall through
  }
  throw new ValidationError(
    'cursor.invalid',
    'The cursor is not one this server issued.',
    [{ pointer: '/cursor', code: 'cursor.invalid', message: 'malformed' }],
    400,
  );
}

/**
 * Audit records, newest first, filtered; keyset pagination on (time, id). Runs in the caller's
 * row-level-security scope: a tenant sees its own records only.
 */
export async function searchAudit(db: Db, scope: Scope, query: AuditSearchQuery = {}): Promise<AuditPage> {
  const errors = new FieldErrors();
  const limit = query.limit ?? 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > 500)
    errors.add('/limit', 'limit.invalid', 'limit must be an integer from 1 to 500');
  if (query.tenant !== undefined && query.tenant !== 'platform' && !isUuid(query.tenant))
    errors.add('/tenant', 'tenant.invalid', 'tenant must be a tenant id (UUID) or "platform"');
  if (query.targetId !== undefined && !isUuid(query.targetId))
    errors.add('/targetId', 'uuid.invalid', 'targetId must be a UUID');
  if (query.outcome !== undefined && !OUTCOMES.includes(query.outcome))
    errors.add('/outcome', 'outcome.invalid', `outcome must be one of ${OUTCOMES.join(', ')}`);
  const from = timeArg(query.from, 'from', errors);
  const to = timeArg(query.to, 'to', errors);
  if (!errors.empty)
    throw new ValidationError('audit.query_invalid', 'The audit query is invalid.', errors.list, 400);
  const cursor = query.cursor ? decodeCursor(query.cursor) : undefined;

  const where = [sql`true`];
  if (query.tenant === 'platform') where.push(sql`a.tenant_id is null`);
  else if (query.tenant) where.push(sql`a.tenant_id = ${query.tenant}`);
  if (query.actor !== undefined) where.push(sql`a.actor_principal = ${query.actor}`);
  if (query.action !== undefined) {
    if (query.action.endsWith('.*')) {
      const prefix = query.action.slice(0, -1).replace(/[\\%_]/g, (c) => `\\${c}`);
      where.push(sql`a.action like ${`${prefix}%`}`);
    } else where.push(sql`a.action = ${query.action}`);
  }
  if (query.outcome !== undefined) where.push(sql`a.outcome = ${query.outcome}`);
  if (query.targetKind !== undefined) where.push(sql`a.target_kind = ${query.targetKind}`);
  if (query.targetId !== undefined) where.push(sql`a.target_id = ${query.targetId}`);
  if (query.targetSlug !== undefined) where.push(sql`a.target_slug = ${query.targetSlug}`);
  if (query.correlationId !== undefined) where.push(sql`a.correlation_id = ${query.correlationId}`);
  if (query.requestId !== undefined) where.push(sql`a.request_id = ${query.requestId}`);
  if (from !== undefined) where.push(sql`a.time >= ${from}::timestamptz`);
  if (to !== undefined) where.push(sql`a.time < ${to}::timestamptz`);
  if (cursor) where.push(sql`(a.time, a.id) < (${cursor.time}::timestamptz, ${cursor.id}::uuid)`);

  const rows = await inScope(db, scope, async (trx) => {
    const r = await sql<AuditRecordRow>`select ${RECORD_COLUMNS} from ${RECORD_FROM}
      where ${sql.join(where, sql` and `)} order by a.time desc, a.id desc limit ${limit + 1}`.execute(trx);
    return r.rows;
  });
  const items = rows.slice(0, limit).map(itemFromRow);
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
}
