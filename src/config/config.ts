import { randomUUID } from 'node:crypto';
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
}

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
    auditTrustedKeyFiles: list(env.TENANTRY_AUDIT_TRUSTED_KEY_FILES, []).map((f) => path.resolve(f)),
    auditCheckpointIntervalMs: positiveInteger(
      'TENANTRY_AUDIT_CHECKPOINT_INTERVAL_MS',
      env.TENANTRY_AUDIT_CHECKPOINT_INTERVAL_MS,
      60_000,
    ),
    tracing: Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
    requestLogRetentionDays: positiveInteger(
      'TENANTRY_REQUEST_LOG_RETENTION_DAYS',
      env.TENANTRY_REQUEST_LOG_RETENTION_DAYS,
      30,
    ),
    rateLimitCacheMs,
  };
}

function positiveInteger(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1)
    throw ValidationError.field(
      `/${name}`,
      'config.invalid',
      `${name} must be a positive integer, got "${raw}".`,
    );
  return n;
}
