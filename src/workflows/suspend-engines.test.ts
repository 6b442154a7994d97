import { randomBytes } from 'node:crypto';
import {
  BlobServiceClient,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from '@azure/storage-blob';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cellManifest,
  deploymentManifests,
  startController,
  type TestController,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { finished, startWorkflowEngine } from '../../test/helpers/workflows.js';
import {
  AZURITE_ACCOUNT,
  AZURITE_KEY,
  type Azurite,
  azuriteUnavailableReason,
  startAzurite,
} from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { type KafkaBroker, kafkaUnavailableReason, startKafkaBroker } from '../../test/infra/kafka-broker.js';
import { lifecycleWorkflowId } from './start-lifecycle-workflow.js';

const { Kafka, logLevel } = kafkajs;

// Suspend and resume (issue 18) on a real Kafka broker and on Azurite: a real consumer of the
// tenant's and its SAS token are refused while the tenant is suspended, and work again after resume.
const unavailable = skipReason(
  'suspend/resume on Kafka and Azurite',
  (await kafkaUnavailableReason()) ?? azuriteUnavailableReason(),
);

const customer = `se${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const resource = (spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'IntegrationResource',
  metadata: {},
  spec,
});
const fx = useControllerTestDatabase();

describe.skipIf(unavailable)('suspend and resume on a real Kafka broker and Azurite', () => {
  let broker: KafkaBroker;
  let azurite: Azurite;
  let c: TestController;

  beforeAll(async () => {
    [broker, azurite] = await Promise.all([startKafkaBroker({ users: [deployment] }), startAzurite()]);
    await fx.registry.apply(fx.ctx, [
      cellManifest(`${customer}-cell`),
      ...deploymentManifests(customer, 'plan'),
      resource({
        scope: { deployment },
        type: 'kafka-topic',
        kafkaTopic: {
          domain: 'supply-chain',
          subdomain: 'transactions',
          event: 'order-proposals',
          version: 'v1',
          access: 'pub',
          partitions: 1,
          consumers: [deployment],
        },
      }),
      resource({ scope: { deployment }, type: 'blob-container' }),
    ]);
    c = await startController(fx.t, {
      env: {
        TENANTRY_KAFKA_BROKERS: broker.brokers,
        TENANTRY_KAFKA_SASL_MECHANISM: 'PLAIN',
        TENANTRY_KAFKA_SASL_USERNAME: broker.username,
        TENANTRY_KAFKA_SASL_PASSWORD: broker.password,
        TENANTRY_AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      },
    });
  }, 300_000);

  afterAll(async () => {
    await c?.stop();
    await Promise.all([broker?.stop(), azurite?.stop()]);
  });

  const as = (user: string, password: string) =>
    new Kafka({
      brokers: [broker.brokers],
      sasl: { mechanism: 'plain', username: user, password },
      logLevel: logLevel.NOTHING,
    });

  /** The first message a fresh consumer (in the deployment's group prefix) reads, or why it was refused. */
  async function consume(topic: string): Promise<string> {
    const consumer = as(deployment, broker.users[deployment]!).consumer({
      groupId: `${deployment}.${randomBytes(3).toString('hex')}`,
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

  async function transition(action: 'suspend' | 'resume'): Promise<void> {
    const obj = await fx.registry.transition(fx.ctx, tenant, action);
    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    try {
      expect(
        await finished(fx.t, lifecycleWorkflowId(obj.metadata.uuid, obj.metadata.generation), 60_000),
      ).toMatchObject({ state: 'Succeeded' });
    } finally {
      await e.stop();
    }
  }

  it('while suspended a real consumer and a SAS token are refused; after resume both work again', {
    timeout: 300_000,
  }, async () => {
    const names = await until(
      'topic and container Ready',
      async () => {
        const r = await fx.t.owner.query<{ type: string; physical_name: string; phase: string }>(
          `select spec ->> 'type' as type, physical_name, phase from integration_resources`,
        );
        return r.rows.every((x) => x.phase === 'Ready') && r.rows.length === 2
          ? Object.fromEntries(r.rows.map((x) => [x.type, x.physical_name]))
          : undefined;
      },
      120_000,
    );
    const topic = names['kafka-topic']!;
    const containerName = names['blob-container']!;

    const producer = as(broker.username, broker.password).producer();
    await producer.connect();
    await producer.send({ topic, messages: [{ value: 'order proposal' }] });
    await producer.disconnect();

    // The tenant's apps hold a SAS token signed against the container's stored access policy.
    const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
    const container = service.getContainerClient(containerName);
    await container.setAccessPolicy(undefined, [
      {
        id: 'apps',
        accessPolicy: { permissions: 'r', expiresOn: new Date(Date.now() + 86_400_000) },
      },
    ]);
    await container.getBlockBlobClient('report.csv').upload('a,b\n', 4);
    const sas = generateBlobSASQueryParameters(
      { containerName, blobName: 'report.csv', identifier: 'apps' },
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
    ).toString();
    const read = async () => (await fetch(`${container.getBlobClient('report.csv').url}?${sas}`)).status;

    // A fresh broker may not have its group coordinator ready yet: the first read is polled.
    await expect.poll(() => consume(topic), { timeout: 30_000 }).toBe('order proposal');
    expect(await read()).toBe(200);

    await transition('suspend');
    const refusal = await consume(topic);
    expect(refusal).toMatch(/^refused: .*AUTHORIZATION_FAILED/);
    await expect.poll(read, { timeout: 10_000 }).toBe(403);

    await transition('resume');
    await expect.poll(() => consume(topic), { timeout: 20_000 }).toBe('order proposal');
    await expect.poll(read, { timeout: 10_000 }).toBe(200);
    // Resume gave back exactly the policy that was there.
    expect((await container.getAccessPolicy()).signedIdentifiers.map((i) => i.id)).toEqual(['apps']);

    // The embedded default: the cell's agent is the in-process one, which runs these same providers
    // (`npm start`; Circle K's circlek-eu-prod kept its Kafka readers while suspended).
    await fx.t.owner.query(
      `insert into cell_agents (cell_id, session_id, name, embedded, credential_expires_at, heartbeat_interval_ms)
       select id, 'embedded-test', 'embedded', true, now() + interval '1 hour', 10000 from cells where slug = $1`,
      [`${customer}-cell`],
    );
    await transition('suspend');
    expect(await consume(topic)).toMatch(/^refused: .*AUTHORIZATION_FAILED/);
    await expect.poll(read, { timeout: 10_000 }).toBe(403);
    await transition('resume');
    await expect.poll(() => consume(topic), { timeout: 20_000 }).toBe('order proposal');
    await expect.poll(read, { timeout: 10_000 }).toBe(200);
  });
});
