import type { KeyObject } from 'node:crypto';
import { type Checkpoint, CheckpointError, openCheckpoint } from './checkpoint-note.js';
import { chainOfOrigin } from './log-origin.js';
import { verifyConsistency } from './merkle.js';

export interface WitnessCheck {
  ok: boolean;
  chain: string | null;
  saved: { size: number; rootHash: string } | null;
  current: { size: number; rootHash: string } | null;
  message: string;
}

/**
 * What a witness does with a checkpoint it saved earlier: asks the log for a consistency proof from
 * that size to now, and checks it (and the new checkpoint's signature) itself. Fails when the log
 * was rewritten, truncated, reordered or had records removed before the saved size — whatever the
 * server's own checkpoints say. Pure apart from `fetchProof`.
 */
export async function checkAgainstSavedCheckpoint(
  savedNote: string,
  keys: readonly KeyObject[],
  fetchProof: (
    chain: string,
    from: number,
  ) => Promise<{ proof: string[]; checkpoint: { checkpoint: string } }>,
): Promise<WitnessCheck> {
  let saved: Checkpoint;
  try {
    saved = openCheckpoint(savedNote, keys);
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
    return {
      ok: false,
      chain: null,
      saved: null,
      current: null,
      message: `saved checkpoint: ${err.message}`,
    };
  }
  const chain = chainOfOrigin(saved.origin) ?? null;
  const savedView = { size: saved.size, rootHash: saved.root.toString('hex') };
  if (chain === null)
    return {
      ok: false,
      chain,
      saved: savedView,
      current: null,
      message: `not a Tenantry audit log: ${saved.origin}`,
    };
  let answer: Awaited<ReturnType<typeof fetchProof>>;
  try {
    answer = await fetchProof(chain, saved.size);
  } catch (err) {
    // E.g. a log now shorter than the saved size (truncated), or no longer recomputable.
    const why = err instanceof Error ? err.message : String(err);
    return {
      ok: false,
      chain,
      saved: savedView,
      current: null,
      message: `the log of ${chain} gives no consistency proof from the saved checkpoint of ${saved.size} entries (truncated or damaged): ${why}`,
    };
  }
  let current: Checkpoint;
  try {
    current = openCheckpoint(answer.checkpoint.checkpoint, keys);
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
    return {
      ok: false,
      chain,
      saved: savedView,
      current: null,
      message: `current checkpoint: ${err.message}`,
    };
  }
  const currentView = { size: current.size, rootHash: current.root.toString('hex') };
  if (current.origin !== saved.origin)
    return {
      ok: false,
      chain,
      saved: savedView,
      current: currentView,
      message: 'the log answered for another origin',
    };
  if (current.size < saved.size)
    return {
      ok: false,
      chain,
      saved: savedView,
      current: currentView,
      message: `the log of ${chain} has ${current.size} entries, fewer than the ${saved.size} of the saved checkpoint (truncated)`,
    };
  const proof = answer.proof.map((h) => Buffer.from(h, 'hex'));
  const ok = verifyConsistency(saved.size, current.size, proof, saved.root, current.root);
  return {
    ok,
    chain,
    saved: savedView,
    current: currentView,
    message: ok
      ? `the log of ${chain} at ${current.size} entries extends the saved checkpoint of ${saved.size} entries`
      : `the log of ${chain} is NOT consistent with the saved checkpoint of ${saved.size} entries: records up to it were changed, removed or reordered`,
  };
}
