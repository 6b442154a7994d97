import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

/** Ed25519 signer of audit checkpoints. */
export class AuditSigner {
  readonly publicKey: KeyObject;
  readonly keyId: string;

  constructor(private readonly privateKey: KeyObject) {
    if (privateKey.asymmetricKeyType !== 'ed25519')
      throw new Error(`The audit signing key must be Ed25519, not ${privateKey.asymmetricKeyType}.`);
    this.publicKey = createPublicKey(privateKey);
    this.keyId = keyIdOf(this.publicKey);
  }

  /** SPKI PEM: give this to whoever verifies an export offline. */
  get publicKeyPem(): string {
    return this.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  }

  /** Base64url Ed25519 signature over the UTF-8 bytes of `payload`. */
  sign(payload: string): string {
    return sign(null, Buffer.from(payload, 'utf8'), this.privateKey).toString('base64url');
  }
}

/** A key's id: the first 16 hex digits of sha256 over its SPKI DER encoding. */
export function keyIdOf(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex').slice(0, 16);
}

/** Trusted verification keys by key id, from PEM text (public or private) or key objects. */
export type TrustedKeys = Map<string, KeyObject>;

export function trustedKeys(keys: ReadonlyArray<KeyObject | string>): TrustedKeys {
  const out: TrustedKeys = new Map();
  for (const k of keys) {
    const key = typeof k === 'string' ? createPublicKey(k) : k.type === 'private' ? createPublicKey(k) : k;
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('Audit verification keys must be Ed25519.');
    out.set(keyIdOf(key), key);
  }
  return out;
}

export function verifySignature(key: KeyObject, payload: string, signature: string): boolean {
  try {
    return verify(null, Buffer.from(payload, 'utf8'), key, Buffer.from(signature, 'base64url'));
  } catch {
    return false;
  }
}

export const defaultSigningKeyFile = (dataDir: string): string =>
  path.join(dataDir, 'audit', 'checkpoint-signing-key.pem');

/**
 * Loads the Ed25519 private key (PKCS#8 PEM) from `keyFile`. Without one (the embedded default),
 * uses `<dataDir>/audit/checkpoint-signing-key.pem`, generating it on first start (mode 0600) and
 * keeping it; two processes starting at once agree on one key (exclusive create).
 */
export async function loadAuditSigner(opts: { keyFile?: string; dataDir: string }): Promise<AuditSigner> {
  if (opts.keyFile) return new AuditSigner(createPrivateKey(await fs.readFile(opts.keyFile, 'utf8')));
  const file = defaultSigningKeyFile(opts.dataDir);
  try {
    return new AuditSigner(createPrivateKey(await fs.readFile(file, 'utf8')));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  try {
    await fs.writeFile(file, pem, { mode: 0o600, flag: 'wx' });
    return new AuditSigner(privateKey);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return new AuditSigner(createPrivateKey(await fs.readFile(file, 'utf8')));
  }
}
