import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ValidationError } from '../errors/errors.js';

export const DEFAULT_REGIONS = ['eu', 'us', 'apac'] as const;
export const DEFAULT_ENVIRONMENT_TYPES = ['dev', 'qa', 'uat', 'staging', 'prod'] as const;

/** The one validated, typed configuration object, built once at start-up. */
export interface Config {
  host: string;
  port: number;
  dataDir: string;
  /** External PostgreSQL (owner/migration connection). Absent: start the embedded server. */
  databaseUrl: string | undefined;
  /** Connection for the application role; derived from databaseUrl when absent. */
  appDatabaseUrl: string | undefined;
  regions: string[];
  environmentTypes: string[];
  logLevel: string;
  instanceId: string;
  /** CloudEvents `source` of this installation. */
  source: string;
  bodyLimitBytes: number;
  pageSizeMax: number;
  /** Ed25519 private key (PKCS#8 PEM) that signs audit checkpoints; absent: kept under dataDir/audit. */
  auditSigningKeyFile: string | undefined;
  /** Identity: trusted token issuers, the built-in issuer, sessions, policies (src/identity, src/authz). */
  identity: IdentityConfig;
}

/** How the claims of one issuer's tokens map onto the identity envelope. */
export interface ClaimMapping {
  /** Claim holding the tenant (UUID or slug); absent claim: platform scope. */
  tenant: string;
  /** Claim holding the roles (array of strings, or a space-separated string). */
  roles: string;
  /** Claims tried in order for the application id. */
  appId: string[];
  /** Claim holding the session id. */
  sessionId: string;
  /** Claim holding the principal kind (`user` or `service`); absent: `user`, or `service` when sub equals the client id. */
  principalKind: string;
}

export interface TrustedIssuer {
  /** Exactly the `iss` of its tokens; also the base of OIDC discovery. */
  issuer: string;
  /** Expected `aud` (one of). */
  audience: string[];
  /** Skips discovery when given. */
  jwksUri?: string | undefined;
  /** Asymmetric algorithms accepted from this issuer. */
  algorithms: string[];
  claims: ClaimMapping;
}

export interface IdentityConfig {
  /** The built-in issuer's `iss` (embedded default: no external IdP needed). Empty: disabled. */
  issuer: string;
  /** The audience of the built-in issuer's tokens. */
  audience: string;
  /** PKCS#8 PEM private key of the built-in issuer; absent: kept under dataDir/identity. */
  signingKeyFile: string | undefined;
  /** External OIDC issuers (TENANTRY_TRUSTED_ISSUERS as JSON, or TENANTRY_TRUSTED_ISSUERS_FILE). */
  trustedIssuers: TrustedIssuer[];
  clockSkewSeconds: number;
  /** Least time between two JWKS refetches for an unknown `kid` (rotation vs. kid spraying). */
  jwksCooldownSeconds: number;
  sessionTtlSeconds: number;
  breakGlassMaxSeconds: number;
  /** Extra Cedar policies (text), validated at start-up. */
  policyFile: string | undefined;
}

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

export interface ConfigFlags {
  port?: string | number;
  host?: string;
  dataDir?: string;
}

function list(value: string | undefined, fallback: readonly string[]): string[] {
  if (!value) return [...fallback];
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0)
    throw ValidationError.field(`/${name}`, 'config.invalid', `${name} must be a non-negative integer.`);
  return n;
}

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

export function loadConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const portRaw = flags.port ?? env.TENANTRY_PORT ?? '8080';
  const port = Number(portRaw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw ValidationError.field(
      '/port',
      'config.invalid',
      `Port must be an integer 0-65535, got "${portRaw}".`,
    );
  }
  const regions = list(env.TENANTRY_REGIONS, DEFAULT_REGIONS);
  const environmentTypes = list(env.TENANTRY_ENVIRONMENT_TYPES, DEFAULT_ENVIRONMENT_TYPES);
  for (const [name, values] of [
    ['TENANTRY_REGIONS', regions],
    ['TENANTRY_ENVIRONMENT_TYPES', environmentTypes],
  ] as const) {
    for (const v of values) {
      if (!LABEL.test(v))
        throw ValidationError.field(`/${name}`, 'config.invalid', `"${v}" is not a lowercase label.`);
    }
  }
  const dataDir = path.resolve(flags.dataDir ?? env.TENANTRY_DATA_DIR ?? '.tenantry');
  const host = flags.host ?? env.TENANTRY_HOST ?? '127.0.0.1';
  return {
    host,
    port,
    dataDir,
    databaseUrl: env.DATABASE_URL || undefined,
    appDatabaseUrl: env.TENANTRY_APP_DATABASE_URL || undefined,
    regions,
    environmentTypes,
    logLevel: env.TENANTRY_LOG_LEVEL ?? 'info',
    instanceId: env.TENANTRY_INSTANCE_ID ?? randomUUID(),
    source: env.TENANTRY_EVENT_SOURCE ?? 'urn:tenantry:local',
    bodyLimitBytes: Number(env.TENANTRY_BODY_LIMIT_BYTES ?? 1024 * 1024),
    pageSizeMax: 500,
    auditSigningKeyFile: env.TENANTRY_AUDIT_SIGNING_KEY_FILE
      ? path.resolve(env.TENANTRY_AUDIT_SIGNING_KEY_FILE)
      : undefined,
    identity: {
      issuer: env.TENANTRY_ISSUER ?? 'urn:tenantry:local',
      audience: env.TENANTRY_AUDIENCE ?? 'tenantry',
      signingKeyFile: env.TENANTRY_TOKEN_SIGNING_KEY_FILE
        ? path.resolve(env.TENANTRY_TOKEN_SIGNING_KEY_FILE)
        : undefined,
      trustedIssuers: trustedIssuers(env),
      clockSkewSeconds: positiveInt('TENANTRY_CLOCK_SKEW_SECONDS', env.TENANTRY_CLOCK_SKEW_SECONDS, 30),
      jwksCooldownSeconds: positiveInt(
        'TENANTRY_JWKS_COOLDOWN_SECONDS',
        env.TENANTRY_JWKS_COOLDOWN_SECONDS,
        30,
      ),
      sessionTtlSeconds: positiveInt(
        'TENANTRY_SESSION_TTL_SECONDS',
        env.TENANTRY_SESSION_TTL_SECONDS,
        43_200,
      ),
      breakGlassMaxSeconds: positiveInt(
        'TENANTRY_BREAK_GLASS_MAX_SECONDS',
        env.TENANTRY_BREAK_GLASS_MAX_SECONDS,
        3600,
      ),
      policyFile: env.TENANTRY_POLICY_FILE ? path.resolve(env.TENANTRY_POLICY_FILE) : undefined,
    },
  };
}
