import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ValidationError } from '../errors/errors.js';
import { validNetwork } from '../webhooks/url-guard.js';

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
  /** Connection for the platform role (platform-scope work); derived from databaseUrl when absent. */
  platformDatabaseUrl: string | undefined;
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
  /** Public keys (PEM files) of earlier checkpoint signers that verification still trusts. */
  auditTrustedKeyFiles: string[];
  /** How often the chain heads are signed into a checkpoint (only when they moved). */
  auditCheckpointIntervalMs: number;
  /** OpenTelemetry tracing: on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_*ENDPOINT). */
  tracing: boolean;
  /** Days the per-tenant request log (analytics) is kept. */
  requestLogRetentionDays: number;
  /** How long an API process caches a tenant's rate limits (TENANTRY_RATE_LIMIT_CACHE_MS). */
  rateLimitCacheMs: number;
  /** Identity: trusted token issuers, the built-in issuer, sessions, policies (src/identity, src/authz). */
  identity: IdentityConfig;
  /** `api` serves HTTP, `controller` reconciles, `all` (default) does both in one process. */
  role: 'api' | 'controller' | 'all';
  controller: ControllerConfig;
  providers: ProviderConfig;
  /** The Kafka cluster for `kafka-topic` resources; absent: TENANTRY_KAFKA_BROKERS is not set. */
  kafka: KafkaConfig | undefined;
  /** Azure Blob Storage for `blob-container` resources; absent: no connection string is set. */
  azureBlob: AzureBlobConfig | undefined;
  /**
   * Per region (cell), where it has its own: `TENANTRY_KAFKA_BROKERS_EU` (any provider variable with
   * the `_<REGION>` suffix, falling back to the unsuffixed one). See providerConfigFor().
   */
  kafkaByRegion: Record<string, KafkaConfig>;
  azureBlobByRegion: Record<string, AzureBlobConfig>;
  /** Events and webhooks (src/events, src/webhooks). */
  events: EventsConfig;
}

export interface EventsConfig {
  /** SSE heartbeat comment interval. */
  heartbeatMs: number;
  /** Poll fallback when no NOTIFY arrives (e.g. a pooler that drops LISTEN). */
  pollMs: number;
  /** Delays before attempt 2, 3, … (Standard Webhooks: 5s, 5m, 30m, 2h, 5h, 10h, 10h); full jitter applies. */
  webhookRetrySchedule: number[];
  webhookTimeoutMs: number;
  /** How long a claimed delivery is owned by one dispatcher; must exceed the timeout. */
  webhookLeaseMs: number;
  webhookConcurrency: number;
  /** How long a rotated-out secret keeps signing beside the new one. */
  webhookSecretOverlapMs: number;
  /** Run the webhook dispatcher in this process. */
  dispatcher: boolean;
  /** CIDRs webhooks may call although private/loopback/link-local (SSRF guard); empty by default. */
  webhookAllowedNetworks: string[];
  /** An endpoint whose deliveries have failed for this long (none succeeding) is disabled. */
  webhookDisableAfterMs: number;
  /** `kafka`: also publish every event to the Kafka cluster of TENANTRY_KAFKA_* (src/events/kafka-event-bus.ts). */
  bus: 'none' | 'kafka';
}

const DEFAULT_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000].map((s) => s * 1000);

/** A non-negative integer setting (0 allowed). */
function nonNegativeInt(name: string, value: string | undefined, fallback: number): number {
  return integerSetting(name, value, fallback, 0);
}

function eventBus(value: string | undefined): EventsConfig['bus'] {
  if (value === undefined || value === '' || value === 'none') return 'none';
  if (value === 'kafka') return 'kafka';
  throw ValidationError.field('/TENANTRY_EVENT_BUS', 'config.invalid', `"${value}" is not none or kafka.`);
}

