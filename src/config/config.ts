import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ValidationError } from '../errors/errors.js';
import { AgentConfigSchema, parseAgentConfig } from './agent.config.js';
import { ConsoleConfigSchema, parseConsoleConfig } from './console.config.js';
import { ControllerConfigSchema, parseControllerConfig } from './controller.config.js';
import { EventsConfigSchema, parseEventsConfig } from './events.config.js';
import { IdentityConfigSchema, parseIdentityConfig } from './identity.config.js';
import { ProvidersConfigSchema, parseProvidersConfig } from './providers.config.js';
import { integerSetting, LABEL, list } from './settings.js';

export type { AgentConfig } from './agent.config.js';
export type { ConsoleConfig, ConsoleOidcConfig } from './console.config.js';
export type { ControllerConfig } from './controller.config.js';
export type { EventsConfig } from './events.config.js';
export {
  ASYMMETRIC_ALGORITHMS,
  type ClaimMapping,
  DEFAULT_CLAIMS,
  type IdentityConfig,
  type TrustedIssuer,
} from './identity.config.js';
export type {
  AzureBlobConfig,
  KafkaConfig,
  KafkaSasl,
  KafkaSaslMechanism,
  ProviderConfig,
} from './providers.config.js';

/*
 * The configuration is parsed per area (./<area>.config.ts: its TypeBox schema, its type and its
 * parser, with a clear config.invalid error per variable) and assembled here into the one typed
 * object built at start-up, which is checked against the whole schema once.
 */

export const DEFAULT_REGIONS = ['eu', 'us', 'apac'] as const;
export const DEFAULT_ENVIRONMENT_TYPES = ['dev', 'qa', 'uat', 'staging', 'prod'] as const;

const ROLES = ['api', 'controller', 'all'] as const;
const OptionalString = (description: string) =>
  Type.Union([Type.String(), Type.Undefined()], { description });

/** The one validated, typed configuration object, built once at start-up. */
export const ConfigSchema = Type.Composite([
  Type.Object({
    host: Type.String(),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
    dataDir: Type.String(),
    databaseUrl: OptionalString(
      'External PostgreSQL (owner/migration connection). Absent: start the embedded server.',
    ),
    appDatabaseUrl: OptionalString(
      'Connection for the application role; derived from databaseUrl when absent.',
    ),
    platformDatabaseUrl: OptionalString(
      'Connection for the platform role (platform-scope work); derived from databaseUrl when absent.',
    ),
    regions: Type.Array(Type.String({ pattern: LABEL.source })),
    environmentTypes: Type.Array(Type.String({ pattern: LABEL.source })),
    logLevel: Type.String(),
    instanceId: Type.String(),
    source: Type.String({ description: 'CloudEvents `source` of this installation.' }),
    bodyLimitBytes: Type.Integer({ minimum: 1 }),
    pageSizeMax: Type.Integer({ minimum: 1 }),
    auditSigningKeyFile: OptionalString(
      'Ed25519 private key (PKCS#8 PEM) that signs audit checkpoints; absent: kept under dataDir/audit.',
    ),
    secretsKeyFile: Type.String({
      description:
        'Key-encryption keys of the secrets at rest (TENANTRY_SECRETS_KEY_FILE, JSON, mode 0600); default dataDir/secrets/kek.json, generated on first use. Every process of one installation needs the same file.',
    }),
    auditTrustedKeyFiles: Type.Array(Type.String(), {
      description: 'Public keys (PEM files) of earlier checkpoint signers that verification still trusts.',
    }),
    auditWitnesses: Type.Array(Type.String(), {
      description:
        'Witnesses that cosign audit checkpoints (TENANTRY_AUDIT_WITNESSES, comma-separated "<verifier key> <url>"; c2sp.org/tlog-witness).',
    }),
    auditCheckpointIntervalMs: Type.Integer({
      minimum: 1,
      description: 'How often the chain heads are signed into a checkpoint (only when they moved).',
    }),
    tracing: Type.Boolean({
      description:
        'OpenTelemetry tracing: on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_*ENDPOINT).',
    }),
    requestLogRetentionDays: Type.Integer({
      minimum: 1,
      description: 'Days the per-tenant request log (analytics) is kept.',
    }),
    rateLimitCacheMs: Type.Integer({
      minimum: 0,
      description: "How long an API process caches a tenant's rate limits (TENANTRY_RATE_LIMIT_CACHE_MS).",
    }),
    objectCacheSeconds: Type.Integer({
      minimum: 0,
      description:
        'How long an API process keeps a GET answer (TENANTRY_OBJECT_CACHE_SECONDS); every change ends it at once through NOTIFY. 0: every GET reads the database.',
    }),
    identity: IdentityConfigSchema,
    role: Type.Union(
      ROLES.map((r) => Type.Literal(r)),
      {
        description: '`api` serves HTTP, `controller` reconciles, `all` (default) does both in one process.',
      },
    ),
    controller: ControllerConfigSchema,
    events: EventsConfigSchema,
    console: ConsoleConfigSchema,
    agent: AgentConfigSchema,
  }),
  ProvidersConfigSchema,
]);
export type Config = Static<typeof ConfigSchema>;

export interface ConfigFlags {
  port?: string | number;
  host?: string;
  dataDir?: string;
  role?: string;
  workers?: string | number;
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
  const config: Config = {
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
    secretsKeyFile: path.resolve(env.TENANTRY_SECRETS_KEY_FILE || path.join(dataDir, 'secrets', 'kek.json')),
    auditTrustedKeyFiles: list(env.TENANTRY_AUDIT_TRUSTED_KEY_FILES, []).map((f) => path.resolve(f)),
    auditWitnesses: list(env.TENANTRY_AUDIT_WITNESSES, []),
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
    objectCacheSeconds: integerSetting(
      'TENANTRY_OBJECT_CACHE_SECONDS',
      env.TENANTRY_OBJECT_CACHE_SECONDS,
      30,
      0,
    ),
    identity: parseIdentityConfig(env),
    role: role as Config['role'],
    controller: parseControllerConfig(env, flags.workers),
    ...parseProvidersConfig(env, regions),
    events: parseEventsConfig(env),
    console: parseConsoleConfig(env),
    agent: parseAgentConfig(env),
  };
  // The area parsers report each bad variable; this catches what slips past them (e.g. a number
  // that is not one) before anything starts.
  const problem = Value.Errors(ConfigSchema, config).First();
  if (problem)
    throw ValidationError.field(problem.path || '/', 'config.invalid', `${problem.path}: ${problem.message}`);
  return config;
}

/** The Kafka or Azure Blob settings for a tenant's region: its own, else the default ones. */
export function providerConfigFor(config: Config, region: string) {
  return {
    kafka: config.kafkaByRegion[region] ?? config.kafka,
    azureBlob: config.azureBlobByRegion[region] ?? config.azureBlob,
  };
}
