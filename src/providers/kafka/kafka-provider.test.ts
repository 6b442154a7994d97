import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Admin, Kafka as KafkaClient } from 'kafkajs';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipReason } from '../../../test/infra/engines.js';
import {
  freePort,
  type KafkaBroker,
  kafkaUnavailableReason,
  startKafkaBroker,
} from '../../../test/infra/kafka-broker.js';
import { type KafkaConfig, loadConfig } from '../../config/config.js';
import { type DesiredResource, ProviderError } from '../provider.js';
import { createKafkaProvider, type KafkaTopicProvider } from './index.js';

const {
  Kafka,
  logLevel,
  AclOperationTypes: Op,
  AclPermissionTypes,
  AclResourceTypes,
  ConfigResourceTypes,
  ResourcePatternTypes,
} = kafkajs;

const unavailable = skipReason('Kafka provider tests', await kafkaUnavailableReason());

// Seed 000: circlek-eu-prod-plan's topic, read by the two Store deployments.
const PLAN = 'f1a2b3c4-d5e6-4f7a-8b9c-0d1e2f3a4b5c';
const SEED_TOPIC = `${PLAN}.supply-chain.transactions.order-proposals.v1.pub`;
const STORE_PL = 'circlek-eu-prod-store-pl';
const STORE_ES = 'circlek-eu-prod-store-es';

/** kafkajs' enums are plain objects: names for the ACL operations and pattern types tests print. */
const opName = (n: number) => Object.entries(Op).find(([, v]) => v === n)?.[0];
const patternName = (n: number) => Object.entries(ResourcePatternTypes).find(([, v]) => v === n)?.[0];

function topic(
  name: string,
  spec: Partial<NonNullable<DesiredResource['kafkaTopic']>> = {},
): DesiredResource {
  return {
    id: randomUUID(),
    type: 'kafka-topic',
    tenantId: '6846a7a4-4e09-41a8-918c-9c8e2aa938ac',
    tenantSlug: 'circlek-eu-prod',
    scopeSlug: 'circlek-eu-prod-plan',
    physicalName: name,
    kafkaTopic: { partitions: 3, replicationFactor: 1, retentionMs: 86_400_000, consumers: [], ...spec },
  };
}

/**
 * The broker answers reads from its metadata cache, which shows a committed change a moment later:
 * reads right after a change made behind the provider's back, or after a delete (which does not read
 * back), poll briefly.
 */
const POLL = { timeout: 5000, interval: 50 };

/** A fresh topic name per test, in the seed-000 form. */
const fresh = (event: string) => `${randomUUID()}.supply-chain.transactions.${event}.v1.pub`;

async function rejection(p: Promise<unknown>): Promise<ProviderError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProviderError);
  return err as ProviderError;
}

