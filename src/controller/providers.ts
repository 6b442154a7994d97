import type { Config } from '../config/config.js';
import type { Db } from '../db/database.js';
import { LocalDiskBlobProvider } from '../providers/local-disk/local-disk-blob.provider.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import type { ResourceProvider, ResourceType } from '../providers/provider.js';

/** Per resource type: the configured provider, or why there is none (shown as ProviderNotConfigured). */
export type ProviderSlot = { provider: ResourceProvider } | { missing: string };
export type ProviderSet = Record<ResourceType, ProviderSlot>;

export interface ProviderDeps {
  config: Config;
  /** The control-plane database (secret references). */
  db: Db;
  /** The data-plane PostgreSQL for database isolation (config's URL, else derived from the owner URL). */
  dataplaneUrl: string;
}

/**
 * THE one place where resource providers are chosen from configuration.
 * - kafka-topic: the Kafka provider (src/providers/kafka/) when TENANTRY_KAFKA_BROKERS is set.
 * - blob-container: Azure Blob Storage (src/providers/azure-blob/) when
 *   TENANTRY_AZURE_STORAGE_CONNECTION_STRING is set, else folders under `<dataDir>/blobs/`.
 * - database: the data-plane PostgreSQL.
 * The Kafka and Azure providers are built on another branch; wire their constructors in here
 * (`kafkaProvider`, `azureBlobProvider`). Until then a resource of that type ends Ready=False,
 * reason ProviderNotConfigured, with the message below — never a pretended success.
 */
export function createProviders(deps: ProviderDeps, overrides: Partial<ProviderSet> = {}): ProviderSet {
  const { config } = deps;
  const p = config.providers;
  return {
    'kafka-topic':
      overrides['kafka-topic'] ??
      (p.kafkaBrokers
        ? kafkaProvider(p.kafkaBrokers)
        : {
            missing: 'No Kafka cluster is configured: set TENANTRY_KAFKA_BROKERS (host:port,…) and restart.',
          }),
    'blob-container':
      overrides['blob-container'] ??
      (p.azureStorageConnectionString
        ? azureBlobProvider(p.azureStorageConnectionString)
        : { provider: new LocalDiskBlobProvider(config.dataDir) }),
    database: overrides.database ?? {
      provider: new PostgresDatabaseProvider(deps.dataplaneUrl, new SecretStore(deps.db)),
    },
  };
}

function kafkaProvider(_brokers: string[]): ProviderSlot {
  return {
    missing:
      'TENANTRY_KAFKA_BROKERS is set, but this build has no Kafka topic provider (src/providers/kafka/).',
  };
}

function azureBlobProvider(_connectionString: string): ProviderSlot {
  return {
    missing:
      'TENANTRY_AZURE_STORAGE_CONNECTION_STRING is set, but this build has no Azure Blob provider (src/providers/azure-blob/).',
  };
}

export async function closeProviders(set: ProviderSet): Promise<void> {
  for (const slot of Object.values(set)) if ('provider' in slot) await slot.provider.close();
}

/** `<owner database>_dataplane` on the owner's server: the embedded default's data plane. */
export function defaultDataplaneUrl(ownerUrl: string): string {
  const u = new URL(ownerUrl);
  const db = decodeURIComponent(u.pathname.slice(1)) || 'tenantry';
  u.pathname = `/${db}_dataplane`;
  return u.toString();
}
