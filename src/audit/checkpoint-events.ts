import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';
import { appendEvent } from '../events/append-event.js';
import { PLATFORM_CHAIN } from './audit-hash.js';
import { signCheckpoint } from './checkpoint-note.js';
import type { AuditSigner } from './checkpoint-signer.js';
import { logOrigin } from './log-origin.js';
import { CompactRange } from './merkle.js';

export interface PublishedCheckpoint {
  chain: string;
  origin: string;
  treeSize: number;
  rootHash: string;
  checkpoint: string;
}

/**
 * Publishes the signed C2SP checkpoint of each audit log that has grown since its last one, as the
 * event `audit.checkpoint` in that log's own stream (the tenant's, or the platform's): every webhook
 * subscriber of the tenant and the event bus then hold copies, and a tenant's subscribers see no
 * other tenant's log. The root comes from the compact range the sequencer keeps (audit_trees), so
 * no chain is read. Each log's event and its published mark commit together.
 *
 * `chains` limits it to those logs (the sequencer's batch); `minIntervalMs` skips a log published
 * more recently than that (the scheduled call, without it, publishes what was skipped).
 *
 * Concurrency contract: `for update skip locked` on audit_trees rows — concurrent publishers never
 * sign the same log twice for the same size; a row the sequencer is advancing is skipped this time.
 */
export async function publishCheckpoints(
  db: Db,
  signer: AuditSigner,
  opts: { chains?: string[]; minIntervalMs?: number } = {},
): Promise<PublishedCheckpoint[]> {
  const due = await asPlatform(db, async (trx) => {
    const { rows } = await sql<{ chain: string }>`
      select chain from audit_trees
      where size > published_size
        ${opts.chains ? sql`and chain = any(${opts.chains}::text[])` : sql``}
        ${opts.minIntervalMs ? sql`and (published_at is null or published_at < now() - ${opts.minIntervalMs} * interval '1 millisecond')` : sql``}
      order by chain`.execute(trx);
    return rows.map((r) => r.chain);
  });
  const published: PublishedCheckpoint[] = [];
  // One transaction per log: it holds one event stream's lock at a time, as a change does.
  for (const chain of due) {
    const p = await asPlatform(db, async (trx) => {
      const { rows } = await sql<{ size: string; peaks: string[] }>`
        select size, peaks from audit_trees where chain = ${chain} and size > published_size
        for update skip locked`.execute(trx);
      const r = rows[0];
      if (!r) return undefined;
      const size = Number(r.size);
      const root = new CompactRange(
        size,
        r.peaks.map((h) => Buffer.from(h, 'hex')),
      ).root();
      const origin = logOrigin(chain);
      const data: PublishedCheckpoint = {
        chain,
        origin,
        treeSize: size,
        rootHash: root.toString('hex'),
        checkpoint: signCheckpoint(signer, { origin, size, root }),
      };
      await appendEvent(trx, {
        tenantId: chain === PLATFORM_CHAIN ? null : chain,
        name: 'audit.checkpoint',
        subject: `auditlogs/${chain}`,
        data,
        correlationId: randomUUID(),
      });
      await sql`update audit_trees set published_size = ${size}, published_at = now() where chain = ${chain}`.execute(
        trx,
      );
      return data;
    });
    if (p) published.push(p);
  }
  return published;
}
