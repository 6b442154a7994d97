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
    kafka: kafkaConfig(variables(env)),
    azureBlob: azureBlobConfig(variables(env)),
    kafkaByRegion: byRegion(env, regions, 'TENANTRY_KAFKA_BROKERS', kafkaConfig),
    azureBlobByRegion: byRegion(env, regions, 'TENANTRY_AZURE_STORAGE_CONNECTION_STRING', azureBlobConfig),
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
