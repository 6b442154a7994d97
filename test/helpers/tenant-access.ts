import { randomBytes } from 'node:crypto';
import {
  BlobServiceClient,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from '@azure/storage-blob';
import kafkajs from 'kafkajs';
import { AZURITE_ACCOUNT, AZURITE_KEY, type Azurite } from '../infra/azurite.js';
import type { KafkaBroker } from '../infra/kafka-broker.js';

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
