import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import {
  currentDataKey,
  type DataKeyRow,
  dataKeyById,
  type Executor,
  insertDataKey,
  wrapContext,
} from './data-keys.js';
import type { KeyProvider } from './key-provider.js';

/**
 * What a ciphertext belongs to: its tenant (null: a platform-wide secret) and its row (e.g.
 * `resource_secrets/<resource uuid>`). Both are the GCM associated data, so a ciphertext copied to
 * another row or another tenant fails to decrypt.
 */
export interface SecretBinding {
  tenantId: string | null;
  row: string;
}

/** Runs work where `data_keys` is readable: the platform scope, or the owner in a migration. */
export type DataKeyAccess = <T>(work: (db: Executor) => Promise<T>) => Promise<T>;

const PREFIX = 'tenc1';
const IV = 12;
const TAG = 16;

const aad = (b: SecretBinding): Buffer => Buffer.from(`tenantry-secret|${b.tenantId ?? 'platform'}|${b.row}`);

/** Whether a stored value is a ciphertext of SecretCipher (`tenc1.<data key id>.<base64url>`). */
export const isSealed = (value: unknown): value is string =>
  typeof value === 'string' && value.startsWith(`${PREFIX}.`);

/**
 * Envelope encryption of stored secrets (node:crypto, AES-256-GCM): each tenant has its own data key
 * (DEK, `data_keys`), itself stored wrapped by the key-encryption key of a KeyProvider. Unwrapped
 * DEKs are kept in memory; a KEK rotation re-wraps them without changing them, so every
 * ciphertext stays readable and no process needs to restart (rotate-kek.ts).
 */
export class SecretCipher {
  private readonly deks = new Map<string, { tenantId: string | null; key: Buffer }>();
  private readonly currentByTenant = new Map<string, string>();

  constructor(
    readonly keys: KeyProvider,
    private readonly access: DataKeyAccess,
  ) {}

  async seal(plaintext: string, binding: SecretBinding): Promise<string> {
    const dek = await this.currentDek(binding.tenantId);
    const iv = randomBytes(IV);
    const cipher = createCipheriv('aes-256-gcm', dek.key, iv);
    cipher.setAAD(aad(binding));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `${PREFIX}.${dek.id}.${Buffer.concat([iv, cipher.getAuthTag(), ct]).toString('base64url')}`;
  }

  /** Decrypts; throws when the ciphertext was altered or belongs to another tenant or row. */
  async open(sealed: string, binding: SecretBinding): Promise<string> {
    const [prefix, dekId, body] = sealed.split('.');
    if (prefix !== PREFIX || !dekId || !body) throw new Error('not a sealed secret');
    const dek = await this.dekById(dekId);
    if (dek.tenantId !== binding.tenantId) throw new Error('the secret belongs to another tenant');
    const raw = Buffer.from(body, 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', dek.key, raw.subarray(0, IV));
    decipher.setAAD(aad(binding));
    decipher.setAuthTag(raw.subarray(IV, IV + TAG));
    return Buffer.concat([decipher.update(raw.subarray(IV + TAG)), decipher.final()]).toString('utf8');
  }

  private async unwrap(row: DataKeyRow): Promise<{ tenantId: string | null; key: Buffer }> {
    const key = await this.keys.unwrap(row.key_id, row.wrapped, wrapContext(row));
    const dek = { tenantId: row.tenant_id, key };
    this.deks.set(row.id, dek);
    return dek;
  }

  private async dekById(id: string): Promise<{ tenantId: string | null; key: Buffer }> {
    const cached = this.deks.get(id);
    if (cached) return cached;
    const row = await this.access((db) => dataKeyById(db, id));
    if (!row) throw new Error(`data key ${id} does not exist`);
    return this.unwrap(row);
  }

  private async currentDek(tenantId: string | null): Promise<{ id: string; key: Buffer }> {
    const scope = tenantId ?? 'platform';
    const id = this.currentByTenant.get(scope);
    const cached = id ? this.deks.get(id) : undefined;
    if (id && cached) return { id, key: cached.key };
    const row = await this.access(async (db) => {
      const found = await currentDataKey(db, tenantId);
      if (found) return found;
      const fresh = { id: randomUUID(), tenant_id: tenantId };
      const wrapped = await this.keys.wrap(randomBytes(32), wrapContext(fresh));
      await insertDataKey(db, { ...fresh, key_id: wrapped.keyId, wrapped: wrapped.wrapped });
      const stored = await currentDataKey(db, tenantId);
      if (!stored) throw new Error('the data key was not stored');
      return stored;
    });
    const dek = await this.unwrap(row);
    this.currentByTenant.set(scope, row.id);
    return { id: row.id, key: dek.key };
  }
}
