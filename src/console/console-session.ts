import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';

/**
 * A console sign-in, kept in the browser as one encrypted cookie (AES-256-GCM): the bearer token the
 * console presents on the caller's behalf, the CSRF token, and when the session began and was last
 * used. Nothing can be read or changed without the key, so the times are trusted; any API process
 * with the same key (the data folder's) accepts it. Logout revokes the token's session (`sid`), so a
 * copied cookie is refused by the API's own session check afterwards.
 */
export interface ConsoleSession {
  token: string;
  csrf: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  seenAt: number;
}

export interface SessionLimits {
  idleSeconds: number;
  absoluteSeconds: number;
}

export type Opened =
  | { kind: 'valid'; session: ConsoleSession }
  | { kind: 'expired'; why: 'idle' | 'absolute' }
  | { kind: 'invalid' };

const IV = 12;
const TAG = 16;
/** Cookie name: `__Host-` (Secure, path /, no Domain) over TLS, a plain name over http. */
export const cookieName = (secure: boolean) => (secure ? '__Host-tenantry-console' : 'tenantry-console');

export class SessionCodec {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('The console session key must be 32 bytes.');
  }

  static random(): SessionCodec {
    return new SessionCodec(randomBytes(32));
  }

  /** Encrypts and authenticates any JSON value. */
  seal(value: unknown): string {
    const iv = randomBytes(IV);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  /** What `seal` sealed with this key, or undefined. */
  unseal<T>(text: string | undefined): T | undefined {
    if (!text) return undefined;
    try {
      const buf = Buffer.from(text, 'base64url');
      if (buf.length <= IV + TAG) return undefined;
      const decipher = createDecipheriv('aes-256-gcm', this.key, buf.subarray(0, IV));
      decipher.setAuthTag(buf.subarray(IV, IV + TAG));
      const json = Buffer.concat([decipher.update(buf.subarray(IV + TAG)), decipher.final()]);
      return JSON.parse(json.toString('utf8')) as T;
    } catch {
      return undefined;
    }
  }

  open(text: string | undefined, limits: SessionLimits, now = Date.now()): Opened {
    const session = this.unseal<ConsoleSession>(text);
    if (!session || typeof session.token !== 'string' || typeof session.csrf !== 'string')
      return { kind: 'invalid' };
    if (now - session.createdAt >= limits.absoluteSeconds * 1000) return { kind: 'expired', why: 'absolute' };
    if (now - session.seenAt >= limits.idleSeconds * 1000) return { kind: 'expired', why: 'idle' };
    return { kind: 'valid', session };
  }
}

export function newSession(token: string, now = Date.now()): ConsoleSession {
  return { token, csrf: randomBytes(24).toString('base64url'), createdAt: now, seenAt: now };
}

/** Constant-time comparison of a submitted CSRF token with the session's. */
export function csrfMatches(session: ConsoleSession, submitted: unknown): boolean {
  if (typeof submitted !== 'string' || submitted.length === 0) return false;
  const a = createHash('sha256').update(session.csrf).digest();
  const b = createHash('sha256').update(submitted).digest();
  return timingSafeEqual(a, b);
}

/** The key from `file` (0600, created on first use; another process's wins a race). */
export async function loadSessionKey(file: string): Promise<Buffer> {
  try {
    return Buffer.from((await fs.readFile(file, 'utf8')).trim(), 'base64');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  try {
    await fs.writeFile(file, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return Buffer.from((await fs.readFile(file, 'utf8')).trim(), 'base64');
  }
}

export const defaultSessionKeyFile = (dataDir: string) => path.join(dataDir, 'console', 'session-key');

/**
 * One-time sign-in codes of the built-in issuer (the link `tenantry serve` prints): single use,
 * short-lived, kept in the database as their SHA-256 only, so a link printed by one process is
 * redeemed by any process of the installation, also after a restart. Platform rows (RLS).
 */
export class SignInCodes {
  constructor(
    private readonly db: Db,
    private readonly ttlMs = 15 * 60_000,
  ) {}

  async issue(now = new Date()): Promise<string> {
    const code = randomBytes(24).toString('base64url');
    const expires = new Date(now.getTime() + this.ttlMs);
    await asPlatform(this.db, async (trx) => {
      // Spent and expired codes are forgotten a day later.
      await sql`delete from console_sign_in_codes where expires_at < ${new Date(now.getTime() - 86_400_000)}`.execute(
        trx,
      );
      await sql`insert into console_sign_in_codes (code_hash, created_at, expires_at)
        values (${hashOf(code)}, ${now}, ${expires})`.execute(trx);
    });
    return code;
  }

  /** True once per issued, unexpired code: the statement that checks it also spends it. */
  async redeem(code: string, now = new Date()): Promise<boolean> {
    const r = await asPlatform(this.db, (trx) =>
      sql`update console_sign_in_codes set used_at = ${now}
        where code_hash = ${hashOf(code)} and used_at is null and expires_at > ${now}
        returning code_hash`.execute(trx),
    );
    return r.rows.length === 1;
  }
}

const hashOf = (code: string) => createHash('sha256').update(code).digest('hex');
