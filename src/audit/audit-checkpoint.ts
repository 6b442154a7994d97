import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { canonicalJson } from '../domain/diff.js';
import { type PublishedCheckpoint, publishCheckpoints } from './checkpoint-events.js';
import type { AuditSigner } from './checkpoint-signer.js';

export interface ChainHead {
  seq: number;
  hash: string;
}

/** A signed snapshot of every chain's head. */
export interface AuditCheckpoint {
  id: string;
  time: string;
  keyId: string;
  heads: Record<string, ChainHead>;
  signature: string;
}

/** The bytes a checkpoint's signature covers (format v1). */
export function checkpointPayload(c: Omit<AuditCheckpoint, 'signature'>): string {
  return canonicalJson({
    v: 1,
    type: 'tenantry.audit.checkpoint',
    id: c.id,
    time: c.time,
    keyId: c.keyId,
    heads: c.heads,
  });
}

interface CheckpointRow {
  id: string;
  time: string;
  key_id: string;
  heads: Record<string, { seq: number | string; hash: string }>;
  signature: string;
}

export function checkpointFromRow(r: CheckpointRow): AuditCheckpoint {
  const heads: Record<string, ChainHead> = {};
  for (const [chain, h] of Object.entries(r.heads ?? {})) heads[chain] = { seq: Number(h.seq), hash: h.hash };
  return { id: r.id, time: r.time, keyId: r.key_id, heads, signature: r.signature };
}

/**
 * Signs the current head of every chain. One snapshot: a head is visible only once the records up
 * to it have committed, so every record a checkpoint covers exists when it is taken.
 */
export async function createAuditCheckpoint(db: Db, signer: AuditSigner): Promise<AuditCheckpoint> {
  return asPlatform(db, async (trx) => {
    const { rows } = await sql<{ time: string; heads: CheckpointRow['heads'] }>`
      select tenantry_audit_time(clock_timestamp()) as time,
             coalesce(jsonb_object_agg(chain, jsonb_build_object('seq', seq, 'hash', hash)), '{}'::jsonb) as heads
      from audit_chain_heads`.execute(trx);
    const row = rows[0]!;
    const unsigned = checkpointFromRow({
      id: randomUUID(),
      time: row.time,
      key_id: signer.keyId,
      heads: row.heads,
      signature: '',
    });
    const checkpoint = { ...unsigned, signature: signer.sign(checkpointPayload(unsigned)) };
    await sql`insert into audit_checkpoints (id, time, heads, signature, key_id)
      values (${checkpoint.id}, ${checkpoint.time}::timestamptz, ${JSON.stringify(checkpoint.heads)}::jsonb,
              ${checkpoint.signature}, ${checkpoint.keyId})`.execute(trx);
    return checkpoint;
  });
}

export async function loadCheckpoints(trx: Trx): Promise<AuditCheckpoint[]> {
  const { rows } = await sql<CheckpointRow>`
    select id, tenantry_audit_time(time) as time, key_id, heads, signature
    from audit_checkpoints order by time, id`.execute(trx);
  return rows.map(checkpointFromRow);
}

/**
 * Takes a checkpoint every `intervalMs` while any chain has moved since the last one, and publishes
 * the C2SP checkpoint event of every log that grew since its last event (those the
 * CheckpointPublisher of the process that sequenced them did not publish: it stopped, or crashed), handing each to `onPublished` as it is made (e.g. to send it to
 * the witnesses: WitnessSubmitter). Long-running: start() and stop().
 */
export class AuditCheckpointer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();
  private lastHeads = '';

  constructor(
    private readonly db: Db,
    private readonly signer: AuditSigner,
    private readonly intervalMs = 60_000,
    private readonly onError: (err: unknown) => void = () => undefined,
    private readonly onPublished: (published: PublishedCheckpoint[]) => void = () => undefined,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.running = this.tick().catch(this.onError);
    }, this.intervalMs);
    this.timer.unref();
  }

  async tick(): Promise<AuditCheckpoint | undefined> {
    const published = await publishCheckpoints(this.db, this.signer);
    if (published.length > 0) this.onPublished(published);
    const heads = await asPlatform(this.db, async (trx) => {
      const { rows } = await sql<{ h: string }>`
        select coalesce(string_agg(chain || ':' || seq, ',' order by chain), '') as h from audit_chain_heads`.execute(
        trx,
      );
      return rows[0]?.h ?? '';
    });
    if (heads === this.lastHeads) return undefined;
    const checkpoint = await createAuditCheckpoint(this.db, this.signer);
    this.lastHeads = heads;
    return checkpoint;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
