import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { defaultDataplaneUrl } from '../../src/controller/providers.js';
import { EmbeddedDatabase } from '../../src/db/embedded-postgres.js';
import { SecretStore } from '../../src/providers/postgres/secret-store.js';
import { secretCipherFor } from '../../src/secrets/index.js';
import { type Azurite, startAzurite } from '../infra/azurite.js';
import { type KafkaBroker, startKafkaBroker } from '../infra/kafka-broker.js';
import { startController, type TestController, tempDataDir } from './controller.js';
import type { TestDatabase } from './test-database.js';

/**
 * Two regions' data planes for the region migration and failover tests (issue 19): us always has
 * a PostgreSQL server of its own; eu has one too when a test stops it (a failover), else eu is the
 * test's default data-plane server. An Azurite account per region, a Kafka broker per region when
 * asked, and a controller whose providers are configured by region over them.
 */
export interface TwoRegions {
  controller: TestController;
  /** The regions' own PostgreSQL servers (eu only with `ownEu`). */
  servers: { eu?: EmbeddedDatabase; us: EmbeddedDatabase };
  blobs: { eu: Azurite; us: Azurite };
  brokers?: { eu: KafkaBroker; us: KafkaBroker };
  /** The data-plane database of each region's server (eu's is the default one without `ownEu`). */
  euUrl: string;
  usUrl: string;
  /** The provider configuration by region, for another process (a workflow engine) to use. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startTwoRegions(
  t: TestDatabase,
  opts: {
    /** eu gets a server of its own (that the test may stop); else eu is the default data plane. */
    ownEu?: boolean;
    /** A Kafka broker per region, with these SASL users besides the admin. */
    kafkaUsers?: string[];
    /** The controller keeps its data in a folder of its own (tests that spawn engines). */
    dataDir?: boolean;
  } = {},
): Promise<TwoRegions> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-regions-'));
  await fs.chmod(dir, 0o755);
  const server = (name: string) =>
    new EmbeddedDatabase({
      clusterDir: path.join(dir, name, 'pg'),
      credentialsFile: path.join(dir, name, 'pg.password'),
      ephemeral: true,
    });
  const servers = { eu: opts.ownEu ? server('eu') : undefined, us: server('us') };
  const kafka = opts.kafkaUsers;
  const [azEu, azUs, kEu, kUs] = await Promise.all([
    startAzurite(),
    startAzurite(),
    kafka ? startKafkaBroker({ users: kafka }) : undefined,
    kafka ? startKafkaBroker({ users: kafka }) : undefined,
    servers.eu?.start(),
    servers.us.start(),
  ]);
  const blobs = { eu: azEu, us: azUs };
  const brokers = kEu && kUs ? { eu: kEu, us: kUs } : undefined;
  const dataplane = (s: EmbeddedDatabase, region: string) =>
    s.url.replace(/\/postgres$/, `/tenantry_dataplane_${region}`);
  const usUrl = dataplane(servers.us, 'us');
  const kafkaEnv = (b: KafkaBroker, suffix: string) => ({
    [`TENANTRY_KAFKA_BROKERS${suffix}`]: b.brokers,
    [`TENANTRY_KAFKA_SASL_MECHANISM${suffix}`]: 'PLAIN',
    [`TENANTRY_KAFKA_SASL_USERNAME${suffix}`]: b.username,
    [`TENANTRY_KAFKA_SASL_PASSWORD${suffix}`]: b.password,
  });
  const env: Record<string, string> = {
    ...(brokers ? { ...kafkaEnv(brokers.eu, ''), ...kafkaEnv(brokers.us, '_US') } : {}),
    TENANTRY_AZURE_STORAGE_CONNECTION_STRING: blobs.eu.connectionString,
    TENANTRY_AZURE_STORAGE_CONNECTION_STRING_US: blobs.us.connectionString,
    TENANTRY_DATAPLANE_DATABASE_URL_US: usUrl,
    ...(servers.eu
      ? {
          TENANTRY_AZURE_STORAGE_CONNECTION_STRING_EU: blobs.eu.connectionString,
          TENANTRY_DATAPLANE_DATABASE_URL_EU: dataplane(servers.eu, 'eu'),
        }
      : {}),
  };
  const controller = await startController(t, {
    env,
    ...(opts.dataDir ? { dataDir: await tempDataDir() } : {}),
  });
  return {
    controller,
    servers,
    blobs,
    brokers,
    euUrl: servers.eu ? dataplane(servers.eu, 'eu') : defaultDataplaneUrl(t.ownerUrl),
    usUrl,
    env,
    async stop() {
      await controller.stop();
      await Promise.all([
        brokers?.eu.stop(),
        brokers?.us.stop(),
        blobs.eu.stop(),
        blobs.us.stop(),
        servers.eu?.stop(),
        servers.us.stop(),
      ]);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** A manifest as `tenantry apply` takes it. */
export const doc = (kind: string, name: string | undefined, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata: name ? { name } : {},
  spec,
});

/** A shared nonprod cell of dev tenants in `region`. */
export const regionCell = (name: string, region: string) =>
  doc('Cell', name, {
    region,
    stage: 'nonprod',
    environmentTypes: ['dev'],
    tenancy: 'shared',
    capacity: { tenants: 5 },
  });

/** A pool dev tenant in eu that may live in eu and us (`extra`: its standby, …). */
export const movableTenant = (customer: string, extra: Record<string, unknown> = {}) =>
  doc('Tenant', undefined, {
    customer,
    region: 'eu',
    environmentType: 'dev',
    isolation: 'pool',
    residency: { allowedRegions: ['eu', 'us'] },
    ...extra,
  });

/**
 * A cell in eu and one in us (`<customer>-eu`, `<customer>-us`), the customer (`displayName`) and
 * its movableTenant (with `extra`).
 */
export const movableCustomer = (customer: string, displayName: string, extra?: Record<string, unknown>) => [
  regionCell(`${customer}-eu`, 'eu'),
  regionCell(`${customer}-us`, 'us'),
  doc('Customer', customer, { displayName, shortCode: customer }),
  movableTenant(customer, extra),
];

/** A tenant's pool database and blob container. */
export const databaseAndContainer = (tenant: string) => [
  doc('IntegrationResource', undefined, {
    scope: { tenant },
    type: 'database',
    database: { isolation: 'pool' },
  }),
  doc('IntegrationResource', undefined, { scope: { tenant }, type: 'blob-container' }),
];

/** The tenant's application: a connection with the resource's credentials now, on `server`. */
export async function tenantClient(t: TestDatabase, resourceId: string, server: string): Promise<pg.Client> {
  const s = await new SecretStore(t.db, secretCipherFor(t.db, t.config)).get(resourceId);
  const url = new URL(server);
  url.username = s?.username ?? '';
  url.password = s?.password ?? '';
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}
