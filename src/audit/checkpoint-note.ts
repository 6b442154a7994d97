import { createHash, type KeyObject, verify } from 'node:crypto';
import type { AuditSigner } from './checkpoint-signer.js';

/**
 * Log checkpoints in the C2SP formats: the checkpoint body (c2sp.org/tlog-checkpoint: origin,
 * decimal tree size, base64 root hash, one per line) wrapped in a signed note
 * (c2sp.org/signed-note: a blank line, then `— <key name> <base64(key id || signature)>`), signed
 * with Ed25519. A witness stores the whole text and later asks for a consistency proof from it.
 * Pure: no I/O.
 */

export interface Checkpoint {
  origin: string;
  size: number;
  /** SHA-256 root hash of the tree of `size` leaves (RFC 9162). */
  root: Buffer;
}

const SIG_PREFIX = '\u2014 ';

/** The raw 32-byte Ed25519 public key (the tail of its SPKI DER encoding). */
/** Raw public keys by key: exporting one costs more than the signature (every checkpoint signs). */
const raws = new WeakMap<KeyObject, Buffer>();

function rawEd25519(key: KeyObject): Buffer {
  let raw = raws.get(key);
  if (!raw) {
    const der = key.export({ type: 'spki', format: 'der' });
    raw = der.subarray(der.length - 32);
    raws.set(key, raw);
  }
  return raw;
}

/** The signed-note key id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key). */
export function noteKeyId(name: string, publicKey: KeyObject): Buffer {
  return createHash('sha256')
    .update(Buffer.from(name, 'utf8'))
    .update(Buffer.from([0x0a, 0x01]))
    .update(rawEd25519(publicKey))
    .digest()
    .subarray(0, 4);
}

/** A verifier key in the signed-note text form `<name>+<hex key id>+<base64(0x01 || key)>`. */
export function noteVerifierKey(name: string, publicKey: KeyObject): string {
  const id = noteKeyId(name, publicKey).toString('hex');
  return `${name}+${id}+${Buffer.concat([Buffer.from([1]), rawEd25519(publicKey)]).toString('base64')}`;
}

export function checkpointBody(c: Checkpoint): string {
  if (!c.origin || /[\n\u2014]/.test(c.origin) || c.origin.includes('+'))
    throw new Error(`invalid checkpoint origin ${JSON.stringify(c.origin)}`);
  return `${c.origin}\n${c.size}\n${c.root.toString('base64')}\n`;
}

/** The signed note of checkpoint `c`; the key name is the origin, as C2SP logs do. */
export function signCheckpoint(signer: AuditSigner, c: Checkpoint): string {
  const body = checkpointBody(c);
  const sig = Buffer.from(signer.sign(body), 'base64url');
  const blob = Buffer.concat([noteKeyId(c.origin, signer.publicKey), sig]).toString('base64');
  return `${body}\n${SIG_PREFIX}${c.origin} ${blob}\n`;
}

export class CheckpointError extends Error {}

/**
 * Parses a signed checkpoint note and checks its signature by one of `publicKeys` under the key
 * name of its origin. Throws CheckpointError when the text is malformed or no trusted key signed it.
 */
export function openCheckpoint(note: string, publicKeys: readonly KeyObject[]): Checkpoint {
  const at = note.indexOf('\n\n');
  if (at < 0) throw new CheckpointError('not a signed note: no blank line before the signatures');
  const body = note.slice(0, at + 1);
  const lines = body.slice(0, -1).split('\n');
  if (lines.length < 3) throw new CheckpointError('a checkpoint has an origin, a size and a root hash');
  const [origin, sizeText, rootText] = lines as [string, string, string];
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText)) throw new CheckpointError(`invalid tree size "${sizeText}"`);
  const root = Buffer.from(rootText, 'base64');
  if (root.length !== 32 || root.toString('base64') !== rootText)
    throw new CheckpointError('the root hash is not 32 bytes of base64');
  const sigLines = note
    .slice(at + 2)
    .split('\n')
    .filter((l) => l !== '');
  for (const line of sigLines) {
    if (!line.startsWith(SIG_PREFIX)) throw new CheckpointError('malformed signature line');
    const [name, blob] = line.slice(SIG_PREFIX.length).split(' ');
    if (name !== origin || blob === undefined) continue;
    const raw = Buffer.from(blob, 'base64');
    if (raw.length !== 68) continue;
    for (const key of publicKeys) {
      if (!noteKeyId(name, key).equals(raw.subarray(0, 4))) continue;
      if (verify(null, Buffer.from(body, 'utf8'), key, raw.subarray(4)))
        return { origin, size: Number(sizeText), root };
    }
  }
  throw new CheckpointError(`no trusted key signed this checkpoint of ${origin}`);
}
