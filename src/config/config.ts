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
  /** `api` serves HTTP, `controller` reconciles, `all` (default) does both in one process. */
  role: 'api' | 'controller' | 'all';
  controller: ControllerConfig;
  providers: ProviderConfig;
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
  /** Kafka bootstrap servers for kafka-topic resources; absent: topics are not provisioned. */
  kafkaBrokers: string[] | undefined;
  /** Azure Blob Storage for blob-container resources; absent: containers on the local disk. */
  azureStorageConnectionString: string | undefined;
}

export interface ConfigFlags {
  port?: string | number;
  host?: string;
  dataDir?: string;
  role?: string;
  workers?: string | number;
}

function positiveInt(name: string, raw: string | number | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw ValidationError.field(
      `/${name}`,
      'config.invalid',
      `${name} must be a positive integer, got "${raw}".`,
    );
  }
  return n;
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
    role: role as Config['role'],
    controller: {
      workers: positiveInt(
        'TENANTRY_CONTROLLER_WORKERS',
        flags.workers ?? env.TENANTRY_CONTROLLER_WORKERS,
        8,
      ),
      leaseMs: positiveInt('TENANTRY_LEASE_MS', env.TENANTRY_LEASE_MS, 30_000),
      backoffBaseMs: positiveInt('TENANTRY_BACKOFF_BASE_MS', env.TENANTRY_BACKOFF_BASE_MS, 1_000),
      backoffCapMs: positiveInt('TENANTRY_BACKOFF_CAP_MS', env.TENANTRY_BACKOFF_CAP_MS, 5 * 60_000),
      maxAttempts: positiveInt('TENANTRY_MAX_ATTEMPTS', env.TENANTRY_MAX_ATTEMPTS, 8),
      resyncIntervalMs: positiveInt('TENANTRY_RESYNC_MS', env.TENANTRY_RESYNC_MS, 10 * 60_000),
      pollIntervalMs: positiveInt('TENANTRY_POLL_MS', env.TENANTRY_POLL_MS, 500),
    },
    providers: {
      dataplaneDatabaseUrl: env.TENANTRY_DATAPLANE_DATABASE_URL || undefined,
      kafkaBrokers: env.TENANTRY_KAFKA_BROKERS ? list(env.TENANTRY_KAFKA_BROKERS, []) : undefined,
      azureStorageConnectionString: env.TENANTRY_AZURE_STORAGE_CONNECTION_STRING || undefined,
    },
  };
}
