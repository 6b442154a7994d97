import { hash } from 'node:crypto';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  type RemoteJWKSet,
} from 'jose';
import { DEFAULT_CLAIMS, type TrustedIssuer } from '../config/config.js';
import { TenantryError, UnauthorizedError } from '../errors/errors.js';
import { BUILTIN_ALGORITHM, type BuiltinIssuer } from './builtin-issuer.js';

export interface VerifiedToken {
  issuer: TrustedIssuer;
  payload: JWTPayload;
}

const DISCOVERY_TIMEOUT_MS = 5000;
/** Verified tokens remembered at most; the oldest is forgotten first. */
const CACHE_ENTRIES = 10_000;

/**
 * Validates bearer tokens (JWS-signed JWTs) of the trusted issuers with `jose`:
 * - the issuer is chosen by the token's `iss` among the trusted ones (the built-in issuer included),
 *   and its keys come from OIDC discovery (`/.well-known/openid-configuration` → `jwks_uri`) or a
 *   configured `jwksUri`; `createRemoteJWKSet` caches them and refetches (with a cool-down) when a
 *   token names a `kid` it does not know, which is how key rotation is followed;
 * - only the issuer's asymmetric algorithms are accepted: never `none`, never HS* (so a token
 *   "signed" with HMAC over the public key is refused before any key is looked at);
 * - `iss`, `aud`, `exp`, `nbf` are checked with a small clock tolerance; `sub` and `exp` are required.
 *
 * A token that verified is remembered (by its SHA-256, never the token itself) for `cacheSeconds`
 * or until it expires, whichever is sooner, so a client sending the same token on every request
 * pays for the signature check once: an ES256 verification costs about 0.25 ms of CPU, as much as
 * the rest of a read. A cached result is dropped as soon as a refetch of the issuer's JWKS no
 * longer lists the token's key (0 turns the cache off).
 */
export class TokenVerifier {
  private readonly issuers = new Map<string, TrustedIssuer>();
  private readonly keySets = new Map<string, JWTVerifyGetKey>();
  /** Key sets fetched over HTTP: their keys can be withdrawn while the process runs. */
  private readonly remoteSets = new Map<string, RemoteJWKSet>();
  private readonly verified = new Map<
    string,
    { token: VerifiedToken; kid: string | undefined; until: number }
  >();

  constructor(
    trusted: TrustedIssuer[],
    private readonly clockSkewSeconds: number,
    private readonly jwksCooldownSeconds: number,
    builtin?: BuiltinIssuer,
    private readonly cacheSeconds = 60,
  ) {
    for (const t of trusted) this.issuers.set(t.issuer, t);
    if (builtin) {
      this.issuers.set(builtin.issuer, {
        issuer: builtin.issuer,
        audience: [builtin.audience],
        algorithms: [BUILTIN_ALGORITHM],
        claims: DEFAULT_CLAIMS,
      });
      // In process: no HTTP round trip to ourselves; the same keys are published at /.well-known/jwks.json.
      this.keySets.set(builtin.issuer, createLocalJWKSet(builtin.jwks()));
    }
  }

  async verify(token: string): Promise<VerifiedToken> {
    if (this.cacheSeconds <= 0) return this.check(token);
    const key = hash('sha256', token, 'base64');
    const now = Date.now();
    const known = this.verified.get(key);
    if (known && known.until > now && this.stillPublished(known.token.issuer, known.kid)) return known.token;
    this.verified.delete(key);
    const verified = await this.check(token);
    const exp = typeof verified.payload.exp === 'number' ? verified.payload.exp * 1000 : now;
    const until = Math.min(now + this.cacheSeconds * 1000, exp);
    const kid = decodeProtectedHeader(token).kid;
    if (until > now && (kid !== undefined || !this.remoteSets.has(verified.issuer.issuer))) {
      if (this.verified.size >= CACHE_ENTRIES)
        this.verified.delete(this.verified.keys().next().value as string);
      this.verified.set(key, { token: verified, kid, until });
    }
    return verified;
  }

