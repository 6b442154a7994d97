import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { KeyProvider } from './key-provider.js';

/**
 * The key file: every KEK by id (32 random bytes, base64) and which one is current. Rotation adds
 * a key and makes it current; the earlier ones stay until no data key is wrapped by them any more
 * (`tenantry secrets rotate-key` re-wraps them, then `--retire` removes the unused ones).
 */
interface KeyFile {
  current: string;
  keys: Record<string, string>;
}

const IV = 12;
const TAG = 16;

const newKeyId = (): string =>
  `kek-${new Date().toISOString().replace(/[-:]|\.\d+/g, '')}-${randomBytes(3).toString('hex')}`;

function parse(text: string, file: string): KeyFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error(`the secrets key file ${file} is not JSON`);
  }
  const d = doc as Partial<KeyFile>;
  const current = d?.keys && typeof d.current === 'string' ? d.keys[d.current] : undefined;
  if (typeof current !== 'string' || Buffer.from(current, 'base64').length !== 32)
    throw new Error(`the secrets key file ${file} has no current 256-bit key`);
  return d as KeyFile;
}

/**
 * KEKs in a local file (TENANTRY_SECRETS_KEY_FILE; the embedded default generates it in the data
 * folder, mode 0600). Wrapping is AES-256-GCM with the context as associated data: a wrapped data
 * key copied to another tenant's row does not unwrap.
 */
export class LocalFileKeyProvider implements KeyProvider {
  private loaded: Promise<KeyFile> | undefined;

  constructor(readonly file: string) {}

  private load(): Promise<KeyFile> {
    this.loaded ??= this.readOrCreate().catch((err) => {
      this.loaded = undefined;
      throw err;
    });
    return this.loaded;
  }

  private async readOrCreate(): Promise<KeyFile> {
    try {
      return parse(await fs.readFile(this.file, 'utf8'), this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const id = newKeyId();
    const doc: KeyFile = { current: id, keys: { [id]: randomBytes(32).toString('base64') } };
    await fs.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    try {
      // `wx`: two processes starting at once both end up with the one file that was written first.
      await fs.writeFile(this.file, `${JSON.stringify(doc, null, 2)}\n`, { flag: 'wx', mode: 0o600 });
      return doc;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      return parse(await fs.readFile(this.file, 'utf8'), this.file);
    }
  }

  private async key(id: string): Promise<Buffer> {
    let doc = await this.load();
    if (!doc.keys[id]) {
      // Another process may have rotated: read the file again once.
      this.loaded = undefined;
      doc = await this.load();
    }
    const key = doc.keys[id];
    if (!key) throw new Error(`the key encryption key ${id} is not in ${this.file}`);
    return Buffer.from(key, 'base64');
  }

  async currentKeyId(): Promise<string> {
    return (await this.load()).current;
  }

  async wrap(dek: Buffer, context: string): Promise<{ keyId: string; wrapped: Buffer }> {
    // Wrapping is rare (a tenant's first secret, a rotation): read the file again, so a KEK made
    // current by a rotation in another process wraps from now on.
    this.loaded = undefined;
    const keyId = await this.currentKeyId();
    const iv = randomBytes(IV);
    const cipher = createCipheriv('aes-256-gcm', await this.key(keyId), iv);
    cipher.setAAD(Buffer.from(context));
    const ct = Buffer.concat([cipher.update(dek), cipher.final()]);
    return { keyId, wrapped: Buffer.concat([iv, cipher.getAuthTag(), ct]) };
  }

  async unwrap(keyId: string, wrapped: Buffer, context: string): Promise<Buffer> {
    const decipher = createDecipheriv('aes-256-gcm', await this.key(keyId), wrapped.subarray(0, IV));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(wrapped.subarray(IV, IV + TAG));
    return Buffer.concat([decipher.update(wrapped.subarray(IV + TAG)), decipher.final()]);
  }

  /** Adds a new KEK and makes it current (earlier ones stay for unwrapping). Returns its id. */
  async rotate(): Promise<string> {
    const doc = parse(await fs.readFile(this.file, 'utf8'), this.file);
    const id = newKeyId();
    await this.write({ current: id, keys: { ...doc.keys, [id]: randomBytes(32).toString('base64') } });
    return id;
  }

  /** Removes every KEK but the current one and those in `inUse`. Returns the removed ids. */
  async retire(inUse: ReadonlySet<string>): Promise<string[]> {
    const doc = parse(await fs.readFile(this.file, 'utf8'), this.file);
    const removed = Object.keys(doc.keys).filter((id) => id !== doc.current && !inUse.has(id));
    const keys = Object.fromEntries(Object.entries(doc.keys).filter(([id]) => !removed.includes(id)));
    await this.write({ current: doc.current, keys });
    return removed;
  }

  /** Replaces the file atomically (write beside it, 0600, then rename). */
  private async write(doc: KeyFile): Promise<void> {
    const tmp = `${this.file}.${process.pid}.tmp`;
    await fs.writeFile(tmp, `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o600 });
    await fs.rename(tmp, this.file);
    this.loaded = undefined;
  }
}
