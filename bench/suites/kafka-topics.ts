/**
 * 3. Kafka topics ensured per second by the provider against raw kafkajs `createTopics`, on one real
 * single-node KRaft broker (test/infra/kafka-broker.ts) started for this suite, with the same number
 * of concurrent workers. Each provider ensure of a new topic also grants two consumers their ACLs
 * and reads back what is real; the raw side only creates the topic. Then the steady state: ensure
 * of an existing, in-sync topic (the controller's resync) against a raw metadata fetch.
 * Skipped with a reason when `java`/`mvn` are absent.
 */
import { randomBytes } from 'node:crypto';
import kafkajs from 'kafkajs';
import { createKafkaProvider } from '../../src/providers/kafka/index.js';
import type { DesiredResource } from '../../src/providers/provider.js';
import { kafkaUnavailableReason, startKafkaBroker } from '../../test/infra/kafka-broker.js';
import { closedLoop, compare } from '../lib/load.js';
import { type Row, row } from '../lib/results.js';

const { Kafka, logLevel } = kafkajs;

export async function kafkaTopicsBenchmark(): Promise<Row[]> {
  const unavailable = await kafkaUnavailableReason();
  if (unavailable) {
    console.warn(`  skipped: ${unavailable}`);
    return [];
  }
  const broker = await startKafkaBroker();
  console.log(`  broker ${broker.brokers} ready in ${broker.startMillis} ms`);
  const sasl = { mechanism: 'plain' as const, username: broker.username, password: broker.password };
  const provider = createKafkaProvider({
    brokers: [broker.brokers],
    clientId: 'tenantry-bench',
    sasl,
    ssl: false,
    principalTemplate: 'User:{consumer}',
    groupPrefixTemplate: '{consumer}',
  });
  const admin = new Kafka({ brokers: [broker.brokers], sasl, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const run = randomBytes(3).toString('hex');
  let n = 0;
  const desired = (name: string): DesiredResource => ({
    id: name,
    type: 'kafka-topic',
    tenantId: 'bench',
    tenantSlug: 'bench-eu-dev',
    scopeSlug: 'bench-eu-dev-plan',
    physicalName: name,
    kafkaTopic: {
      partitions: 1,
      replicationFactor: 1,
      retentionMs: 86_400_000,
      consumers: ['bench-eu-dev-store-a', 'bench-eu-dev-store-b'],
    },
  });
  try {
    const ensureNew = closedLoop('provider ensure (new topic + 2 consumers ACLs)', async () => {
      await provider.ensure(desired(`bench-${run}.provider.${n++}`));
    });
    // Like the provider: create, then wait until the broker's metadata shows the topic (kafkajs'
    // waitForLeaders gives up on UNKNOWN_TOPIC_OR_PARTITION when creates run concurrently).
    const rawCreate = closedLoop('raw kafkajs createTopics (new topic)', async () => {
      const topic = `bench-${run}.raw.${n++}`;
      await admin.createTopics({
        waitForLeaders: false,
        topics: [
          {
            topic,
            numPartitions: 1,
            replicationFactor: 1,
            configEntries: [{ name: 'retention.ms', value: '86400000' }],
          },
        ],
      });
      for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
        try {
          await admin.fetchTopicMetadata({ topics: [topic] });
          break;
        } catch {
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    });
    const [created, raw] = await compare(ensureNew, rawCreate);

    const steady = desired(`bench-${run}.steady`);
    await provider.ensure(steady);
    const ensureSame = closedLoop('provider ensure (existing topic, in sync)', async () => {
      const observed = await provider.ensure(steady);
      if (observed.drift.length > 0) throw new Error(`unexpected drift: ${observed.drift.join('; ')}`);
    });
    const rawMetadata = closedLoop('raw kafkajs fetchTopicMetadata', async () => {
      await admin.fetchTopicMetadata({ topics: [steady.physicalName] });
    });
    const [resync, metadata] = await compare(ensureSame, rawMetadata);
    const unit = { unit: 'topics/s' };
    return [
      row('Kafka: topics ensured vs raw createTopics', { ...created, ...unit }, { ...raw, ...unit }, null),
      row('Kafka: resync of an in-sync topic vs raw metadata fetch', resync, metadata, null),
    ];
  } finally {
    await admin.disconnect();
    await provider.close();
    await broker.stop();
  }
}