describe.skipIf(unavailable)('Kafka topic provider (real KRaft broker)', () => {
  let broker: KafkaBroker;
  let config: KafkaConfig;
  let provider: KafkaTopicProvider;
  let kafka: KafkaClient;
  let admin: Admin;

  beforeAll(async () => {
    broker = await startKafkaBroker({ users: [STORE_PL, STORE_ES, 'outsider'] });
    console.log(`Kafka broker ready in ${broker.startMillis} ms`);
    // Through loadConfig, as `tenantry serve` does.
    config = loadConfig(
      {},
      {
        TENANTRY_KAFKA_BROKERS: broker.brokers,
        TENANTRY_KAFKA_SASL_MECHANISM: 'PLAIN',
        TENANTRY_KAFKA_SASL_USERNAME: broker.username,
        TENANTRY_KAFKA_SASL_PASSWORD: broker.password,
      },
    ).kafka!;
    provider = createKafkaProvider(config);
    kafka = new Kafka({
      brokers: [broker.brokers],
      sasl: { mechanism: 'plain', username: broker.username, password: broker.password },
      logLevel: logLevel.NOTHING,
    });
    admin = kafka.admin();
    await admin.connect();
  });

  afterAll(async () => {
    await admin?.disconnect();
    await provider?.close();
    await broker?.stop();
  });

  async function partitions(name: string): Promise<number> {
    const md = await admin.fetchTopicMetadata({ topics: [name] });
    return md.topics[0]!.partitions.length;
  }

  async function retention(name: string): Promise<string | undefined> {
    const res = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name, configNames: ['retention.ms'] }],
    });
    return res.resources[0]!.configEntries.find((e) => e.configName === 'retention.ms')?.configValue;
  }

  /** `principal operation` for every ACL on the literal topic. */
  async function topicAcls(name: string): Promise<string[]> {
    const res = await admin.describeAcls({
      resourceType: AclResourceTypes.TOPIC,
      resourceName: name,
      resourcePatternType: ResourcePatternTypes.LITERAL,
      operation: Op.ANY,
      permissionType: AclPermissionTypes.ANY,
    });
    return res.resources.flatMap((r) => r.acls.map((a) => `${a.principal} ${opName(a.operation)}`)).sort();
  }

  /** The consumer-group prefixes a principal may read. */
  async function groupGrants(principal: string): Promise<string[]> {
    const res = await admin.describeAcls({
      resourceType: AclResourceTypes.GROUP,
      resourcePatternType: ResourcePatternTypes.ANY,
      principal,
      operation: Op.READ,
      permissionType: AclPermissionTypes.ALLOW,
    });
    return res.resources.map((r) => `${patternName(r.resourcePatternType)} ${r.resourceName}`).sort();
  }

  it('creates the seed-000 topic with its partitions, retention and consumer ACLs', async () => {
    const desired = topic(SEED_TOPIC, { consumers: [STORE_PL, STORE_ES] });
    expect((await provider.observe(desired)).exists).toBe(false);

    const observed = await provider.ensure(desired);
    expect(observed).toMatchObject({
      exists: true,
      drift: [],
      details: { topic: SEED_TOPIC, partitions: 3, replicationFactor: 1, retentionMs: 86_400_000 },
    });
    expect(await admin.listTopics()).toContain(SEED_TOPIC);
    expect(await partitions(SEED_TOPIC)).toBe(3);
    expect(await retention(SEED_TOPIC)).toBe('86400000');
    expect(await topicAcls(SEED_TOPIC)).toEqual([
      `User:${STORE_ES} DESCRIBE`,
      `User:${STORE_ES} READ`,
      `User:${STORE_PL} DESCRIBE`,
      `User:${STORE_PL} READ`,
    ]);
    expect(await groupGrants(`User:${STORE_PL}`)).toEqual([`PREFIXED ${STORE_PL}`]);
  });

  it('re-ensuring changes nothing: same topic, same ACLs, no drift', async () => {
    const desired = topic(SEED_TOPIC, { consumers: [STORE_PL, STORE_ES] });
    const before = await topicAcls(SEED_TOPIC);
    for (let i = 0; i < 3; i++) expect((await provider.ensure(desired)).drift).toEqual([]);
    expect((await admin.listTopics()).filter((t) => t === SEED_TOPIC)).toHaveLength(1);
    expect(await topicAcls(SEED_TOPIC)).toEqual(before);
    expect(await groupGrants(`User:${STORE_PL}`)).toEqual([`PREFIXED ${STORE_PL}`]);
    expect(await provider.observe(desired)).toMatchObject({ exists: true, drift: [] });
  });

  it('concurrent ensures of one new topic (two workers, retries) create it once, without errors', async () => {
    const name = fresh('concurrent');
    const desired = topic(name, { consumers: [STORE_PL, STORE_ES] });
    const other = createKafkaProvider(config);
    try {
      const results = await Promise.all([
        provider.ensure(desired),
        other.ensure(desired),
        provider.ensure(desired),
        other.ensure(desired),
      ]);
      for (const r of results) expect(r).toMatchObject({ exists: true, details: { partitions: 3 } });
      expect((await admin.listTopics()).filter((t) => t === name)).toHaveLength(1);
      expect(await topicAcls(name)).toEqual([
        `User:${STORE_ES} DESCRIBE`,
        `User:${STORE_ES} READ`,
        `User:${STORE_PL} DESCRIBE`,
        `User:${STORE_PL} READ`,
      ]);
      expect((await provider.observe(desired)).drift).toEqual([]);
    } finally {
      await other.close();
    }
  });

  it('the ACLs hold for real: listed consumers read with their group, others are refused', async () => {
    await provider.ensure(topic(SEED_TOPIC, { consumers: [STORE_PL, STORE_ES] }));
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic: SEED_TOPIC, messages: [{ key: 'store-1', value: 'order proposal' }] });
    await producer.disconnect();

    const as = (user: string) =>
      new Kafka({
        brokers: [broker.brokers],
        sasl: { mechanism: 'plain', username: user, password: broker.users[user]! },
        logLevel: logLevel.NOTHING,
      });
    const consumer = as(STORE_PL).consumer({ groupId: `${STORE_PL}.order-proposals` });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic: SEED_TOPIC, fromBeginning: true });
      const first = new Promise<string>((resolve) => {
        void consumer.run({ eachMessage: async ({ message }) => resolve(String(message.value)) });
      });
      expect(await first).toBe('order proposal');
    } finally {
      await consumer.disconnect();
    }

    // A group outside the consumer's prefix, and a principal that is not listed, are refused.
    const wrongGroup = as(STORE_PL).consumer({
      groupId: 'someone-else',
      retry: { retries: 0, restartOnFailure: async () => false },
    });
    const outsider = as('outsider').admin();
    await outsider.connect();
    try {
      await expect(outsider.fetchTopicMetadata({ topics: [SEED_TOPIC] })).rejects.toMatchObject({
        type: 'TOPIC_AUTHORIZATION_FAILED',
      });
      await wrongGroup.connect();
      await wrongGroup.subscribe({ topic: SEED_TOPIC, fromBeginning: true });
      const crashed = new Promise<unknown>((resolve) =>
        wrongGroup.on(wrongGroup.events.CRASH, (e) => resolve(e.payload.error)),
      );
      void wrongGroup.run({ eachMessage: async () => undefined }).catch((e: unknown) => e);
      // The broker answers FindCoordinator with GROUP_AUTHORIZATION_FAILED; kafkajs reports that
      // as "coordinator not found" (the same consumer in its own group prefix read above).
      expect(await crashed).toMatchObject({ name: 'KafkaJSGroupCoordinatorNotFound' });
    } finally {
      await outsider.disconnect();
      await wrongGroup.disconnect();
    }
  });

  it('retention changed behind its back is reported as drift and repaired, other overrides kept', async () => {
    const name = fresh('retention');
    const desired = topic(name, { retentionMs: 3_600_000 });
    await provider.ensure(desired);
    await admin.alterConfigs({
      validateOnly: false,
      resources: [
        {
          type: ConfigResourceTypes.TOPIC,
          name,
          configEntries: [
            { name: 'retention.ms', value: '60000' },
            { name: 'cleanup.policy', value: 'compact' },
          ],
        },
      ],
    });
    await expect
      .poll(async () => (await provider.observe(desired)).drift, POLL)
      .toEqual(['retention.ms: 60000 on the broker, 3600000 desired']);
    expect((await provider.ensure(desired)).drift).toEqual([]);
    expect(await retention(name)).toBe('3600000');
    const policy = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name, configNames: ['cleanup.policy'] }],
    });
    expect(policy.resources[0]!.configEntries[0]!.configValue).toBe('compact');

    // null: back to the broker default (the override is removed, not set to the default's value).
    const byDefault = topic(name, { retentionMs: null });
    expect((await provider.observe(byDefault)).drift).toEqual([
      'retention.ms: overridden to 3600000 on the topic, the broker default desired',
    ]);
    expect(await provider.ensure(byDefault)).toMatchObject({
      drift: [],
      details: { retentionMs: 604_800_000, retentionSource: 'broker default' },
    });
    // -1: unlimited.
    expect((await provider.ensure(topic(name, { retentionMs: -1 }))).details.retentionMs).toBe(-1);
  });

  it('grows partitions; refuses to shrink them with a permanent error, still fixing the rest', async () => {
    const name = fresh('partitions');
    await provider.ensure(topic(name, { partitions: 2 }));
    expect((await provider.observe(topic(name, { partitions: 5 }))).drift).toEqual([
      'partitions: 2 on the broker, 5 desired',
    ]);
    expect((await provider.ensure(topic(name, { partitions: 5 }))).details.partitions).toBe(5);
    expect(await partitions(name)).toBe(5);

    const err = await rejection(provider.ensure(topic(name, { partitions: 3, consumers: [STORE_PL] })));
    expect(err).toMatchObject({ reason: 'PartitionShrinkImpossible', retryable: false });
    expect(err.message).toContain('cannot shrink');
    expect(await partitions(name)).toBe(5);
    expect(await topicAcls(name)).toEqual([`User:${STORE_PL} DESCRIBE`, `User:${STORE_PL} READ`]);
  });

  it('a consumer no longer listed loses its ACLs; its group grant stays while it reads another topic', async () => {
    const name = fresh('consumers');
    await provider.ensure(topic(name, { consumers: [STORE_PL, STORE_ES] }));
    // A stray reader added by hand is removed as well: the list is exactly who may read.
    await admin.createAcls({
      acl: [
        {
          resourceType: AclResourceTypes.TOPIC,
          resourceName: name,
          resourcePatternType: ResourcePatternTypes.LITERAL,
          principal: 'User:stray',
          host: '*',
          operation: Op.READ,
          permissionType: AclPermissionTypes.ALLOW,
        },
      ],
    });
    const onlyPl = topic(name, { consumers: [STORE_PL] });
    await expect
      .poll(async () => (await provider.observe(onlyPl)).drift, POLL)
      .toEqual([
        `User:${STORE_ES} may read the topic but is not a listed consumer`,
        'User:stray may read the topic but is not a listed consumer',
      ]);
    await provider.ensure(onlyPl);
    expect(await topicAcls(name)).toEqual([`User:${STORE_PL} DESCRIBE`, `User:${STORE_PL} READ`]);
    // STORE_ES still reads the seed topic: its group grant stays.
    expect(await groupGrants(`User:${STORE_ES}`)).toEqual([`PREFIXED ${STORE_ES}`]);

    // A consumer that reads nothing any more loses its group grant too.
    const lonely = 'circlek-eu-uat-store-fi';
    await provider.ensure(topic(name, { consumers: [STORE_PL, lonely] }));
    expect(await groupGrants(`User:${lonely}`)).toEqual([`PREFIXED ${lonely}`]);
    await provider.ensure(onlyPl);
    await expect.poll(() => groupGrants(`User:${lonely}`), POLL).toEqual([]);
  });

  it("a suspended tenant's principals are denied the topic; resume lifts those DENY ACLs again", async () => {
    const name = fresh('suspend');
    const active = topic(name, { consumers: [STORE_ES] });
    const suspended = { ...active, suspended: true };
    await provider.ensure(active);
    const plan = 'User:circlek-eu-prod-plan';
    expect((await provider.observe(suspended)).drift).toEqual([
      `${plan} is not denied the topic while its tenant is suspended`,
      `User:${STORE_ES} is not denied the topic while its tenant is suspended`,
    ]);
    expect(await provider.ensure(suspended)).toMatchObject({ drift: [] });
    // Idempotent: a second ensure (a retry, the next resync) finds nothing to do.
    expect(await provider.ensure(suspended)).toMatchObject({ drift: [] });
    const denied = (p: string) => ['DESCRIBE', 'READ', 'WRITE'].map((o) => `${p} ${o}`);
    await expect
      .poll(() => topicAcls(name), POLL)
      .toEqual(
        [
          ...denied(plan),
          ...denied(`User:${STORE_ES}`),
          `User:${STORE_ES} DESCRIBE`,
          `User:${STORE_ES} READ`,
        ].sort(),
      );
    // Resumed: the DENY ACLs are drift, and ensure lifts them; the consumer's ALLOW ones stayed.
    await expect
      .poll(async () => (await provider.observe(active)).drift, POLL)
      .toContain(`${plan} is denied the topic but its tenant is not suspended`);
    expect(await provider.ensure(active)).toMatchObject({ drift: [] });
    await expect
      .poll(() => topicAcls(name), POLL)
      .toEqual([`User:${STORE_ES} DESCRIBE`, `User:${STORE_ES} READ`]);
  });

  it('a topic deleted behind its back is observed missing and recreated with its ACLs', async () => {
    const name = fresh('recreate');
    const desired = topic(name, { consumers: [STORE_ES] });
    await provider.ensure(desired);
    await admin.deleteTopics({ topics: [name] });
    await admin.deleteAcls({
      filters: [
        {
          resourceType: AclResourceTypes.TOPIC,
          resourceName: name,
          resourcePatternType: ResourcePatternTypes.LITERAL,
          operation: Op.ANY,
          permissionType: AclPermissionTypes.ANY,
        },
      ],
    });
    await expect
      .poll(() => provider.observe(desired), POLL)
      .toMatchObject({ exists: false, drift: [`topic ${name} does not exist`] });
    expect(await provider.ensure(desired)).toMatchObject({ exists: true, drift: [] });
    expect(await topicAcls(name)).toEqual([`User:${STORE_ES} DESCRIBE`, `User:${STORE_ES} READ`]);
  });

  it('delete removes the topic and its ACLs, and deleting again succeeds', async () => {
    const name = fresh('deleted');
    const lonely = 'circlek-us-prod-store-us';
    const desired = topic(name, { consumers: [lonely] });
    await provider.ensure(desired);
    await provider.delete(desired);
    await expect.poll(() => admin.listTopics(), POLL).not.toContain(name);
    await expect.poll(() => topicAcls(name), POLL).toEqual([]);
    await expect.poll(() => groupGrants(`User:${lonely}`), POLL).toEqual([]);
    await provider.delete(desired);
    expect((await provider.observe(desired)).exists).toBe(false);
  });

  it('a configurable principal template names the ACL principals', async () => {
    const custom = createKafkaProvider({
      ...config,
      principalTemplate: 'User:svc-{consumer}',
      groupPrefixTemplate: 'grp.{consumer}.',
    });
    try {
      const name = fresh('template');
      await custom.ensure(topic(name, { consumers: [STORE_PL] }));
      expect(await topicAcls(name)).toEqual([`User:svc-${STORE_PL} DESCRIBE`, `User:svc-${STORE_PL} READ`]);
      expect(await groupGrants(`User:svc-${STORE_PL}`)).toEqual([`PREFIXED grp.${STORE_PL}.`]);
      await custom.delete(topic(name, { consumers: [STORE_PL] }));
      await expect.poll(() => groupGrants(`User:svc-${STORE_PL}`), POLL).toEqual([]);
    } finally {
      await custom.close();
    }
  });

  it('invalid settings are permanent errors', async () => {
    const tooManyReplicas = await rejection(
      provider.ensure(topic(fresh('replicas'), { replicationFactor: 3 })),
    );
    expect(tooManyReplicas).toMatchObject({ reason: 'InvalidConfiguration', retryable: false });
    const badName = await rejection(provider.ensure(topic('no spaces allowed')));
    expect(badName).toMatchObject({ reason: 'InvalidName', retryable: false });
    const zero = await rejection(provider.ensure(topic(fresh('zero'), { partitions: 0 })));
    expect(zero).toMatchObject({ reason: 'InvalidConfiguration', retryable: false });
  });

  it('an unreachable broker is a retryable BrokerUnavailable error, and the provider recovers when it returns', async () => {
    const nowhere = createKafkaProvider(
      { ...config, brokers: [`127.0.0.1:${await freePort()}`] },
      { connectionTimeoutMs: 500, retries: 1 },
    );
    try {
      const started = Date.now();
      const err = await rejection(nowhere.observe(topic(fresh('nowhere'))));
      expect(err).toMatchObject({ reason: 'BrokerUnavailable', retryable: true });
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await nowhere.close();
    }

    // A second broker on a fixed port and kept data: stopped and started again under one provider.
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-kafka-restart-'));
    const port = await freePort();
    const password = 'restart-secret';
    let second = await startKafkaBroker({ port, dataDir, password });
    const flaky = createKafkaProvider(
      {
        ...config,
        brokers: [second.brokers],
        sasl: { mechanism: 'plain', username: second.username, password },
      },
      { connectionTimeoutMs: 500, retries: 1 },
    );
    try {
      const desired = topic(fresh('restart'), { consumers: [STORE_PL] });
      await flaky.ensure(desired);
      await second.stop();
      expect(await rejection(flaky.observe(desired))).toMatchObject({
        reason: 'BrokerUnavailable',
        retryable: true,
      });
      second = await startKafkaBroker({ port, dataDir, password });
      expect(await flaky.ensure(desired)).toMatchObject({ exists: true, drift: [] });
    } finally {
      await flaky.close();
      await second.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
    }
    // Two more broker starts: allow for a busy machine.
  }, 180_000);

  it('wrong credentials are a permanent AuthenticationFailed error', async () => {
    const wrong = createKafkaProvider({
      ...config,
      sasl: { mechanism: 'plain', username: broker.username, password: 'wrong' },
    });
    try {
      expect(await rejection(wrong.observe(topic(fresh('auth'))))).toMatchObject({
        reason: 'AuthenticationFailed',
        retryable: false,
      });
    } finally {
      await wrong.close();
    }
  });
});
