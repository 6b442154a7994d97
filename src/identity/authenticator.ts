import { sql } from 'kysely';
import { recordAuditAttempt } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, platformDb } from '../db/database.js';
import { UnauthorizedError } from '../errors/errors.js';
import { claimsOf, principalId, type TokenClaims } from './envelope.js';
import { IdentityCache } from './identity-cache.js';
import type { TokenVerifier, VerifiedToken } from './token-verifier.js';

export interface RequestMeta {
  requestId: string;
  correlationId: string;
}

interface IdentifyRow {
  tenant_id: string | null;
  customer_id: string | null;
  session_issuer: string | null;
  session_app_id: string | null;
  session_tenant_id: string | null;
  session_principal: string | null;
  session_expires_at: Date | null;
  session_revoked_at: Date | null;
  elevation_id: string | null;
  elevation_roles: string[] | null;
  elevation_expires_at: Date | null;
}

interface TokenIdentity {
  claims: TokenClaims;
  principal: string;
  /** The identity cache's key. */
  key: string;
}

/** The most identities one process keeps (src/identity/identity-cache.ts). */
const IDENTITY_CACHE_ENTRIES = 10_000;

/**
 * Turns a bearer token into the request's identity envelope (RequestContext): verifies the token,
 * maps its claims, resolves its tenant, enforces the session binding (issuer + app_id + tenant +
 * principal) and applies an active break-glass elevation. One database round trip
 * (tenantry_identify, migration 0004), none for a caller identified shortly before: the answers
 * that admitted a caller are kept in `identities`, invalidated by NOTIFY (identity-cache.ts).
 * Never logs or stores the token.
 */
export class Authenticator {
  readonly identities: IdentityCache<IdentifyRow>;
  private readonly mapped = new WeakMap<VerifiedToken, TokenIdentity>();

  constructor(
    private readonly db: Db,
    private readonly verifier: TokenVerifier,
    private readonly sessionTtlSeconds: number,
    private readonly builtinIssuer: string | undefined,
    identityCacheSeconds = 0,
  ) {
    this.identities = new IdentityCache({
      ttlMs: identityCacheSeconds * 1000,
      maxEntries: IDENTITY_CACHE_ENTRIES,
    });
  }

  async authenticate(authorization: string | undefined, meta: RequestMeta): Promise<RequestContext> {
    if (!authorization)
      throw new UnauthorizedError(
        'token.missing',
        'This route needs a bearer token (Authorization: Bearer …).',
      );
    const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(authorization);
    if (!m?.[1])
      throw new UnauthorizedError('token.malformed', 'The Authorization header must be "Bearer <token>".');
    const { claims, principal, key } = this.claimsOf(await this.verifier.verify(m[1]));
    const cached = this.identities.get(key);
    if (cached) return this.envelope(cached, claims, principal, meta);
    const epoch = this.identities.begin();
    const { rows } = await sql<IdentifyRow>`
      select * from tenantry_identify(${claims.tenant}, ${claims.issuer}, ${principal}, ${claims.appId},
        ${claims.sessionId}, ${this.sessionTtlSeconds})`.execute(platformDb(this.db));
    const row = rows[0];
    if (!row) {
      // A valid token for a tenant that does not (or no longer) exist: the principal is known, so audit it.
      await recordAuditAttempt(
        this.db,
        {
          actor: { principal, kind: claims.kind },
          appId: claims.appId,
          sessionId: claims.sessionId,
          ...meta,
        },
        {
          tenantId: null,
          action: 'session.use',
          outcome: 'denied',
          target: { kind: 'Tenant', slug: claims.tenant },
          decision: { decision: 'deny', code: 'token.tenant_unknown', roles: claims.roles },
        },
      );
      throw new UnauthorizedError('token.tenant_unknown', "The token's tenant does not exist.");
    }
    const ctx = this.envelope(row, claims, principal, meta);
    if (claims.sessionId) await this.checkSession(ctx, claims, row);
    // Admitted: kept until the session or the elevation ends, if no invalidation came meanwhile.
    const ends = [row.session_expires_at, row.elevation_id ? row.elevation_expires_at : null]
      .filter((d): d is Date => d !== null)
      .map((d) => d.getTime());
    this.identities.set(key, row, epoch, Math.min(...ends));
    return ctx;
  }

  /**
   * What a verified token says, mapped once per verification: the verifier hands back the same
   * object for a token it remembers (token-verifier.ts), so a known caller's claims cost nothing.
   */
  private claimsOf(token: VerifiedToken): TokenIdentity {
    const known = this.mapped.get(token);
    if (known) return known;
    const claims = claimsOf(token.issuer.issuer, token.payload, token.issuer.claims);
    const principal = principalId(claims, this.builtinIssuer);
    // Everything tenantry_identify reads from the token; the roles are the token's own.
    const key = JSON.stringify([claims.tenant, claims.issuer, principal, claims.appId, claims.sessionId]);
    const mapped = { claims, principal, key };
    this.mapped.set(token, mapped);
    return mapped;
  }

  /** The envelope of an identify answer; on a cached answer, the session and elevation are live. */
  private envelope(
    row: IdentifyRow,
    claims: TokenClaims,
    principal: string,
    meta: RequestMeta,
  ): RequestContext {
    const ctx: RequestContext = {
      actor: { principal, kind: claims.kind },
      scope: row.tenant_id ? { kind: 'tenant', tenantId: row.tenant_id } : { kind: 'platform' },
      appId: claims.appId,
      sessionId: claims.sessionId,
      requestId: meta.requestId,
      correlationId: meta.correlationId,
      roles: claims.roles,
      issuer: claims.issuer,
      customerId: row.customer_id,
      elevation: null,
    };
    if (row.elevation_id && row.elevation_expires_at) {
      ctx.roles = [...new Set([...claims.roles, ...(row.elevation_roles ?? [])])];
      ctx.elevation = { id: row.elevation_id, expiresAt: row.elevation_expires_at.toISOString() };
    }
    return ctx;
  }

  /** The session must be live and bound to this issuer, application, tenant and principal. */
  private async checkSession(ctx: RequestContext, claims: TokenClaims, row: IdentifyRow): Promise<void> {
    const tenantId = ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null;
    const mismatch =
      row.session_issuer !== claims.issuer
        ? 'issuer'
        : row.session_app_id !== claims.appId
          ? 'app_id'
          : row.session_tenant_id !== tenantId
            ? 'tenant_id'
            : row.session_principal !== ctx.actor.principal
              ? 'principal'
              : null;
    let code: string | null = null;
    let message = '';
    if (mismatch) {
      code = 'session.binding_mismatch';
      message = `The session is bound to another ${mismatch}.`;
    } else if (row.session_revoked_at) {
      code = 'session.revoked';
      message = 'The session has been revoked.';
    } else if (row.session_expires_at && row.session_expires_at.getTime() <= Date.now()) {
      code = 'session.expired';
      message = 'The session has expired.';
    }
    if (!code) return;
    // A principal was identified (the token is valid): the refused attempt is audited.
    await recordAuditAttempt(this.db, ctx, {
      tenantId: row.session_tenant_id ?? tenantId,
      action: 'session.use',
      outcome: 'denied',
      target: { kind: 'Session', slug: claims.sessionId },
      decision: { decision: 'deny', code, ...(mismatch ? { element: mismatch } : {}), roles: claims.roles },
    });
    throw new UnauthorizedError(code, message);
  }
}