  /** Once a refetch of the issuer's keys no longer lists the token's key, the cached result is void. */
  private stillPublished(issuer: TrustedIssuer, kid: string | undefined): boolean {
    const remote = this.remoteSets.get(issuer.issuer);
    return !remote || (remote.jwks()?.keys.some((k) => k.kid === kid) ?? false);
  }

  private async check(token: string): Promise<VerifiedToken> {
    let alg: string | undefined;
    let iss: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
      iss = decodeJwt(token).iss;
    } catch {
      throw new UnauthorizedError('token.malformed', 'The bearer token is not a well-formed JWT.');
    }
    const issuer = iss === undefined ? undefined : this.issuers.get(iss);
    if (!issuer)
      throw new UnauthorizedError('token.issuer_untrusted', 'The token was not issued by a trusted issuer.');
    if (alg === undefined || !issuer.algorithms.includes(alg))
      throw new UnauthorizedError(
        'token.algorithm',
        `Tokens of this issuer must be signed with ${issuer.algorithms.join(', ')}.`,
      );
    const keys = await this.keySet(issuer);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: issuer.issuer,
        audience: issuer.audience,
        algorithms: issuer.algorithms,
        clockTolerance: this.clockSkewSeconds,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (err) {
      throw mapJoseError(err);
    }
    // jose checks exp and nbf; a token issued in the future (beyond the clock skew) is refused too.
    if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + this.clockSkewSeconds)
      throw new UnauthorizedError('token.issued_in_future', 'The token was issued in the future.');
    return { issuer, payload };
  }

  private async keySet(issuer: TrustedIssuer): Promise<JWTVerifyGetKey> {
    const known = this.keySets.get(issuer.issuer);
    if (known) return known;
    const jwksUri = issuer.jwksUri ?? (await discoverJwksUri(issuer.issuer));
    const set = createRemoteJWKSet(new URL(jwksUri), {
      timeoutDuration: DISCOVERY_TIMEOUT_MS,
      cooldownDuration: this.jwksCooldownSeconds * 1000,
    });
    this.keySets.set(issuer.issuer, set);
    this.remoteSets.set(issuer.issuer, set);
    return set;
  }
}

async function discoverJwksUri(issuer: string): Promise<string> {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
    // OIDC Discovery §4.3: the metadata's issuer must be exactly the one asked about.
    if (doc.issuer !== issuer) throw new Error(`discovery names issuer ${String(doc.issuer)}`);
    if (typeof doc.jwks_uri !== 'string') throw new Error('no jwks_uri');
    return doc.jwks_uri;
  } catch (err) {
    throw new TenantryError(
      'identity.issuer_unavailable',
      503,
      `The token issuer's keys cannot be obtained (${(err as Error).message}); try again.`,
    );
  }
}

function mapJoseError(err: unknown): unknown {
  if (err instanceof errors.JWTExpired)
    return new UnauthorizedError('token.expired', 'The token has expired.');
  if (err instanceof errors.JWTClaimValidationFailed)
    return new UnauthorizedError(
      `token.claim_invalid`,
      `The token's "${err.claim}" claim is not acceptable (${err.reason}).`,
    );
  if (err instanceof errors.JWKSNoMatchingKey)
    return new UnauthorizedError('token.key_unknown', 'No key of the issuer matches the token.');
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid)
    return new TenantryError(
      'identity.issuer_unavailable',
      503,
      "The token issuer's keys cannot be obtained.",
    );
  if (err instanceof errors.JOSEAlgNotAllowed)
    return new UnauthorizedError('token.algorithm', 'The token algorithm is not accepted.');
  if (err instanceof errors.JOSEError)
    return new UnauthorizedError('token.invalid', 'The token signature or format is invalid.');
  return err;
}
