import { type Static, Type } from '@sinclair/typebox';
import { ValidationError } from '../errors/errors.js';
import { byRegion, list, type Variables, variables } from './settings.js';

/** Provider settings (src/providers): Kafka, Azure Blob, the data-plane database; per region where given. */

const Sasl = <M extends string>(mechanism: M) =>
  Type.Object({ mechanism: Type.Literal(mechanism), username: Type.String(), password: Type.String() });
export const KafkaSaslSchema = Type.Union([Sasl('plain'), Sasl('scram-sha-256'), Sasl('scram-sha-512')]);
export type KafkaSasl = Static<typeof KafkaSaslSchema>;
export type KafkaSaslMechanism = KafkaSasl['mechanism'];

export const KafkaConfigSchema = Type.Object({
  brokers: Type.Array(Type.String(), { minItems: 1, description: '`host:port` bootstrap servers.' }),
  clientId: Type.String(),
  sasl: Type.Union([KafkaSaslSchema, Type.Undefined()]),
  ssl: Type.Boolean({ description: 'TLS to the brokers (system trust store).' }),
  principalTemplate: Type.String({
    description:
      'The principal a consumer deployment reads as; `{consumer}` is its slug. Default `User:{consumer}`.',
  }),
  groupPrefixTemplate: Type.String({
    description: 'The consumer group prefix a consumer deployment may use; `{consumer}` is its slug.',
  }),
});
export type KafkaConfig = Static<typeof KafkaConfigSchema>;

export const AzureBlobConfigSchema = Type.Object({
  connectionString: Type.String(),
  mode: Type.Union([Type.Literal('container'), Type.Literal('prefix')], {
    description:
      '`container`: one private container per scope, named after the scope slug. `prefix`: one shared private container (`container`) with a `<scope-slug>/` folder per scope.',
  }),
  container: Type.String({ description: 'The shared container in `prefix` mode.' }),
});
export type AzureBlobConfig = Static<typeof AzureBlobConfigSchema>;

export const ProviderConfigSchema = Type.Object({
  dataplaneDatabaseUrl: Type.Union([Type.String(), Type.Undefined()], {
    description:
      'Data-plane PostgreSQL for database isolation; absent: a `<db>_dataplane` database on the owner server.',
  }),
  dataplanePeerAddress: Type.Union([Type.String(), Type.Undefined()], {
    description:
      "`host:port` at which another region's data-plane PostgreSQL (and agent) reaches this one's (TENANTRY_DATAPLANE_PEER_ADDRESS): a region migration between two agents hands it out in a reader's connection string; absent: the host of TENANTRY_DATAPLANE_DATABASE_URL.",
  }),
  dataplaneByRegion: Type.Record(Type.String(), Type.String(), {
    description:
      'A region (cell) with a data-plane PostgreSQL of its own: `TENANTRY_DATAPLANE_DATABASE_URL_US` (region migration copies between them).',
  }),
});
export type ProviderConfig = Static<typeof ProviderConfigSchema>;

export const KubernetesConfigSchema = Type.Object({
  kubeconfig: Type.String({ description: 'Path of the kubeconfig file (TENANTRY_KUBECONFIG).' }),
  context: Type.Union([Type.String(), Type.Undefined()], {
    description: 'Its context to use (TENANTRY_KUBE_CONTEXT); absent: the current context.',
  }),
});
export type KubernetesConfig = Static<typeof KubernetesConfigSchema>;

export const LocalRuntimeConfigSchema = Type.Object({
  scaleIntervalMs: Type.Integer({
    minimum: 100,
    description:
      'How often the local target samples replica CPU/memory to scale (TENANTRY_LOCAL_SCALE_INTERVAL_MS, default 15000).',
  }),
  scaleDownStabilizationMs: Type.Integer({
    minimum: 0,
    description:
      'How long a lower recommendation must hold before scaling down (TENANTRY_LOCAL_SCALE_DOWN_STABILIZATION_MS, default 300000).',
  }),
});
export type LocalRuntimeConfig = Static<typeof LocalRuntimeConfigSchema>;

