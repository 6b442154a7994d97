import type { JWTPayload } from 'jose';
import type { ClaimMapping } from '../config/config.js';
import { UnauthorizedError } from '../errors/errors.js';

/**
 * The identity envelope as the token states it (seed 003 Phase A), before the tenant is resolved
 * and the session checked: who (principal), through which application, for which tenant (or the
 * platform), in which session, with which roles. Pure: no I/O.
 */
export interface TokenClaims {
  issuer: string;
  subject: string;
  kind: 'user' | 'service';
  appId: string;
  /** Tenant UUID or slug as the token says it; null: platform scope. */
  tenant: string | null;
  sessionId: string | null;
  roles: string[];
}

const MAX = 200;

function text(value: unknown, claim: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX)
    throw new UnauthorizedError('token.claim_invalid', `The token's "${claim}" claim must be a string.`);
  return value;
}

export function claimsOf(issuer: string, payload: JWTPayload, map: ClaimMapping): TokenClaims {
  const subject = text(payload.sub, 'sub');
  if (!subject) throw new UnauthorizedError('token.claim_invalid', 'The token has no subject.');
  const rawRoles = payload[map.roles];
  const roles =
    rawRoles === undefined
      ? []
      : typeof rawRoles === 'string'
        ? rawRoles.split(' ').filter(Boolean)
        : Array.isArray(rawRoles) && rawRoles.every((r) => typeof r === 'string')
          ? (rawRoles as string[])
          : undefined;
  if (!roles)
    throw new UnauthorizedError('token.claim_invalid', `The token's "${map.roles}" claim is invalid.`);
  let appId: string | undefined;
  for (const c of map.appId) {
    appId = text(payload[c], c);
    if (appId) break;
  }
  const kindClaim = text(payload[map.principalKind], map.principalKind);
  if (kindClaim !== undefined && kindClaim !== 'user' && kindClaim !== 'service')
    throw new UnauthorizedError('token.claim_invalid', `"${map.principalKind}" must be user or service.`);
  // OAuth client credentials: the subject is the client itself.
  const kind = kindClaim ?? (appId !== undefined && appId === subject ? 'service' : 'user');
  return {
    issuer,
    subject,
    kind,
    appId: appId ?? 'unknown',
    tenant: text(payload[map.tenant], map.tenant) ?? null,
    sessionId: text(payload[map.sessionId], map.sessionId) ?? null,
    roles: [...new Set(roles)],
  };
}

/** The principal's id as stored (audit, sessions): the subject, qualified by its issuer unless built-in. */
export function principalId(claims: TokenClaims, builtinIssuer: string | undefined): string {
  return claims.issuer === builtinIssuer ? claims.subject : `${claims.subject}@${claims.issuer}`;
}
