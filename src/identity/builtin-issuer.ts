import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importPKCS8,
  type JSONWebKeySet,
  type JWK,
  SignJWT,
} from 'jose';

/** The built-in issuer signs with ES256 (P-256): small tokens, fast verification. */
export const BUILTIN_ALGORITHM = 'ES256';

export interface MintOptions {
  subject: string;
  /** Tenant slug or UUID; absent: a platform token. */
  tenant?: string | undefined;
  roles: string[];
  kind?: 'user' | 'service';
  appId?: string;
  /** Session id (`sid`); absent: a new one. `null`: no session. */
  sessionId?: string | null;
  /** Lifetime from now; negative gives an expired token (tests). */
  ttlSeconds?: number;
  /** Default: this issuer's audience. */
  audience?: string;
  /** `iat`, seconds since the epoch; default now (tests give other ones). */
  issuedAt?: number;
}

/**
 * Tenantry's own token issuer, so the embedded default needs no external identity provider. Its
 * public key is published (`/.well-known/jwks.json`, `/.well-known/openid-configuration`) and its
 * tokens are verified like any other trusted issuer's. The private key lives in the data folder
 * (mode 0600) or in the file TENANTRY_TOKEN_SIGNING_KEY_FILE names, shared by every process.
 */
export class BuiltinIssuer {
  private constructor(
    readonly issuer: string,
    readonly audience: string,
    private readonly privateKey: CryptoKey,
    readonly publicJwk: JWK,
    /** The key was created by this load (first start). */
    readonly created = false,
  ) {}

  static async fromKey(
    issuer: string,
    audience: string,
    privateKey: CryptoKey,
    created = false,
  ): Promise<BuiltinIssuer> {
    const { d: _d, ...pub } = await exportJWK(privateKey);
    const kid = await calculateJwkThumbprint(pub);
    return new BuiltinIssuer(
      issuer,
      audience,
      privateKey,
      {
        ...pub,
        kid,
        alg: BUILTIN_ALGORITHM,
        use: 'sig',
      },
      created,
    );
  }

  /** A key of its own, kept in memory only (tests). */
  static async ephemeral(issuer: string, audience: string): Promise<BuiltinIssuer> {
    const { privateKey } = await generateKeyPair(BUILTIN_ALGORITHM, { extractable: true });
    return BuiltinIssuer.fromKey(issuer, audience, privateKey);
  }

  /** Loads the key from `keyFile`, creating it (0600) on first use. */
  static async load(issuer: string, audience: string, keyFile: string): Promise<BuiltinIssuer> {
    let pem: string;
    let created = false;
    try {
      pem = await fs.readFile(keyFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const { privateKey } = await generateKeyPair(BUILTIN_ALGORITHM, { extractable: true });
      pem = await exportPKCS8(privateKey);
      await fs.mkdir(path.dirname(keyFile), { recursive: true, mode: 0o700 });
      try {
        await fs.writeFile(keyFile, pem, { mode: 0o600, flag: 'wx' });
        created = true;
      } catch (e) {
        // Another process created it first: use that one.
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        pem = await fs.readFile(keyFile, 'utf8');
      }
    }
    const key = await importPKCS8(pem, BUILTIN_ALGORITHM, { extractable: true });
    return BuiltinIssuer.fromKey(issuer, audience, key, created);
  }

  get keyId(): string {
    return String(this.publicJwk.kid);
  }

  jwks(): JSONWebKeySet {
    return { keys: [this.publicJwk] };
  }

  /** OIDC discovery metadata; `baseUrl` is where this server is reached. */
  openidConfiguration(baseUrl: string): Record<string, unknown> {
    return {
      issuer: this.issuer,
      jwks_uri: `${baseUrl}/.well-known/jwks.json`,
      id_token_signing_alg_values_supported: [BUILTIN_ALGORITHM],
      // Tenants' service clients (src/identity/service-clients.ts) use the client-credentials grant.
      token_endpoint: `${baseUrl}/v1/oauth/token`,
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      response_types_supported: ['token'],
      subject_types_supported: ['public'],
      claims_supported: ['sub', 'tenant', 'roles', 'app_id', 'sid', 'principal_kind'],
    };
  }

  private readonly outbound = new Map<string, { token: string; refreshAt: number }>();

  /**
   * Outbound identity: what Tenantry's own calls (webhooks, providers) carry — a short-lived token
   * of Tenantry itself as a service for `audience`, never a caller's token. Cached until a minute
   * before it expires.
   */
  async serviceToken(audience: string, ttlSeconds = 600): Promise<string> {
    const cached = this.outbound.get(audience);
    if (cached && cached.refreshAt > Date.now()) return cached.token;
    const token = await this.mint({
      subject: 'tenantry',
      kind: 'service',
      roles: ['service'],
      appId: 'tenantry',
      sessionId: null,
      audience,
      ttlSeconds,
    });
    this.outbound.set(audience, { token, refreshAt: Date.now() + (ttlSeconds - 60) * 1000 });
    return token;
  }

  async mint(opts: MintOptions): Promise<string> {
    const ttl = opts.ttlSeconds ?? 3600;
    return new SignJWT({
      roles: opts.roles,
      ...(opts.tenant ? { tenant: opts.tenant } : {}),
      app_id: opts.appId ?? 'tenantry-cli',
      principal_kind: opts.kind ?? 'user',
      ...(opts.sessionId === null ? {} : { sid: opts.sessionId ?? randomUUID() }),
    })
      .setProtectedHeader({ alg: BUILTIN_ALGORITHM, kid: this.keyId, typ: 'JWT' })
      .setIssuer(this.issuer)
      .setAudience(opts.audience ?? this.audience)
      .setSubject(opts.subject)
      .setIssuedAt(opts.issuedAt)
      .setJti(randomUUID())
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
      .sign(this.privateKey);
  }
}

export const defaultTokenKeyFile = (dataDir: string) =>
  path.join(dataDir, 'identity', 'token-signing-key.pem');
