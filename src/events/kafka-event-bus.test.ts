import { CloudEvent } from 'cloudevents';
import kafkajs from 'kafkajs';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../test/helpers/controller.js';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { skipReason } from '../../test/infra/engines.js';
import { type KafkaBroker, kafkaUnavailableReason, startKafkaBroker } from '../../test/infra/kafka-broker.js';
import { createRegistry } from '../app.js';
import { loadConfig } from '../config/config.js';
import { systemContext } from '../context/request-context.js';
import { busTopic, KafkaEventBus } from './kafka-event-bus.js';

const unavailable = skipReason('Kafka event bus', await kafkaUnavailableReason());

let broker: KafkaBroker;
let t: TestDatabase;
const buses: KafkaEventBus[] = [];

beforeAll(async () => {
  if (unavailable) return;
  broker = await startKafkaBroker();
  t = await createTestDatabase();
}, 180_000);
afterAll(async () => {
  for (const b of buses) await b.stop();
  await t?.destroy();
  await broker?.stop();
});

function bus(): KafkaEventBus {
  const config = loadConfig(
    {},
    {
      TENANTRY_KAFKA_BROKERS: broker.brokers,
      TENANTRY_KAFKA_SASL_MECHANISM: 'PLAIN',
      TENANTRY_KAFKA_SASL_USERNAME: broker.username,
      TENANTRY_KAFKA_SASL_PASSWORD: broker.password,
    },
  );
  const b = new KafkaEventBus(
    t.db,
    t.appUrl,
    config.kafka!,
    'urn:tenantry:test',
    pino({ level: 'silent' }),
    50,
  );
  buses.push(b);
  return b;
}

describe.skipIf(unavailable)('event bus on a real Kafka broker', () => {
  it('publishes every event once, per tenant in sequence order, keyed by tenant, as CloudEvents', async () => {
    const registry = createRegistry(t.db, t.config);
    const ctx = systemContext('test');
    await registry.apply(ctx, [customerDoc('busco'), tenantDoc('busco')]);
    const tenant = (await registry.list(ctx, 'Tenant', { filters: {}, limit: 10 })).items[0]!;
    // Each lifecycle action starts a workflow; the next one is refused until it ends.
    for (const verb of ['suspend', 'resume', 'suspend'] as const) {
      await registry.transition(ctx, tenant.metadata.name, verb);
      await settleWorkflows(t);
    }

    // Two publishers: the advisory lock lets one publish, so nothing is sent twice or out of order.
    const [a, b] = [bus(), bus()];
    await a.start();
    await b.start();
    await until('outbox published', async () => {
      const r = await t.owner.query(
        'select count(*)::int as n from outbox_events where published_at is null',
      );
      return r.rows[0].n === 0;
    });
    expect(a.published + b.published).toBe(
      (await t.owner.query('select count(*)::int as n from outbox_events')).rows[0].n,
    );

    const kafka = new kafkajs.Kafka({
      brokers: [broker.brokers],
      sasl: { mechanism: 'plain', username: broker.username, password: broker.password },
      logLevel: kafkajs.logLevel.NOTHING,
    });
    const consumer = kafka.consumer({ groupId: `bus-test-${Date.now()}` });
    await consumer.connect();
    await consumer.subscribe({ topic: busTopic('Tenant'), fromBeginning: true });
    const seen: { key: string; event: Record<string, unknown> }[] = [];
    await consumer.run({
      eachMessage: async ({ message }) => {
        seen.push({ key: String(message.key), event: JSON.parse(String(message.value)) });
      },
    });
    try {
      await until('tenant events consumed', async () => seen.length >= 4, 30_000);
    } finally {
      await consumer.disconnect();
    }
    const mine = seen.filter((m) => m.event.tenantid === tenant.metadata.uuid);
    expect(mine.map((m) => m.event.type)).toEqual([
      'dev.tenantry.tenant.created.v1',
      'dev.tenantry.tenant.suspended.v1',
      'dev.tenantry.tenant.resumed.v1',
      'dev.tenantry.tenant.suspended.v1',
    ]);
    expect(mine.every((m) => m.key === tenant.metadata.uuid)).toBe(true);
    const sequences = mine.map((m) => Number(m.event.sequence));
    expect(sequences).toEqual([...sequences].sort((x, y) => x - y));
    for (const m of mine) expect(new CloudEvent(m.event as never).validate()).toBe(true);
  }, 120_000);
});
