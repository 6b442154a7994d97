import { randomUUID } from 'node:crypto';
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
}

const DEFAULT_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000].map((s) => s * 1000);

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0)
    throw ValidationError.field(`/${name}`, 'config.invalid', `${name} must be a non-negative integer.`);
  return n;
}

function loadEventsConfig(env: NodeJS.ProcessEnv): EventsConfig {
  const schedule = env.TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS
    ? env.TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS.split(',').map((v) =>
        positiveInt('TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS', v.trim(), 0),
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
  const timeout = positiveInt('TENANTRY_WEBHOOK_TIMEOUT_MS', env.TENANTRY_WEBHOOK_TIMEOUT_MS, 15_000);
  return {
    heartbeatMs: positiveInt('TENANTRY_EVENT_HEARTBEAT_MS', env.TENANTRY_EVENT_HEARTBEAT_MS, 15_000),
    pollMs: positiveInt('TENANTRY_EVENT_POLL_MS', env.TENANTRY_EVENT_POLL_MS, 2_000),
    webhookRetrySchedule: schedule,
    webhookTimeoutMs: timeout,
    webhookLeaseMs: Math.max(
      positiveInt('TENANTRY_WEBHOOK_LEASE_MS', env.TENANTRY_WEBHOOK_LEASE_MS, 60_000),
      timeout + 1_000,
    ),
    webhookConcurrency: Math.max(
      1,
      positiveInt('TENANTRY_WEBHOOK_CONCURRENCY', env.TENANTRY_WEBHOOK_CONCURRENCY, 32),
    ),
    webhookSecretOverlapMs:
      positiveInt(
        'TENANTRY_WEBHOOK_SECRET_OVERLAP_SECONDS',
        env.TENANTRY_WEBHOOK_SECRET_OVERLAP_SECONDS,
        86_400,
      ) * 1000,
    dispatcher: env.TENANTRY_WEBHOOK_DISPATCHER !== 'off',
    webhookAllowedNetworks: networks,
    webhookDisableAfterMs:
      positiveInt(
        'TENANTRY_WEBHOOK_DISABLE_AFTER_SECONDS',
        env.TENANTRY_WEBHOOK_DISABLE_AFTER_SECONDS,
        5 * 86_400,
      ) * 1000,
  };
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
    events: loadEventsConfig(env),
  };
}
