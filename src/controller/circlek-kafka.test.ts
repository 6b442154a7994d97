import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, statuses, type TestController, until } from '../../test/helpers/controller.js';
import { circleK } from '../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { skipReason } from '../../test/infra/engines.js';
import { type KafkaBroker, kafkaUnavailableReason, startKafkaBroker } from '../../test/infra/kafka-broker.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';

/**
 * What a platform engineer sees after `tenantry apply -f examples/circlek/`: with a real Kafka broker
 * configured, every tenant, deployment, topic, container and database turns Ready, and the topics
 * exist on the broker under their seed-000 names with the consumers' read ACLs.
 */
const unavailable = skipReason('Circle K end-to-end with Kafka', await kafkaUnavailableReason());
const SEED_TOPIC = 'f1a2b3c4-d5e6-4f7a-8b9c-0d1e2f3a4b5c.supply-chain.transactions.order-proposals.v1.pub';

let broker: KafkaBroker;
let t: TestDatabase;
let c: TestController;

beforeAll(async () => {
  if (unavailable) return;
  broker = await startKafkaBroker();
  t = await createTestDatabase();
  c = await startController(t, {
    env: {
      TENANTRY_KAFKA_BROKERS: broker.brokers,
      TENANTRY_KAFKA_SASL_MECHANISM: 'PLAIN',
      TENANTRY_KAFKA_SASL_USERNAME: broker.username,
      TENANTRY_KAFKA_SASL_PASSWORD: broker.password,
    },
  });
}, 180_000);
afterAll(async () => {
  await c?.stop();
  await t?.destroy();
  await broker?.stop();
});

describe.skipIf(unavailable)('Circle K on a real Kafka broker', () => {
  it('turns every tenant, deployment and integration resource Ready', async () => {
    await createRegistry(t.db, t.config).apply(systemContext('test'), circleK());
    const rows = await until(
      'every object Ready',
      async () => {
        const all = await statuses(t.owner);
        return all.every((r) => r.phase === 'Ready') && all;
      },
      120_000,
    );
    const topics = rows.filter((r) => r.kind === 'IntegrationResource' && r.slug.endsWith('.pub'));
    expect(topics.length).toBeGreaterThanOrEqual(6);

    const kafka = new kafkajs.Kafka({
      brokers: [broker.brokers],
      sasl: { mechanism: 'plain', username: broker.username, password: broker.password },
      logLevel: kafkajs.logLevel.NOTHING,
    });
    const admin = kafka.admin();
    await admin.connect();
    try {
      const names = await admin.listTopics();
      expect(names).toContain(SEED_TOPIC);
      const acls = await admin.describeAcls({
        resourceType: kafkajs.AclResourceTypes.TOPIC,
        resourceName: SEED_TOPIC,
        resourcePatternType: kafkajs.ResourcePatternTypes.LITERAL,
        operation: kafkajs.AclOperationTypes.ANY,
        permissionType: kafkajs.AclPermissionTypes.ANY,
      });
      const principals = acls.resources.flatMap((r) => r.acls.map((a) => a.principal));
      expect(principals).toEqual(expect.arrayContaining(['User:circlek-eu-prod-store-pl']));
    } finally {
      await admin.disconnect();
    }
  }, 180_000);
});
