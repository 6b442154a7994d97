import { createHash, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { type Checkpoint, CheckpointError, openCheckpoint } from './checkpoint-note.js';

/**
 * Witness cosignatures of checkpoints, c2sp.org/tlog-cosignature (Ed25519, `cosignature/v1`): a
 * witness that checked a checkpoint consistent with everything it saw of that log before signs
 *
 *     cosignature/v1\ntime <POSIX seconds>\n<checkpoint body>
 *
 * and the log appends the line `— <witness name> base64(key id || u64 timestamp || signature)` to
 * its signed note. A client that trusts a quorum of witnesses then cannot be shown a fork of the log
 * (two checkpoints no consistency proof joins): no honest witness cosigns both. Pure: no I/O.
 *
 * Hand-written, as checkpoint-note.ts is: no npm package implements C2SP signed notes or
 * cosignatures (the Go packages golang.org/x/mod/sumdb/note and transparency-dev/formats do); the
 * format is a few lines of text and is checked in the tests against the specification's example.
 */

const SIG_PREFIX = '\u2014 ';
/** The signed-note signature type of Ed25519 cosignatures (tlog-cosignature). */
const COSIGNATURE_TYPE = 0x04;

export interface Witness {
  name: string;
  publicKey: KeyObject;
}

function rawEd25519(key: KeyObject): Buffer {
  const der = key.export({ type: 'spki', format: 'der' });
  return der.subarray(der.length - 32);
}

function checkName(name: string): void {
  if (!name || /[\s+\u2014]/.test(name)) throw new Error(`invalid witness name ${JSON.stringify(name)}`);
}

/** SHA-256(name || 0x0A || 0x04 || public key)[:4]. */
export function cosignerKeyId(name: string, publicKey: KeyObject): Buffer {
  return createHash('sha256')
    .update(Buffer.from(name, 'utf8'))
    .update(Buffer.from([0x0a, COSIGNATURE_TYPE]))
    .update(rawEd25519(publicKey))
    .digest()
    .subarray(0, 4);
}

/** The witness's verifier key, `<name>+<hex key id>+<base64(0x04 || key)>` (signed-note vkey). */
export function witnessVerifierKey(w: Witness): string {
  checkName(w.name);
  const id = cosignerKeyId(w.name, w.publicKey).toString('hex');
  return `${w.name}+${id}+${Buffer.concat([Buffer.from([COSIGNATURE_TYPE]), rawEd25519(w.publicKey)]).toString('base64')}`;
}

/** Parses a witness verifier key; throws on anything but a well-formed Ed25519 cosigner key. */
export function parseWitnessVerifierKey(vkey: string): Witness {
  // <name>+<hex id>+<base64 key>: the name has no '+', the base64 key may.
  const text = vkey.trim();
  const a = text.indexOf('+');
  const b = text.indexOf('+', a + 1);
  if (a < 0 || b < 0) throw new Error(`not a verifier key: ${vkey}`);
  const [name, idHex, keyText] = [text.slice(0, a), text.slice(a + 1, b), text.slice(b + 1)];
  checkName(name);
  const raw = Buffer.from(keyText, 'base64');
  if (raw.length !== 33 || raw[0] !== COSIGNATURE_TYPE)
    throw new Error(`${name}: not an Ed25519 cosignature key (type 0x04, 32 bytes)`);
  const publicKey = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: raw.subarray(1).toString('base64url') },
    format: 'jwk',
  });
  if (cosignerKeyId(name, publicKey).toString('hex') !== idHex.toLowerCase())
    throw new Error(`${name}: the key id ${idHex} does not match the key`);
  return { name, publicKey };
}

/** The message a witness signs for checkpoint body `body` at `time` (POSIX seconds). */
export function cosignedMessage(body: string, time: number): Buffer {
  return Buffer.from(`cosignature/v1\ntime ${time}\n${body}`, 'utf8');
}

/** The note body (origin, size, root and any extension lines, with the final newline) of a signed note. */
export function noteBody(note: string): string {
  const at = note.indexOf('\n\n');
  if (at < 0) throw new CheckpointError('not a signed note: no blank line before the signatures');
  return note.slice(0, at + 1);
}

/** The signature line of a cosignature by `name`'s `privateKey` over `note`'s body at `time`. */
export function cosign(name: string, privateKey: KeyObject, note: string, time: number): string {
  checkName(name);
  const ts = Buffer.alloc(8);
  ts.writeBigUInt64BE(BigInt(time));
  const sig = sign(null, cosignedMessage(noteBody(note), time), privateKey);
  const id = cosignerKeyId(name, createPublicKey(privateKey));
  return `${SIG_PREFIX}${name} ${Buffer.concat([id, ts, sig]).toString('base64')}\n`;
}

/** `note` with signature lines `lines` added (each `— …\n`), skipping ones it already holds. */
export function addSignatures(note: string, lines: readonly string[]): string {
  let out = note.endsWith('\n') ? note : `${note}\n`;
  for (const l of lines) {
    const line = l.endsWith('\n') ? l : `${l}\n`;
    if (!line.startsWith(SIG_PREFIX)) throw new CheckpointError('a signature line starts with "— "');
    if (!out.includes(line)) out += line;
  }
  return out;
}

/** The time (POSIX seconds) of `witness`'s valid cosignature in `note`, or undefined if none. */
export function cosignatureTime(note: string, witness: Witness): number | undefined {
  const body = noteBody(note);
  const id = cosignerKeyId(witness.name, witness.publicKey);
  for (const line of note.slice(body.length + 1).split('\n')) {
    if (!line.startsWith(SIG_PREFIX)) continue;
    const [name, blob] = line.slice(SIG_PREFIX.length).split(' ');
    if (name !== witness.name || blob === undefined) continue;
    const raw = Buffer.from(blob, 'base64');
    if (raw.length !== 4 + 8 + 64 || !raw.subarray(0, 4).equals(id)) continue;
    const time = raw.readBigUInt64BE(4);
    if (time > BigInt(Number.MAX_SAFE_INTEGER)) continue;
    if (verify(null, cosignedMessage(body, Number(time)), witness.publicKey, raw.subarray(12)))
      return Number(time);
  }
  return undefined;
}

export interface CosignedCheckpoint extends Checkpoint {
  /** The trusted witnesses whose cosignature verified, with the time each signed. */
  cosigners: { name: string; time: number }[];
  /** Trusted witnesses without a valid cosignature on this note. */
  missing: string[];
}

/**
 * Opens a checkpoint that must be signed by the log (one of `logKeys`) and cosigned by at least
 * `quorum` of `witnesses`. Throws CheckpointError otherwise. Signature lines of unknown keys are
 * ignored, as the signed-note format says.
 */
export function openCosignedCheckpoint(
  note: string,
  logKeys: readonly KeyObject[],
  witnesses: readonly Witness[],
  quorum: number,
): CosignedCheckpoint {
  const checkpoint = openCheckpoint(note, logKeys);
  const cosigners: { name: string; time: number }[] = [];
  const missing: string[] = [];
  for (const w of witnesses) {
    const time = cosignatureTime(note, w);
    if (time === undefined) missing.push(w.name);
    else cosigners.push({ name: w.name, time });
  }
  if (cosigners.length < quorum)
    throw new CheckpointError(
      `the checkpoint of ${checkpoint.origin} at ${checkpoint.size} entries has ${cosigners.length} of the ${quorum} witness cosignatures required` +
        (missing.length > 0 ? ` (none from ${missing.join(', ')})` : ''),
    );
  return { ...checkpoint, cosigners, missing };
}
