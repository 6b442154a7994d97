import fs from 'node:fs';
import path from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { ValidationError } from '../errors/errors.js';
import { integerSetting } from './settings.js';

/** Identity: trusted token issuers, the built-in issuer, sessions, policies (src/identity, src/authz). */

/** How the claims of one issuer's tokens map onto the identity envelope. */
export const ClaimMappingSchema = Type.Object({
  tenant: Type.String({
    description: 'Claim holding the tenant (UUID or slug); absent claim: platform scope.',
  }),
  roles: Type.String({
    description: 'Claim holding the roles (array of strings, or a space-separated string).',
  }),
  appId: Type.Array(Type.String(), { description: 'Claims tried in order for the application id.' }),
  sessionId: Type.String({ description: 'Claim holding the session id.' }),
  principalKind: Type.String({
    description:
      'Claim holding the principal kind (`user` or `service`); absent: `user`, or `service` when sub equals the client id.',
  }),
});
export type ClaimMapping = Static<typeof ClaimMappingSchema>;

export const TrustedIssuerSchema = Type.Object({
  issuer: Type.String({
    minLength: 1,
    description: 'Exactly the `iss` of its tokens; also the base of OIDC discovery.',
  }),
  audience: Type.Array(Type.String(), { description: 'Expected `aud` (one of).' }),
  jwksUri: Type.Optional(
    Type.Union([Type.String(), Type.Undefined()], { description: 'Skips discovery when given.' }),
  ),
  algorithms: Type.Array(Type.String(), { description: 'Asymmetric algorithms accepted from this issuer.' }),
  claims: ClaimMappingSchema,
});
export type TrustedIssuer = Static<typeof TrustedIssuerSchema>;

const Seconds = (min: number, description?: string) =>
  Type.Integer({ minimum: min, ...(description ? { description } : {}) });
const OptionalFile = (description: string) => Type.Union([Type.String(), Type.Undefined()], { description });

export const IdentityConfigSchema = Type.Object({
  issuer: Type.String({
    description: "The built-in issuer's `iss` (embedded default: no external IdP needed). Empty: disabled.",
  }),
  audience: Type.String({ description: "The audience of the built-in issuer's tokens." }),
  signingKeyFile: OptionalFile(
    'PKCS#8 PEM private key of the built-in issuer; absent: kept under dataDir/identity.',
  ),
  trustedIssuers: Type.Array(TrustedIssuerSchema, {
    description:
      'External OIDC issuers (TENANTRY_TRUSTED_ISSUERS as JSON, or TENANTRY_TRUSTED_ISSUERS_FILE).',
  }),
  clockSkewSeconds: Seconds(0),
  jwksCooldownSeconds: Seconds(
    0,
    'Least time between two JWKS refetches for an unknown `kid` (rotation vs. kid spraying).',
  ),
  tokenCacheSeconds: Seconds(
    0,
    'How long a verified token is remembered (capped by its `exp`); 0: every request verifies.',
  ),
  identityCacheSeconds: Seconds(
    0,
    "How long an identity (the token's tenant, session and elevation, as tenantry_identify found them) is remembered; changes end it at once through NOTIFY. 0: every request identifies.",
  ),
  sessionTtlSeconds: Seconds(1),
  breakGlassMaxSeconds: Seconds(1),
  policyFile: OptionalFile('Extra Cedar policies (text), validated at start-up.'),
});
export type IdentityConfig = Static<typeof IdentityConfigSchema>;

export const ASYMMETRIC_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
];

export const DEFAULT_CLAIMS: ClaimMapping = {
  tenant: 'tenant',
  roles: 'roles',
  appId: ['app_id', 'azp', 'client_id'],
  sessionId: 'sid',
  principalKind: 'principal_kind',
};

function trustedIssuers(env: NodeJS.ProcessEnv): TrustedIssuer[] {
  const raw = env.TENANTRY_TRUSTED_ISSUERS_FILE
    ? fs.readFileSync(path.resolve(env.TENANTRY_TRUSTED_ISSUERS_FILE), 'utf8')
    : env.TENANTRY_TRUSTED_ISSUERS;
  if (!raw) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw ValidationError.field('/TENANTRY_TRUSTED_ISSUERS', 'config.invalid', 'must be a JSON array');
  }
  if (!Array.isArray(parsed))
    throw ValidationError.field('/TENANTRY_TRUSTED_ISSUERS', 'config.invalid', 'must be a JSON array');
  return parsed.map((entry, i) => {
    const e = entry as Partial<Omit<TrustedIssuer, 'audience' | 'claims'>> & {
      audience?: string | string[];
      claims?: Partial<ClaimMapping>;
    };
    const at = `/TENANTRY_TRUSTED_ISSUERS/${i}`;
    if (typeof e?.issuer !== 'string' || e.issuer === '')
      throw ValidationError.field(`${at}/issuer`, 'config.invalid', 'an issuer is required');
    const audience = typeof e.audience === 'string' ? [e.audience] : (e.audience ?? ['tenantry']);
    const algorithms = e.algorithms ?? ['RS256', 'PS256', 'ES256', 'EdDSA'];
    for (const alg of algorithms)
      if (!ASYMMETRIC_ALGORITHMS.includes(alg))
        throw ValidationError.field(
          `${at}/algorithms`,
          'config.invalid',
          `"${alg}" is not an accepted asymmetric algorithm (${ASYMMETRIC_ALGORITHMS.join(', ')})`,
        );
    return {
      issuer: e.issuer,
      audience,
      jwksUri: e.jwksUri,
      algorithms,
      claims: { ...DEFAULT_CLAIMS, ...e.claims },
    };
  });
}

export function parseIdentityConfig(env: NodeJS.ProcessEnv): IdentityConfig {
  return {
    issuer: env.TENANTRY_ISSUER ?? 'urn:tenantry:local',
    audience: env.TENANTRY_AUDIENCE ?? 'tenantry',
    signingKeyFile: env.TENANTRY_TOKEN_SIGNING_KEY_FILE
      ? path.resolve(env.TENANTRY_TOKEN_SIGNING_KEY_FILE)
      : undefined,
    trustedIssuers: trustedIssuers(env),
    clockSkewSeconds: integerSetting('TENANTRY_CLOCK_SKEW_SECONDS', env.TENANTRY_CLOCK_SKEW_SECONDS, 30, 0),
    jwksCooldownSeconds: integerSetting(
      'TENANTRY_JWKS_COOLDOWN_SECONDS',
      env.TENANTRY_JWKS_COOLDOWN_SECONDS,
      30,
      0,
    ),
    tokenCacheSeconds: integerSetting(
      'TENANTRY_TOKEN_CACHE_SECONDS',
      env.TENANTRY_TOKEN_CACHE_SECONDS,
      60,
      0,
    ),
    identityCacheSeconds: integerSetting(
      'TENANTRY_IDENTITY_CACHE_SECONDS',
      env.TENANTRY_IDENTITY_CACHE_SECONDS,
      30,
      0,
    ),
    sessionTtlSeconds: integerSetting(
      'TENANTRY_SESSION_TTL_SECONDS',
      env.TENANTRY_SESSION_TTL_SECONDS,
      43_200,
    ),
    breakGlassMaxSeconds: integerSetting(
      'TENANTRY_BREAK_GLASS_MAX_SECONDS',
      env.TENANTRY_BREAK_GLASS_MAX_SECONDS,
      3600,
    ),
    policyFile: env.TENANTRY_POLICY_FILE ? path.resolve(env.TENANTRY_POLICY_FILE) : undefined,
  };
}
