import type { Config } from '../config/config.js';
import type { Db } from '../db/database.js';
import { createAzureBlobProvider } from '../providers/azure-blob/index.js';
import { createKafkaProvider } from '../providers/kafka/index.js';
import { LocalDiskBlobProvider } from '../providers/local-disk/local-disk-blob.provider.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import { type ResourceSecrets, SecretStore } from '../providers/postgres/secret-store.js';
import type { ResourceProvider, ResourceType } from '../providers/provider.js';
import { KubernetesRuntimeProvider } from '../runtime/kubernetes/kubernetes-runtime.provider.js';
import type { RuntimeProvider } from '../runtime/runtime-provider.js';
import { secretCipherFor } from '../secrets/index.js';

/** Per resource type: the configured provider, or why there is none (shown as ProviderNotConfigured). */
export type ProviderSlot = { provider: ResourceProvider } | { missing: string };
export interface ProviderSet extends Record<ResourceType, ProviderSlot> {
  /** Regions with a Kafka cluster or storage account of their own (`TENANTRY_KAFKA_BROKERS_EU`, …). */
  regions?: Record<string, Partial<Record<ResourceType, ProviderSlot>>>;
  /** The compute target services run on (src/runtime); absent: as `missing`. */
  runtime?: RuntimeSlot;
}
export type RuntimeSlot = { provider: RuntimeProvider } | { missing: string };
export const NO_RUNTIME =
  'No compute target is configured: set TENANTRY_KUBECONFIG (a kubeconfig file) and restart.';

/** The provider for a resource of a tenant in `region`: the region's own, else the default one. */
export function slotFor(set: ProviderSet, type: ResourceType, region: string): ProviderSlot {
  return set.regions?.[region]?.[type] ?? set[type];
}

export interface ProviderDeps {
  config: Config;
  /** The control-plane database (secret references), or where a cell agent keeps them instead. */
  db: Db | { secrets: ResourceSecrets };
  /** The data-plane PostgreSQL for database isolation; absent: database resources have no provider. */
  dataplaneUrl: string | undefined;
}

/**
 * THE one place where resource providers are chosen from configuration.
 * - kafka-topic: the Kafka provider (src/providers/kafka/) when TENANTRY_KAFKA_BROKERS is set;
 *   otherwise such a resource ends Ready=False, reason ProviderNotConfigured, never a pretended success.
 * - blob-container: Azure Blob Storage (src/providers/azure-blob/) when
 *   TENANTRY_AZURE_STORAGE_CONNECTION_STRING is set, else folders under `<dataDir>/blobs/`.
 * - database: the data-plane PostgreSQL.
 * A region with settings of its own (`…_EU` variables) gets its own Kafka or Azure provider.
 */
export function createProviders(deps: ProviderDeps, overrides: Partial<ProviderSet> = {}): ProviderSet {
  const { config } = deps;
  const regions: NonNullable<ProviderSet['regions']> = {};
  for (const [region, kafka] of Object.entries(config.kafkaByRegion))
    regions[region] = { 'kafka-topic': { provider: createKafkaProvider(kafka) } };
  for (const [region, azure] of Object.entries(config.azureBlobByRegion))
    regions[region] = { ...regions[region], 'blob-container': { provider: createAzureBlobProvider(azure) } };
  const secrets = () =>
    'secrets' in deps.db ? deps.db.secrets : new SecretStore(deps.db, secretCipherFor(deps.db, config));
  for (const [region, url] of Object.entries(config.providers.dataplaneByRegion ?? {}))
    regions[region] = {
      ...regions[region],
      database: { provider: new PostgresDatabaseProvider(url, secrets()) },
    };
  return {
    'kafka-topic':
      overrides['kafka-topic'] ??
      (config.kafka
        ? { provider: createKafkaProvider(config.kafka) }
        : {
            missing: 'No Kafka cluster is configured: set TENANTRY_KAFKA_BROKERS (host:port,…) and restart.',
          }),
    'blob-container':
      overrides['blob-container'] ??
      (config.azureBlob
        ? { provider: createAzureBlobProvider(config.azureBlob) }
        : { provider: new LocalDiskBlobProvider(config.dataDir) }),
    database:
      overrides.database ??
      (deps.dataplaneUrl
        ? {
            provider: new PostgresDatabaseProvider(deps.dataplaneUrl, secrets()),
          }
        : {
            missing:
              'No data-plane PostgreSQL is configured: set TENANTRY_DATAPLANE_DATABASE_URL and restart.',
          }),
    regions: overrides.regions ?? regions,
    runtime:
      overrides.runtime ??
      (config.kubernetes
        ? {
            provider: KubernetesRuntimeProvider.fromFile(
              config.kubernetes.kubeconfig,
              config.kubernetes.context,
            ),
          }
        : { missing: NO_RUNTIME }),
  };
}

export async function closeProviders(set: ProviderSet): Promise<void> {
  const slots = [
    set['kafka-topic'],
    set['blob-container'],
    set.database,
    ...Object.values(set.regions ?? {}).flatMap((r) => Object.values(r)),
  ];
  for (const slot of slots) if ('provider' in slot) await slot.provider.close();
  if (set.runtime && 'provider' in set.runtime) await set.runtime.provider.close();
}

/** `<owner database>_dataplane` on the owner's server: the embedded default's data plane. */
export function defaultDataplaneUrl(ownerUrl: string): string {
  const u = new URL(ownerUrl);
  const db = decodeURIComponent(u.pathname.slice(1)) || 'tenantry';
  u.pathname = `/${db}_dataplane`;
  return u.toString();
}