function loadEventsConfig(env: NodeJS.ProcessEnv): EventsConfig {
  const schedule = env.TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS
    ? env.TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS.split(',').map((v) =>
        nonNegativeInt('TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS', v.trim(), 0),
      )
    : DEFAULT_RETRY_SCHEDULE;
  const networks = list(env.TENANTRY_WEBHOOK_ALLOWED_NETWORKS, []);
  for (const n of networks)
    if (!validNetwork(n))
      throw ValidationError.field(
        '/TENANTRY_WEBHOOK_ALLOWED_NETWORKS',
        'config.invalid',
        `"${n}" is not an IP address or CIDR.`,
      );
  const timeout = nonNegativeInt('TENANTRY_WEBHOOK_TIMEOUT_MS', env.TENANTRY_WEBHOOK_TIMEOUT_MS, 15_000);
  return {
    heartbeatMs: nonNegativeInt('TENANTRY_EVENT_HEARTBEAT_MS', env.TENANTRY_EVENT_HEARTBEAT_MS, 15_000),
    pollMs: nonNegativeInt('TENANTRY_EVENT_POLL_MS', env.TENANTRY_EVENT_POLL_MS, 2_000),
    webhookRetrySchedule: schedule,
    webhookTimeoutMs: timeout,
    webhookLeaseMs: Math.max(
      nonNegativeInt('TENANTRY_WEBHOOK_LEASE_MS', env.TENANTRY_WEBHOOK_LEASE_MS, 60_000),
      timeout + 1_000,
    ),
    webhookConcurrency: Math.max(
      1,
      nonNegativeInt('TENANTRY_WEBHOOK_CONCURRENCY', env.TENANTRY_WEBHOOK_CONCURRENCY, 32),
    ),
    webhookSecretOverlapMs:
      nonNegativeInt(
        'TENANTRY_WEBHOOK_SECRET_OVERLAP_SECONDS',
        env.TENANTRY_WEBHOOK_SECRET_OVERLAP_SECONDS,
        86_400,
      ) * 1000,
    dispatcher: env.TENANTRY_WEBHOOK_DISPATCHER !== 'off',
    bus: eventBus(env.TENANTRY_EVENT_BUS),
    webhookAllowedNetworks: networks,
    webhookDisableAfterMs:
      nonNegativeInt(
        'TENANTRY_WEBHOOK_DISABLE_AFTER_SECONDS',
        env.TENANTRY_WEBHOOK_DISABLE_AFTER_SECONDS,
        5 * 86_400,
      ) * 1000,
  };
}

export type KafkaSaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';
export type KafkaSasl = {
  [M in KafkaSaslMechanism]: { mechanism: M; username: string; password: string };
}[KafkaSaslMechanism];

export interface KafkaConfig {
  /** `host:port` bootstrap servers. */
  brokers: string[];
  clientId: string;
  sasl: KafkaSasl | undefined;
  /** TLS to the brokers (system trust store). */
  ssl: boolean;
  /** The principal a consumer deployment reads as; `{consumer}` is its slug. Default `User:{consumer}`. */
  principalTemplate: string;
  /** The consumer group prefix a consumer deployment may use; `{consumer}` is its slug. Default `{consumer}`. */
  groupPrefixTemplate: string;
}

export interface AzureBlobConfig {
  connectionString: string;
  /**
   * `container`: one private container per scope, named after the scope slug.
   * `prefix`: one shared private container (`container`) with a `<scope-slug>/` folder per scope.
   */
  mode: 'container' | 'prefix';
  /** The shared container in `prefix` mode. */
  container: string;
}

export interface ControllerConfig {
  /** Reconciles this process runs at once. */
  workers: number;
  /** How long a claimed job stays leased without a heartbeat before another worker may take it. */
  leaseMs: number;
  /** Retry delay: full jitter over min(cap, base × 2^attempt). */
  backoffBaseMs: number;
  backoffCapMs: number;
  /** Failed attempts in a row before the object is marked Failed (retried again at the next resync). */
  maxAttempts: number;
  /** Every object is reconciled again this long after its last success, to repair drift. */
  resyncIntervalMs: number;
  /** How often an idle worker looks for due jobs. */
  pollIntervalMs: number;
}

export interface ProviderConfig {
  /** Data-plane PostgreSQL for database isolation; absent: a `<db>_dataplane` database on the owner server. */
  dataplaneDatabaseUrl: string | undefined;
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
  /** How long a verified token is remembered (capped by its `exp`); 0: every request verifies. */
  tokenCacheSeconds: number;
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
  role?: string;
  workers?: string | number;
}

const ROLES = ['api', 'controller', 'all'] as const;