/** The provider part of the configuration object. */
export const ProvidersConfigSchema = Type.Object({
  runtime: Type.Union([Type.Literal('local'), Type.Literal('kubernetes'), Type.Literal('none')], {
    description:
      'The compute target services run on (TENANTRY_RUNTIME): `kubernetes` when TENANTRY_KUBECONFIG is set, else `local` (replicas are processes of this machine, src/runtime/local); `none`: services end Ready=False, ProviderNotConfigured.',
  }),
  localRuntime: LocalRuntimeConfigSchema,
  kubernetes: Type.Union([KubernetesConfigSchema, Type.Undefined()], {
    description:
      'The Kubernetes cluster services run on (src/runtime/kubernetes); absent: TENANTRY_KUBECONFIG is not set and services end Ready=False, ProviderNotConfigured.',
  }),
  providers: ProviderConfigSchema,
  kafka: Type.Union([KafkaConfigSchema, Type.Undefined()], {
    description: 'The Kafka cluster for `kafka-topic` resources; absent: TENANTRY_KAFKA_BROKERS is not set.',
  }),
  azureBlob: Type.Union([AzureBlobConfigSchema, Type.Undefined()], {
    description: 'Azure Blob Storage for `blob-container` resources; absent: no connection string is set.',
  }),
  kafkaByRegion: Type.Record(Type.String(), KafkaConfigSchema, {
    description:
      'Per region (cell), where it has its own: `TENANTRY_KAFKA_BROKERS_EU` (any provider variable with the `_<REGION>` suffix, falling back to the unsuffixed one).',
  }),
  azureBlobByRegion: Type.Record(Type.String(), AzureBlobConfigSchema),
});
export type ProvidersConfig = Static<typeof ProvidersConfigSchema>;

export function parseProvidersConfig(env: NodeJS.ProcessEnv, regions: string[]): ProvidersConfig {
  const runtime = (env.TENANTRY_RUNTIME || (env.TENANTRY_KUBECONFIG ? 'kubernetes' : 'local')).toLowerCase();
  if (runtime !== 'local' && runtime !== 'kubernetes' && runtime !== 'none')
    throw ValidationError.field(
      '/TENANTRY_RUNTIME',
      'config.invalid',
      `Must be one of local, kubernetes, none, got "${runtime}".`,
    );
  if (runtime === 'kubernetes' && !env.TENANTRY_KUBECONFIG)
    throw ValidationError.field(
      '/TENANTRY_KUBECONFIG',
      'config.invalid',
      'TENANTRY_RUNTIME=kubernetes needs TENANTRY_KUBECONFIG (a kubeconfig file).',
    );
  return {
    runtime: runtime as ProvidersConfig['runtime'],
    localRuntime: {
      scaleIntervalMs: millis(env, 'TENANTRY_LOCAL_SCALE_INTERVAL_MS', 15_000, 100),
      scaleDownStabilizationMs: millis(env, 'TENANTRY_LOCAL_SCALE_DOWN_STABILIZATION_MS', 300_000, 0),
    },
    providers: {
      dataplaneDatabaseUrl: env.TENANTRY_DATAPLANE_DATABASE_URL || undefined,
      dataplanePeerAddress: env.TENANTRY_DATAPLANE_PEER_ADDRESS || undefined,
      dataplaneByRegion: byRegion(env, regions, 'TENANTRY_DATAPLANE_DATABASE_URL', (v) =>
        v.get('TENANTRY_DATAPLANE_DATABASE_URL'),
      ),
    },
    kubernetes: env.TENANTRY_KUBECONFIG
      ? { kubeconfig: env.TENANTRY_KUBECONFIG, context: env.TENANTRY_KUBE_CONTEXT || undefined }
      : undefined,
    kafka: kafkaConfig(variables(env)),
    azureBlob: azureBlobConfig(variables(env)),
    kafkaByRegion: byRegion(env, regions, 'TENANTRY_KAFKA_BROKERS', kafkaConfig),
    azureBlobByRegion: byRegion(env, regions, 'TENANTRY_AZURE_STORAGE_CONNECTION_STRING', azureBlobConfig),
  };
}

function millis(env: NodeJS.ProcessEnv, name: string, fallback: number, minimum: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < minimum)
    throw ValidationError.field(
      `/${name}`,
      'config.invalid',
      `Must be an integer ≥ ${minimum} (milliseconds).`,
    );
  return n;
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
