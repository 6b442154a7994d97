import { describe, expect, it } from 'vitest';
import { loadConfig, providerConfigFor } from '../config/config.js';
import { TenantryError } from '../errors/errors.js';

const load = (env: Record<string, string>) => loadConfig({}, { TENANTRY_DATA_DIR: '/tmp/unused', ...env });

function refused(env: Record<string, string>): string | undefined {
  try {
    load(env);
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(TenantryError);
    return (err as TenantryError).errors[0]?.pointer;
  }
}

describe('provider configuration', () => {
  it('has no Kafka or Azure Blob without their variables', () => {
    expect(load({})).toMatchObject({ kafka: undefined, azureBlob: undefined });
  });

  it('reads the Kafka cluster, SASL, TLS and ACL templates', () => {
    expect(
      load({
        TENANTRY_KAFKA_BROKERS: 'kafka-1.eu:9093, kafka-2.eu:9093',
        TENANTRY_KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512',
        TENANTRY_KAFKA_SASL_USERNAME: 'tenantry',
        TENANTRY_KAFKA_SASL_PASSWORD: 's3cret',
        TENANTRY_KAFKA_SSL: 'true',
        TENANTRY_KAFKA_CLIENT_ID: 'tenantry-eu',
        TENANTRY_KAFKA_PRINCIPAL_TEMPLATE: 'User:CN={consumer},OU=apps',
      }).kafka,
    ).toEqual({
      brokers: ['kafka-1.eu:9093', 'kafka-2.eu:9093'],
      clientId: 'tenantry-eu',
      sasl: { mechanism: 'scram-sha-512', username: 'tenantry', password: 's3cret' },
      ssl: true,
      principalTemplate: 'User:CN={consumer},OU=apps',
      groupPrefixTemplate: '{consumer}',
    });
    expect(load({ TENANTRY_KAFKA_BROKERS: 'localhost:9092' }).kafka).toMatchObject({
      sasl: undefined,
      ssl: false,
      clientId: 'tenantry',
      principalTemplate: 'User:{consumer}',
    });
  });

  it('refuses unusable Kafka settings with a pointer to the variable', () => {
    expect(refused({ TENANTRY_KAFKA_BROKERS: 'localhost' })).toBe('/TENANTRY_KAFKA_BROKERS');
    expect(refused({ TENANTRY_KAFKA_BROKERS: 'k:9092', TENANTRY_KAFKA_SASL_MECHANISM: 'gssapi' })).toBe(
      '/TENANTRY_KAFKA_SASL_MECHANISM',
    );
    expect(refused({ TENANTRY_KAFKA_BROKERS: 'k:9092', TENANTRY_KAFKA_SASL_MECHANISM: 'plain' })).toBe(
      '/TENANTRY_KAFKA_SASL_USERNAME',
    );
    expect(
      refused({ TENANTRY_KAFKA_BROKERS: 'k:9092', TENANTRY_KAFKA_PRINCIPAL_TEMPLATE: 'User:fixed' }),
    ).toBe('/TENANTRY_KAFKA_PRINCIPAL_TEMPLATE');
    expect(
      refused({ TENANTRY_KAFKA_BROKERS: 'k:9092', TENANTRY_KAFKA_PRINCIPAL_TEMPLATE: '{consumer}' }),
    ).toBe('/TENANTRY_KAFKA_PRINCIPAL_TEMPLATE');
  });

  it('reads Azure Blob in the container or the prefix layout', () => {
    expect(
      load({ TENANTRY_AZURE_STORAGE_CONNECTION_STRING: 'UseDevelopmentStorage=true' }).azureBlob,
    ).toEqual({
      connectionString: 'UseDevelopmentStorage=true',
      mode: 'container',
      container: '',
    });
    expect(
      load({
        TENANTRY_AZURE_STORAGE_CONNECTION_STRING: 'UseDevelopmentStorage=true',
        TENANTRY_AZURE_BLOB_CONTAINER: 'tenant-data',
      }).azureBlob,
    ).toMatchObject({ mode: 'prefix', container: 'tenant-data' });
    expect(
      refused({
        TENANTRY_AZURE_STORAGE_CONNECTION_STRING: 'UseDevelopmentStorage=true',
        TENANTRY_AZURE_BLOB_CONTAINER: 'Bad_Name',
      }),
    ).toBe('/TENANTRY_AZURE_BLOB_CONTAINER');
  });

  it('gives a region (cell) its own cluster and storage account, the rest falling back to the defaults', () => {
    const config = load({
      TENANTRY_REGIONS: 'eu,us,ap-south',
      TENANTRY_KAFKA_BROKERS: 'kafka.shared:9093',
      TENANTRY_KAFKA_SASL_MECHANISM: 'plain',
      TENANTRY_KAFKA_SASL_USERNAME: 'tenantry',
      TENANTRY_KAFKA_SASL_PASSWORD: 'shared-secret',
      TENANTRY_KAFKA_BROKERS_EU: 'kafka-1.eu:9093,kafka-2.eu:9093',
      TENANTRY_KAFKA_SASL_PASSWORD_EU: 'eu-secret',
      TENANTRY_KAFKA_BROKERS_AP_SOUTH: 'kafka.ap-south:9093',
      TENANTRY_AZURE_STORAGE_CONNECTION_STRING_US: 'AccountName=tenantryus;AccountKey=a2V5',
    });
    expect(providerConfigFor(config, 'eu').kafka).toMatchObject({
      brokers: ['kafka-1.eu:9093', 'kafka-2.eu:9093'],
      sasl: { mechanism: 'plain', username: 'tenantry', password: 'eu-secret' },
    });
    expect(providerConfigFor(config, 'ap-south').kafka).toMatchObject({
      brokers: ['kafka.ap-south:9093'],
      sasl: { password: 'shared-secret' },
    });
    expect(providerConfigFor(config, 'us').kafka).toMatchObject({ brokers: ['kafka.shared:9093'] });
    expect(providerConfigFor(config, 'us').azureBlob).toMatchObject({
      connectionString: 'AccountName=tenantryus;AccountKey=a2V5',
    });
    expect(providerConfigFor(config, 'eu').azureBlob).toBeUndefined();
    expect(refused({ TENANTRY_KAFKA_BROKERS_EU: 'nohost' })).toBe('/TENANTRY_KAFKA_BROKERS_EU');
  });

  it('gives a region a data-plane PostgreSQL of its own (region migration copies between them)', () => {
    const config = load({
      TENANTRY_REGIONS: 'eu,us',
      TENANTRY_DATAPLANE_DATABASE_URL: 'postgres://dp.eu/tenantry_dataplane',
      TENANTRY_DATAPLANE_DATABASE_URL_US: 'postgres://dp.us/tenantry_dataplane',
    });
    expect(config.providers).toEqual({
      dataplaneDatabaseUrl: 'postgres://dp.eu/tenantry_dataplane',
      dataplaneByRegion: { us: 'postgres://dp.us/tenantry_dataplane' },
    });
    expect(load({}).providers.dataplaneByRegion).toEqual({});
    // Where another region's PostgreSQL reaches this data plane's (an agent's reader for a region migration).
    expect(
      load({ TENANTRY_DATAPLANE_PEER_ADDRESS: 'dp.eu.example:5432' }).providers.dataplanePeerAddress,
    ).toBe('dp.eu.example:5432');
  });
});