function list(value: string | undefined, fallback: readonly string[]): string[] {
  if (!value) return [...fallback];
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

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
  const rateLimitCacheMs = Number(env.TENANTRY_RATE_LIMIT_CACHE_MS ?? 5000);
  if (!Number.isInteger(rateLimitCacheMs) || rateLimitCacheMs < 0)
    throw ValidationError.field(
      '/TENANTRY_RATE_LIMIT_CACHE_MS',
      'config.invalid',
      'TENANTRY_RATE_LIMIT_CACHE_MS must be a non-negative integer (milliseconds).',
    );
  const dataDir = path.resolve(flags.dataDir ?? env.TENANTRY_DATA_DIR ?? '.tenantry');
  const host = flags.host ?? env.TENANTRY_HOST ?? '127.0.0.1';
  const role = flags.role ?? env.TENANTRY_ROLE ?? 'all';
  if (!(ROLES as readonly string[]).includes(role)) {
    throw ValidationError.field(
      '/role',
      'config.invalid',
      `Role must be one of ${ROLES.join(', ')}, got "${role}".`,
    );
  }
  return {
    host,
    port,
    dataDir,
    databaseUrl: env.DATABASE_URL || undefined,
    appDatabaseUrl: env.TENANTRY_APP_DATABASE_URL || undefined,
    platformDatabaseUrl: env.TENANTRY_PLATFORM_DATABASE_URL || undefined,
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
    auditTrustedKeyFiles: list(env.TENANTRY_AUDIT_TRUSTED_KEY_FILES, []).map((f) => path.resolve(f)),
    auditCheckpointIntervalMs: integerSetting(
      'TENANTRY_AUDIT_CHECKPOINT_INTERVAL_MS',
      env.TENANTRY_AUDIT_CHECKPOINT_INTERVAL_MS,
      60_000,
    ),
    tracing: Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
    requestLogRetentionDays: integerSetting(
      'TENANTRY_REQUEST_LOG_RETENTION_DAYS',
      env.TENANTRY_REQUEST_LOG_RETENTION_DAYS,
      30,
    ),
    rateLimitCacheMs,
    identity: {
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
    },
    role: role as Config['role'],
    controller: {
      workers: integerSetting(
        'TENANTRY_CONTROLLER_WORKERS',
        flags.workers ?? env.TENANTRY_CONTROLLER_WORKERS,
        8,
      ),
      leaseMs: integerSetting('TENANTRY_LEASE_MS', env.TENANTRY_LEASE_MS, 30_000),
      backoffBaseMs: integerSetting('TENANTRY_BACKOFF_BASE_MS', env.TENANTRY_BACKOFF_BASE_MS, 1_000),
      backoffCapMs: integerSetting('TENANTRY_BACKOFF_CAP_MS', env.TENANTRY_BACKOFF_CAP_MS, 5 * 60_000),
      maxAttempts: integerSetting('TENANTRY_MAX_ATTEMPTS', env.TENANTRY_MAX_ATTEMPTS, 8),
      resyncIntervalMs: integerSetting('TENANTRY_RESYNC_MS', env.TENANTRY_RESYNC_MS, 10 * 60_000),
      pollIntervalMs: integerSetting('TENANTRY_POLL_MS', env.TENANTRY_POLL_MS, 500),
    },
    providers: {
      dataplaneDatabaseUrl: env.TENANTRY_DATAPLANE_DATABASE_URL || undefined,
    },
    kafka: kafkaConfig(variables(env)),
    azureBlob: azureBlobConfig(variables(env)),
    kafkaByRegion: byRegion(env, regions, 'TENANTRY_KAFKA_BROKERS', kafkaConfig),
    azureBlobByRegion: byRegion(env, regions, 'TENANTRY_AZURE_STORAGE_CONNECTION_STRING', azureBlobConfig),
    events: loadEventsConfig(env),
  };
}

/** The Kafka or Azure Blob settings for a tenant's region: its own, else the default ones. */
export function providerConfigFor(config: Config, region: string) {
  return {
    kafka: config.kafkaByRegion[region] ?? config.kafka,
    azureBlob: config.azureBlobByRegion[region] ?? config.azureBlob,
  };
}

/** Reads `NAME_<SUFFIX>` before `NAME`; `name()` is the variable a value came from (for errors). */
interface Variables {
  get(name: string): string | undefined;
  name(name: string): string;
}

function variables(env: NodeJS.ProcessEnv, suffix?: string): Variables {
  const own = (name: string) => (suffix ? `${name}_${suffix}` : name);
  return {
    get: (name) => env[own(name)] || env[name] || undefined,
    name: (name) => (suffix && env[own(name)] ? own(name) : name),
  };
}

