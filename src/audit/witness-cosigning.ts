import { sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';
import { chainConsistency } from './audit-tree.js';
import type { PublishedCheckpoint } from './checkpoint-events.js';
import { openCheckpoint, signCheckpoint } from './checkpoint-note.js';
import type { AuditSigner } from './checkpoint-signer.js';
import { addSignatures, cosignatureTime, parseWitnessVerifierKey, type Witness } from './cosignature.js';
import { logOrigin } from './log-origin.js';

/** A witness the log submits its checkpoints to: its verifier key and its submission URL prefix. */
export interface WitnessEndpoint {
  witness: Witness;
  url: string;
}

/** Parses `<verifier key> <url>` (TENANTRY_AUDIT_WITNESSES, one per comma). */
export function parseWitnessEndpoint(text: string): WitnessEndpoint {
  const [vkey, url] = text.trim().split(/\s+/);
  if (!vkey || !url) throw new Error(`a witness is "<verifier key> <url>", not "${text}"`);
  return { witness: parseWitnessVerifierKey(vkey), url: url.replace(/\/+$/, '') };
}

export type WitnessOutcome =
  | { witness: string; status: 'cosigned'; size: number }
  | { witness: string; status: 'refused'; size: number; httpStatus: number; message: string }
  | { witness: string; status: 'unreachable'; size: number; message: string };

/**
 * Asks each witness to cosign the log's checkpoint of `chain` at its current published size: sends
 * the consistency proof from the size that witness last cosigned (tlog-witness `add-checkpoint`; on
 * 409 it retries once from the size the witness names), checks the cosignature it returns against
 * the witness's key and keeps it (audit_cosignatures). A witness that refuses (the log was forked or
 * rewritten since it last cosigned, 422/409) or cannot be reached is reported, never retried here:
 * the next checkpoint asks again.
 */
export async function cosignCheckpoint(
  db: Db,
  signer: AuditSigner,
  published: Pick<PublishedCheckpoint, 'chain' | 'checkpoint'>,
  witnesses: readonly WitnessEndpoint[],
  fetchImpl: typeof fetch = fetch,
): Promise<WitnessOutcome[]> {
  const cp = openCheckpoint(published.checkpoint, [signer.publicKey]);
  const out: WitnessOutcome[] = [];
  for (const { witness, url } of witnesses) {
    let old = await lastCosignedSize(db, published.chain, witness.name);
    try {
      for (let attempt = 0; ; attempt++) {
        if (old > cp.size) {
          out.push({
            witness: witness.name,
            status: 'refused',
            size: cp.size,
            httpStatus: 409,
            message: `the witness has cosigned ${old} entries, more than this checkpoint's ${cp.size}`,
          });
          break;
        }
        const proof =
          old === 0 || old === cp.size
            ? []
            : (await chainConsistency(db, signer, published.chain, old, cp.size)).proof.map((h) =>
                Buffer.from(h, 'hex').toString('base64'),
              );
        const body = `old ${old}\n${proof.map((p) => `${p}\n`).join('')}\n${published.checkpoint}`;
        const res = await fetchImpl(`${url}/add-checkpoint`, {
          method: 'POST',
          body,
          signal: AbortSignal.timeout(10_000),
        });
        const text = await res.text();
        if (
          res.status === 409 &&
          res.headers.get('content-type')?.startsWith('text/x.tlog.size') &&
          attempt === 0
        ) {
          const size = Number(text.trim());
          if (Number.isSafeInteger(size) && size >= 0 && size !== old) {
            old = size;
            continue;
          }
        }
        if (res.status !== 200) {
          out.push({
            witness: witness.name,
            status: 'refused',
            size: cp.size,
            httpStatus: res.status,
            message: text.trim(),
          });
          break;
        }
        const line = text.split('\n').find((l) => {
          const note = addSignatures(published.checkpoint, [l]);
          return l.startsWith('\u2014 ') && cosignatureTime(note, witness) !== undefined;
        });
        if (!line) {
          out.push({
            witness: witness.name,
            status: 'refused',
            size: cp.size,
            httpStatus: 200,
            message: 'the witness answered without a valid cosignature of its key',
          });
          break;
        }
        await asPlatform(db, (trx) =>
          sql`insert into audit_cosignatures (chain, size, root_hash, witness, cosignature)
              values (${published.chain}, ${cp.size}, ${cp.root.toString('hex')}, ${witness.name}, ${line})
              on conflict do nothing`.execute(trx),
        );
        out.push({ witness: witness.name, status: 'cosigned', size: cp.size });
        break;
      }
    } catch (err) {
      out.push({
        witness: witness.name,
        status: 'unreachable',
        size: cp.size,
        message: err instanceof Error ? err.message : String(err),
      });
    }
  }
  return out;
}

/**
 * Sends checkpoints to the witnesses as they are made, off the caller's path: the sequencer (each
 * batch's checkpoints) and the checkpointer (the periodic ones) hand what they published to
 * submit() and go on; one submission at a time runs in the background, with the newest checkpoint
 * of each log (an older one still waiting is superseded: a witness cosigns the latest size).
 * Long-running: idle() waits until everything handed over was submitted.
 */
export class WitnessSubmitter {
  private readonly waiting = new Map<
    string,
    Pick<PublishedCheckpoint, 'chain' | 'checkpoint' | 'treeSize'>
  >();
  private running: Promise<void> | undefined;

  constructor(
    private readonly db: Db,
    private readonly signer: AuditSigner,
    private readonly witnesses: readonly WitnessEndpoint[],
    private readonly onOutcome: (chain: string, outcome: WitnessOutcome) => void = () => undefined,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  submit(published: readonly Pick<PublishedCheckpoint, 'chain' | 'checkpoint' | 'treeSize'>[]): void {
    if (this.witnesses.length === 0) return;
    for (const p of published) {
      const queued = this.waiting.get(p.chain);
      if (!queued || queued.treeSize < p.treeSize) this.waiting.set(p.chain, p);
    }
    this.drain();
  }

  private drain(): void {
    if (this.running || this.waiting.size === 0) return;
    this.running = (async () => {
      for (const [chain, p] of this.waiting) {
        this.waiting.delete(chain);
        try {
          for (const o of await cosignCheckpoint(this.db, this.signer, p, this.witnesses, this.fetchImpl))
            this.onOutcome(chain, o);
        } catch (err) {
          // The database failed (the witnesses' own failures are outcomes): the next checkpoint asks again.
          const message = err instanceof Error ? err.message : String(err);
          for (const { witness } of this.witnesses)
            this.onOutcome(chain, {
              witness: witness.name,
              status: 'unreachable',
              size: p.treeSize,
              message,
            });
        }
      }
    })().finally(() => {
      this.running = undefined;
      this.drain();
    });
  }

  /** Resolves once every checkpoint handed over so far has been submitted. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }
}

async function lastCosignedSize(db: Db, chain: string, witness: string): Promise<number> {
  const { rows } = await asPlatform(db, (trx) =>
    sql<{ size: string | null }>`select max(size) as size from audit_cosignatures
      where chain = ${chain} and witness = ${witness}`.execute(trx),
  );
  return Number(rows[0]?.size ?? 0);
}

export interface CosignedTreeHead {
  chain: string;
  size: number;
  rootHash: string;
  /** The log's signed note with every witness cosignature kept for that size. */
  checkpoint: string;
  witnesses: string[];
}

/**
 * The largest checkpoint of `chain` that has witness cosignatures, as a signed note carrying them
 * (re-signed by the log: Ed25519 is deterministic, so it is the note the witnesses cosigned), or
 * undefined when no witness has cosigned this log yet.
 */
export async function cosignedCheckpoint(
  db: Db,
  signer: AuditSigner,
  chain: string,
): Promise<CosignedTreeHead | undefined> {
  const { rows } = await asPlatform(db, (trx) =>
    sql<{ size: string; root_hash: string; witness: string; cosignature: string }>`
      select size, root_hash, witness, cosignature from audit_cosignatures
      where chain = ${chain} and size = (select max(size) from audit_cosignatures where chain = ${chain})
      order by witness`.execute(trx),
  );
  const first = rows[0];
  if (!first) return undefined;
  const size = Number(first.size);
  // A witness cosigns one root per size; two roots at one size would be the fork it exists to catch.
  const same = rows.filter((r) => r.root_hash === first.root_hash);
  const note = addSignatures(
    signCheckpoint(signer, { origin: logOrigin(chain), size, root: Buffer.from(first.root_hash, 'hex') }),
    same.map((r) => r.cosignature),
  );
  openCheckpoint(note, [signer.publicKey]);
  return { chain, size, rootHash: first.root_hash, checkpoint: note, witnesses: same.map((r) => r.witness) };
}
