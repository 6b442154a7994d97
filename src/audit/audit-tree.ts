import { sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors/errors.js';
import { loadLeafRows } from './audit.repository.js';
import { signCheckpoint } from './checkpoint-note.js';
import type { AuditSigner } from './checkpoint-signer.js';
import { logOrigin } from './log-origin.js';
import { consistencyProof, type Hash, inclusionProof, leafHash, rootOf } from './merkle.js';

/** The leaf hashes of a chain in seq order, pruned ones included (platform scope; the caller checked who may read it). */
export async function loadLeaves(db: Db, chain: string): Promise<Hash[]> {
  const rows = await asPlatform(db, (trx) => loadLeafRows(trx, chain));
  const leaves: Hash[] = [];
  for (const [i, r] of rows.entries()) {
    if (r.seq !== i + 1)
      throw new ConflictError(
        'audit.tree_incomplete',
        `Chain ${chain} has no record at seq ${i + 1} (deleted by a retention run before pruned leaves were kept, or missing): its tree cannot be recomputed. Run audit verify.`,
      );
    leaves.push(leafHash(Buffer.from(r.hash, 'hex')));
  }
  return leaves;
}

export interface SignedTreeHead {
  chain: string;
  origin: string;
  size: number;
  rootHash: string;
  /** The C2SP signed note: keep it, and later prove the log consistent with it. */
  checkpoint: string;
}

function treeHead(signer: AuditSigner, chain: string, leaves: readonly Hash[], size: number): SignedTreeHead {
  const root = rootOf(leaves.slice(0, size));
  const origin = logOrigin(chain);
  return {
    chain,
    origin,
    size,
    rootHash: root.toString('hex'),
    checkpoint: signCheckpoint(signer, { origin, size, root }),
  };
}

/** The signed checkpoint of a chain's log as it is now. */
export async function chainCheckpoint(db: Db, signer: AuditSigner, chain: string): Promise<SignedTreeHead> {
  const leaves = await loadLeaves(db, chain);
  return treeHead(signer, chain, leaves, leaves.length);
}

export interface InclusionProof {
  recordId: string;
  chain: string;
  leafIndex: number;
  treeSize: number;
  /** SHA-256(0x00 || record hash bytes), hex. */
  leafHash: string;
  /** RFC 9162 inclusion path, hex, leaf to root. */
  proof: string[];
  checkpoint: SignedTreeHead;
}

/** Where a record is (its chain, and its seq), or NotFound. Platform scope; the caller authorises. */
export async function locateRecord(db: Db, recordId: string): Promise<{ chain: string; seq: number }> {
  if (!isUuid(recordId))
    throw new NotFoundError('audit.record_not_found', `Audit record ${recordId} does not exist.`);
  const { rows } = await asPlatform(db, (trx) =>
    sql<{
      chain: string;
      seq: string | null;
    }>`select coalesce(p.chain, a.chain) as chain, p.seq from audit_records a
      left join audit_positions p on p.record_id = a.id where a.id = ${recordId}`.execute(trx),
  );
  if (!rows[0]) throw new NotFoundError('audit.record_not_found', `Audit record ${recordId} does not exist.`);
  if (rows[0].seq === null)
    throw new ConflictError(
      'audit.record_unsequenced',
      `Audit record ${recordId} is not in its log yet: the sequencer integrates it within a second. Retry.`,
    );
  return { chain: rows[0].chain, seq: Number(rows[0].seq) };
}

export async function recordInclusion(
  db: Db,
  signer: AuditSigner,
  recordId: string,
  at: { chain: string; seq: number },
): Promise<InclusionProof> {
  const leaves = await loadLeaves(db, at.chain);
  const index = at.seq - 1;
  return {
    recordId,
    chain: at.chain,
    leafIndex: index,
    treeSize: leaves.length,
    leafHash: leaves[index]!.toString('hex'),
    proof: inclusionProof(leaves, index).map((h) => h.toString('hex')),
    checkpoint: treeHead(signer, at.chain, leaves, leaves.length),
  };
}

export interface ConsistencyProof {
  chain: string;
  from: number;
  to: number;
  /** RFC 9162 consistency proof, hex. */
  proof: string[];
  /** The signed checkpoint of size `to`. */
  checkpoint: SignedTreeHead;
}

/** Proves the chain's log of size `from` a prefix of its log of size `to` (default: now). */
export async function chainConsistency(
  db: Db,
  signer: AuditSigner,
  chain: string,
  from: number,
  to?: number,
): Promise<ConsistencyProof> {
  const leaves = await loadLeaves(db, chain);
  const size = to ?? leaves.length;
  if (size > leaves.length)
    throw ValidationError.field(
      '/to',
      'audit.tree_size',
      `The log of ${chain} has ${leaves.length} entries, not ${size}.`,
    );
  if (from > size)
    throw ValidationError.field('/from', 'audit.tree_size', `from (${from}) is larger than to (${size}).`);
  return {
    chain,
    from,
    to: size,
    proof: consistencyProof(leaves, from, size).map((h) => h.toString('hex')),
    checkpoint: treeHead(signer, chain, leaves, size),
  };
}
