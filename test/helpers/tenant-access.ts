import { randomBytes } from 'node:crypto';
import {
  BlobServiceClient,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from '@azure/storage-blob';
import kafkajs from 'kafkajs';
import type pg from 'pg';
import { expect } from 'vitest';
import {
  AZURITE_ACCOUNT,
  AZURITE_KEY,
  type Azurite,
  azuriteUnavailableReason,
  startAzurite,
} from '../infra/azurite.js';
import { skipReason } from '../infra/engines.js';
import { type KafkaBroker, kafkaUnavailableReason, startKafkaBroker } from '../infra/kafka-broker.js';
import { until } from './controller.js';

const { Kafka, logLevel } = kafkajs;

/**
 * What a suspended tenant's apps see (issue 18), on a real Kafka broker and Azurite: a consumer of
 * the tenant's and a SAS token signed against its container's stored access policy.
 */
const as = (broker: KafkaBroker, user: string, password: string) =>
  new Kafka({
    brokers: [broker.brokers],
    sasl: { mechanism: 'plain', username: user, password },
    logLevel: logLevel.NOTHING,
  });

/** A topic the deployment itself reads and a container, both scoped to `deployment`. */
export function topicAndContainer(deployment: string): unknown[] {
  const resource = (spec: Record<string, unknown>) => ({
    apiVersion: 'tenantry.dev/v1',
    kind: 'IntegrationResource',
    metadata: {},
    spec: { scope: { deployment }, ...spec },
  });
  return [
    resource({
      type: 'kafka-topic',
      kafkaTopic: {
        ...{ domain: 'supply-chain', subdomain: 'transactions', event: 'order-proposals' },
        ...{ version: 'v1', access: 'pub', partitions: 1, consumers: [deployment] },
      },
    }),
    resource({ type: 'blob-container' }),
  ];
}

/** Why a test of `what` on Kafka and Azurite skips (undefined: both run here). */
export async function kafkaAndAzuriteUnavailable(what: string): Promise<string | undefined> {
  return skipReason(what, (await kafkaUnavailableReason()) ?? azuriteUnavailableReason());
}

/** A Kafka broker and an Azurite account for a tenant's apps, started side by side. */
export interface TenantEngines {
  broker: KafkaBroker;
  azurite: Azurite;
  /** Their provider variables, as `tenantry serve` and `tenantry agent` take them. */
  env: Record<string, string>;
  /** probeTenant on them, as the deployment they were started for. */
  probe(owner: pg.Pool): Promise<TenantProbe>;
  stop(): Promise<void>;
}

/** The broker (`deployment` one of its users) and the Azurite account of a suspension test. */
export async function startTenantEngines(deployment: string): Promise<TenantEngines> {
  const [broker, azurite] = await Promise.all([startKafkaBroker({ users: [deployment] }), startAzurite()]);
  return {
    broker,
    azurite,
    env: {
      TENANTRY_KAFKA_BROKERS: broker.brokers,
      TENANTRY_KAFKA_SASL_MECHANISM: 'PLAIN',
      TENANTRY_KAFKA_SASL_USERNAME: broker.username,
      TENANTRY_KAFKA_SASL_PASSWORD: broker.password,
      TENANTRY_AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
    },
    probe: (owner) => probeTenant(owner, broker, azurite, deployment),
    stop: async () => {
      await Promise.all([broker.stop(), azurite.stop()]);
    },
  };
}

/** Writes one message to `topic` as the broker's super user. */
export async function produce(broker: KafkaBroker, topic: string, value: string): Promise<void> {
  const producer = as(broker, broker.username, broker.password).producer();
  await producer.connect();
  await producer.send({ topic, messages: [{ value }] });
  await producer.disconnect();
}

/** The first message a fresh consumer of `user` (in its group prefix) reads, or `refused: <why>`. */
export async function consume(broker: KafkaBroker, user: string, topic: string): Promise<string> {
  const consumer = as(broker, user, broker.users[user]!).consumer({
    groupId: `${user}.${randomBytes(3).toString('hex')}`,
    retry: { retries: 0, restartOnFailure: async () => false },
  });
  const refused = (e: unknown) => {
    const err = e as { type?: string; name?: string; originalError?: { type?: string } };
    return `refused: ${err.type ?? err.originalError?.type ?? err.name}`;
  };
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    return await new Promise<string>((resolve) => {
      consumer.on(consumer.events.CRASH, (e) => resolve(refused(e.payload.error)));
      void consumer
        .run({ eachMessage: async ({ message }) => resolve(String(message.value)) })
        .catch((e: unknown) => resolve(refused(e)));
    });
  } catch (e) {
    return refused(e);
  } finally {
    await consumer.disconnect();
  }
}