function byRegion<T>(
  env: NodeJS.ProcessEnv,
  regions: string[],
  marker: string,
  read: (vars: Variables) => T | undefined,
): Record<string, T> {
  const out: Record<string, T> = {};
  for (const region of regions) {
    const suffix = region.toUpperCase().replace(/-/g, '_');
    if (!env[`${marker}_${suffix}`]) continue;
    const value = read(variables(env, suffix));
    if (value) out[region] = value;
  }
  return out;
}

const SASL_MECHANISMS: readonly KafkaSaslMechanism[] = ['plain', 'scram-sha-256', 'scram-sha-512'];

function kafkaConfig(vars: Variables): KafkaConfig | undefined {
  const brokers = list(vars.get('TENANTRY_KAFKA_BROKERS'), []);
  if (brokers.length === 0) return undefined;
  for (const b of brokers) {
    if (!/^[^\s:]+:\d{1,5}$/.test(b))
      throw ValidationError.field(
        `/${vars.name('TENANTRY_KAFKA_BROKERS')}`,
        'config.invalid',
        `"${b}" is not host:port.`,
      );
  }
  const mechanism = vars.get('TENANTRY_KAFKA_SASL_MECHANISM')?.toLowerCase();
  let sasl: KafkaConfig['sasl'];
  if (mechanism) {
    if (!SASL_MECHANISMS.includes(mechanism as KafkaSaslMechanism))
      throw ValidationError.field(
        `/${vars.name('TENANTRY_KAFKA_SASL_MECHANISM')}`,
        'config.invalid',
        `Must be one of ${SASL_MECHANISMS.join(', ')}, got "${mechanism}".`,
      );
    const username = vars.get('TENANTRY_KAFKA_SASL_USERNAME');
    const password = vars.get('TENANTRY_KAFKA_SASL_PASSWORD');
    if (!username || !password)
      throw ValidationError.field(
        `/${vars.name('TENANTRY_KAFKA_SASL_USERNAME')}`,
        'config.invalid',
        'TENANTRY_KAFKA_SASL_USERNAME and TENANTRY_KAFKA_SASL_PASSWORD are required with a SASL mechanism.',
      );
    sasl = { mechanism, username, password } as KafkaSasl;
  }
  const principalTemplate = vars.get('TENANTRY_KAFKA_PRINCIPAL_TEMPLATE') ?? 'User:{consumer}';
  const groupPrefixTemplate = vars.get('TENANTRY_KAFKA_GROUP_PREFIX_TEMPLATE') ?? '{consumer}';
  for (const [name, value] of [
    ['TENANTRY_KAFKA_PRINCIPAL_TEMPLATE', principalTemplate],
    ['TENANTRY_KAFKA_GROUP_PREFIX_TEMPLATE', groupPrefixTemplate],
  ] as const) {
    if (value.split('{consumer}').length !== 2)
      throw ValidationError.field(
        `/${vars.name(name)}`,
        'config.invalid',
        'Must contain "{consumer}" exactly once.',
      );
  }
  if (!principalTemplate.includes(':'))
    throw ValidationError.field(
      `/${vars.name('TENANTRY_KAFKA_PRINCIPAL_TEMPLATE')}`,
      'config.invalid',
      'A Kafka principal is "<type>:<name>", e.g. "User:{consumer}".',
    );
  return {
    brokers,
    clientId: vars.get('TENANTRY_KAFKA_CLIENT_ID') ?? 'tenantry',
    sasl,
    ssl: ['1', 'true', 'yes'].includes((vars.get('TENANTRY_KAFKA_SSL') ?? '').toLowerCase()),
    principalTemplate,
    groupPrefixTemplate,
  };
}

function azureBlobConfig(vars: Variables): AzureBlobConfig | undefined {
  const connectionString = vars.get('TENANTRY_AZURE_STORAGE_CONNECTION_STRING');
  if (!connectionString) return undefined;
  const container = vars.get('TENANTRY_AZURE_BLOB_CONTAINER');
  if (container !== undefined && !/^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(container))
    throw ValidationError.field(
      `/${vars.name('TENANTRY_AZURE_BLOB_CONTAINER')}`,
      'config.invalid',
      `"${container}" is not a valid container name (3-63 lowercase letters, digits, single hyphens).`,
    );
  return { connectionString, mode: container ? 'prefix' : 'container', container: container ?? '' };
}

/** An integer setting from the environment, at least `min` (default 1). */
function integerSetting(name: string, raw: string | number | undefined, fallback: number, min = 1): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw ValidationError.field(
      `/${name}`,
      'config.invalid',
      `${name} must be an integer of at least ${min}, got "${raw}".`,
    );
  return n;
}
