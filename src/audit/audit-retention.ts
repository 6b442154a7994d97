import type { KeyObject } from 'node:crypto';
import { sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';
import { ConflictError } from '../errors/errors.js';
import type { AppendedAudit } from './append-audit.js';
import { type AttemptContext, appendAudit, auditEntryOf } from './append-audit.js';
import { checkpointFromRow, checkpointPayload } from './audit-checkpoint.js';
import { trustedKeys, verifySignature } from './checkpoint-signer.js';

export interface RetentionSegment {
  chain: string;
  throughSeq: number;
  throughHash: string;
  deleted: number;
}

export interface RetentionResult {
  checkpointId: string | null;
  segments: RetentionSegment[];
  /** The platform-chain record of this retention run (null when nothing was due). */
  record: AppendedAudit | null;
}

/**
 * Deletes every whole segment older than `olderThan`: per chain, the records up to the head signed
 * by the newest checkpoint taken before `olderThan` (so every deleted record is older, and the chain
 * that remains starts at a signed head). Each deletion is kept in audit_retention and the run is
 * itself audited on the platform chain, in the same transaction. Refuses to delete through a
 * checkpoint whose signature does not verify with `publicKeys`.
 */
export async function applyAuditRetention(
  db: Db,
  ctx: AttemptContext,
  opts: { olderThan: Date; publicKeys: ReadonlyArray<KeyObject | string> },
): Promise<RetentionResult> {
  const keys = trustedKeys(opts.publicKeys);
  return asPlatform(db, async (trx) => {
    const { rows } = await sql<Parameters<typeof checkpointFromRow>[0]>`
      select id, tenantry_audit_time(time) as time, key_id, heads, signature from audit_checkpoints
      where time < ${opts.olderThan.toISOString()}::timestamptz order by time desc, id desc limit 1`.execute(
      trx,
    );
    const row = rows[0];
    if (!row) return { checkpointId: null, segments: [], record: null };
    const checkpoint = checkpointFromRow(row);
    const key = keys.get(checkpoint.keyId);
    if (!key || !verifySignature(key, checkpointPayload(checkpoint), checkpoint.signature)) {
      throw new ConflictError(
        'audit.checkpoint_invalid',
        `Audit checkpoint ${checkpoint.id} does not verify; retention refused. Run audit verify.`,
      );
    }
    const deleted = await sql<{ chain: string; through_seq: number; through_hash: string; deleted: number }>`
      select * from tenantry_audit_apply_retention(${checkpoint.id}::uuid, ${opts.olderThan.toISOString()}::timestamptz)
    `.execute(trx);
    const segments = deleted.rows.map((r) => ({
      chain: r.chain,
      throughSeq: r.through_seq,
      throughHash: r.through_hash,
      deleted: r.deleted,
    }));
    if (segments.length === 0) return { checkpointId: checkpoint.id, segments, record: null };
    const record = await appendAudit(
      trx,
      auditEntryOf(ctx, {
        tenantId: null,
        action: 'audit.retention',
        target: { kind: 'AuditLog', id: null, slug: null },
        before: null,
        after: { checkpointId: checkpoint.id, olderThan: opts.olderThan.toISOString(), segments },
        outcome: 'success',
        decision: null,
      }),
    );
    return { checkpointId: checkpoint.id, segments, record };
  });
}
