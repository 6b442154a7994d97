import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';
import { appendEvent } from '../events/append-event.js';
import { PLATFORM_CHAIN } from './audit-hash.js';
import { logOrigin } from './audit-tree.js';
import { signCheckpoint } from './checkpoint-note.js';
import type { AuditSigner } from './checkpoint-signer.js';
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
 * no chain is read. One transaction: the events and the published marks commit together.
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
  return asPlatform(db, async (trx) => {
    const { rows } = await sql<{ chain: string; size: string; peaks: string[] }>`
      select chain, size, peaks from audit_trees
      where size > published_size
        ${opts.chains ? sql`and chain = any(${opts.chains}::text[])` : sql``}
        ${opts.minIntervalMs ? sql`and (published_at is null or published_at < now() - ${opts.minIntervalMs} * interval '1 millisecond')` : sql``}
      order by chain
      for update skip locked`.execute(trx);
    const published: PublishedCheckpoint[] = [];
    for (const r of rows) {
      const size = Number(r.size);
      const root = new CompactRange(
        size,
        r.peaks.map((p) => Buffer.from(p, 'hex')),
      ).root();
      const origin = logOrigin(r.chain);
      const data: PublishedCheckpoint = {
        chain: r.chain,
        origin,
        treeSize: size,
        rootHash: root.toString('hex'),
        checkpoint: signCheckpoint(signer, { origin, size, root }),
      };
      await appendEvent(trx, {
        tenantId: r.chain === PLATFORM_CHAIN ? null : r.chain,
        name: 'audit.checkpoint',
        subject: `auditlogs/${r.chain}`,
        data,
        correlationId: randomUUID(),
      });
      published.push(data);
    }
    if (published.length > 0)
      await sql`update audit_trees t set published_size = u.size, published_at = now()
        from unnest(${published.map((p) => p.chain)}::text[], ${published.map((p) => p.treeSize)}::bigint[]) as u(chain, size)
        where t.chain = u.chain`.execute(trx);
    return published;
  });
}