/**
 * Gives the container a stored access policy `apps` and a blob, as the tenant's apps use it; returns
 * the container and a read of the blob with a SAS token signed against that policy (its HTTP status).
 */
export async function sasReader(azurite: Azurite, containerName: string) {
  const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(
    containerName,
  );
  await container.setAccessPolicy(undefined, [
    { id: 'apps', accessPolicy: { permissions: 'r', expiresOn: new Date(Date.now() + 86_400_000) } },
  ]);
  await container.getBlockBlobClient('report.csv').upload('a,b\n', 4);
  const sas = generateBlobSASQueryParameters(
    { containerName, blobName: 'report.csv', identifier: 'apps' },
    new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
  ).toString();
  const read = async () => (await fetch(`${container.getBlobClient('report.csv').url}?${sas}`)).status;
  return { container, read };
}

/** A tenant's topic and container as its apps use them: a consumer of `user`'s and a SAS read. */
export interface TenantProbe {
  topic: string;
  container: ReturnType<BlobServiceClient['getContainerClient']>;
  consume(): Promise<string>;
  read(): Promise<number>;
}

/**
 * Waits until the database's only two resources (a topic and a container) are Ready, writes a
 * message and a blob with a SAS token signed against a stored access policy, and sees both work.
 */
async function probeTenant(
  owner: pg.Pool,
  broker: KafkaBroker,
  azurite: Azurite,
  user: string,
): Promise<TenantProbe> {
  const names = await until(
    'topic and container Ready',
    async () => {
      const r = await owner.query<{ type: string; physical_name: string; phase: string }>(
        `select spec ->> 'type' as type, physical_name, phase from integration_resources`,
      );
      return r.rows.every((x) => x.phase === 'Ready') && r.rows.length === 2
        ? Object.fromEntries(r.rows.map((x) => [x.type, x.physical_name]))
        : undefined;
    },
    120_000,
  );
  const topic = names['kafka-topic']!;
  await produce(broker, topic, 'order proposal');
  const { container, read } = await sasReader(azurite, names['blob-container']!);
  const probe = { topic, container, consume: () => consume(broker, user, topic), read };
  // A fresh broker may not have its group coordinator ready yet: the first read is polled.
  await expect.poll(probe.consume, { timeout: 30_000 }).toBe('order proposal');
  expect(await read()).toBe(200);
  return probe;
}

/** The consumer is refused (AUTHORIZATION_FAILED) and the SAS read is 403: at once, or `within` ms. */
export async function expectRefused(p: TenantProbe, within?: number): Promise<void> {
  const refused = /^refused: .*AUTHORIZATION_FAILED/;
  if (within === undefined) expect(await p.consume()).toMatch(refused);
  else await expect.poll(p.consume, { timeout: within }).toMatch(refused);
  await expect.poll(p.read, { timeout: within ?? 10_000 }).toBe(403);
}

/** Both work again, and the container holds exactly the policy it had. */
export async function expectWorking(p: TenantProbe, within = 20_000): Promise<void> {
  await expect.poll(p.consume, { timeout: within }).toBe('order proposal');
  await expect.poll(p.read, { timeout: within }).toBe(200);
  expect((await p.container.getAccessPolicy()).signedIdentifiers.map((i) => i.id)).toEqual(['apps']);
}
