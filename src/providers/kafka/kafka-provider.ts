/**
 * `kafka-topic` resources on a Kafka cluster through the kafkajs admin client.
 *
 * What Tenantry owns on the cluster, per resource:
 *  - the topic named exactly `physicalName` (`{scope-uuid}.{domain}.{subdomain}.{event}.{version}.{access}`),
 *    its partition count, replication factor and `retention.ms` override;
 *  - ALLOW READ and DESCRIBE ACLs on that literal topic for each consumer deployment's principal
 *    (`principalTemplate`, default `User:{consumer}`); such ACLs of anyone else on the topic are
 *    removed, so the listed consumers are exactly who may read;
 *  - ALLOW READ on the consumer groups prefixed `groupPrefixTemplate` (default the consumer's slug),
 *    removed once the principal reads no topic any more.
 *  - while the tenant is suspended (`desired.suspended`): DENY READ, WRITE and DESCRIBE on the topic for
 *    the tenant's principals (its consumers and its scope), which outweigh any ALLOW, so its clients
 *    are refused at once; an active tenant's principals hold no such DENY (a resume lifts them).
 * Growing partitions and changing retention are corrected in place; shrinking partitions or changing
 * the replication factor is impossible through the admin API and is a permanent ProviderError (the
 * rest is still corrected).
 */
import type {
  AclEntry,
  AclFilter,
  Admin,
  ConfigEntries,
  ITopicMetadata,
  Kafka as KafkaClient,
} from 'kafkajs';
import type { KafkaConfig } from '../../config/config.js';
import type { AccessControl, AccessGrant } from '../access.js';
import {
  type DesiredResource,
  type ObservedResource,
  ProviderError,
  type ResourceProvider,
} from '../provider.js';
import { kafkaErrorType, toProviderError } from './kafka-errors.js';
import { type KafkajsModule, kafkajs as lazyKafkajs } from './kafkajs.js';

// kafkajs' protocol constants, bound when the first admin call loads kafkajs: every use
// below runs inside or after such a call.
let Op: KafkajsModule['AclOperationTypes'];
let Permission: KafkajsModule['AclPermissionTypes'];
let Resource: KafkajsModule['AclResourceTypes'];
let ConfigResourceTypes: KafkajsModule['ConfigResourceTypes'];
let ConfigSource: KafkajsModule['ConfigSource'];
let Pattern: KafkajsModule['ResourcePatternTypes'];

export interface KafkaProviderOptions {
  /** Milliseconds to open a connection (default 3000). */
  connectionTimeoutMs?: number;
  /** Milliseconds a request may take (default 15000). */
  requestTimeoutMs?: number;
  /** kafkajs' own retries per call before a BrokerUnavailable error (default 2); the controller backs off. */
  retries?: number;
}

/** Kafka's topic name rule (legal characters, at most 249). */
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;
const RETENTION = 'retention.ms';

interface TopicState {
  partitions: number;
  replicationFactor: number;
  /** Effective retention.ms, and whether the topic overrides the broker default. */
  retentionMs: number | null;
  retentionOverridden: boolean;
  /** The topic's own config overrides (kept when retention is changed). */
  overrides: { name: string; value: string }[];
  /** Principals holding Tenantry-style ALLOW READ / DESCRIBE ACLs on the topic. */
  readers: Map<string, Set<number>>;
  /** Principals holding DENY ACLs (READ, WRITE, DESCRIBE from any host) on the topic. */
  denials: Map<string, Set<number>>;
  /** Principals (of the consumers asked about) holding READ on their consumer-group prefix. */
  groupReaders: Set<string>;
}

interface ConsumerGrant {
  consumer: string;
  principal: string;
  groupPrefix: string;
}

export class KafkaTopicProvider implements ResourceProvider, AccessControl {
  readonly type = 'kafka-topic' as const;
  readonly name = 'kafka';
  private kafka: Promise<KafkaClient> | undefined;
  private admin: Promise<Admin> | undefined;
  private readonly principalPattern: RegExp;

  constructor(
    private readonly config: KafkaConfig,
    private readonly options: KafkaProviderOptions = {},
  ) {
    const [before, after] = config.principalTemplate.split('{consumer}');
    this.principalPattern = new RegExp(`^${escapeRegExp(before ?? '')}(.+)${escapeRegExp(after ?? '')}$`);
  }

  async observe(desired: DesiredResource): Promise<ObservedResource> {
    const spec = this.validate(desired);
    return this.call('observe topic', async (admin) => {
      const grants = this.grants(spec.consumers);
      return this.report(desired, await this.readTopic(admin, desired.physicalName, grants));
    });
  }

  async ensure(desired: DesiredResource): Promise<ObservedResource> {
    const spec = this.validate(desired);
    const topic = desired.physicalName;
    return this.call('ensure topic', async (admin) => {
      const grants = this.grants(spec.consumers);
      let state = await this.readTopic(admin, topic, grants);
      let changed = false;
      if (!state) {
        // ACLs may name a topic that does not exist yet: grant them while the topic is created, so a
        // new topic costs one round of controller writes, not two; the consumers are its intended
        // readers either way. All of them, without reading first: creating an existing ACL changes
        // nothing, and a read here may still show ACLs deleted a moment ago (the broker's cache lags).
        const acls =
          grants.length > 0
            ? admin.createAcls({
                acl: grants.flatMap((g) => [
                  topicAcl(topic, g.principal, Op.READ),
                  topicAcl(topic, g.principal, Op.DESCRIBE),
                  groupAcl(g.groupPrefix, g.principal),
                ]),
              })
            : undefined;
        // false: another worker created it meanwhile; the wait below sees it either way.
        const created = admin.createTopics({
          // kafkajs' own wait fails when the broker's metadata lags the controller (seen under
          // concurrent creates: UNKNOWN_TOPIC_OR_PARTITION right after success); wait below instead.
          waitForLeaders: false,
          topics: [
            {
              topic,
              numPartitions: spec.partitions,
              replicationFactor: spec.replicationFactor,
              configEntries:
                spec.retentionMs === null ? [] : [{ name: RETENTION, value: String(spec.retentionMs) }],
            },
          ],
        });
        await Promise.all([acls, created]);
        const visible = await this.waitForTopic(admin, topic, grants);
        state = (await this.settle(admin, desired, grants, visible, 0)) ?? visible;
      }
      const impossible: string[] = [];
      if (state.partitions < spec.partitions) {
        await admin.createPartitions({ topicPartitions: [{ topic, count: spec.partitions }] });
        changed = true;
      } else if (state.partitions > spec.partitions) {
        impossible.push(
          `topic ${topic} has ${state.partitions} partitions and Kafka cannot shrink a topic to ${spec.partitions}; ` +
            `keep ${state.partitions} or more, or delete and recreate the resource`,
        );
      }
      if (state.replicationFactor !== spec.replicationFactor) {
        impossible.push(
          `topic ${topic} has replication factor ${state.replicationFactor}, ${spec.replicationFactor} desired; ` +
            'changing it needs a partition reassignment, which Tenantry does not do',
        );
      }
      if (!retentionInSync(spec.retentionMs, state)) {
        const others = state.overrides.filter((o) => o.name !== RETENTION);
        await admin.alterConfigs({
          validateOnly: false,
          resources: [
            {
              type: ConfigResourceTypes.TOPIC,
              name: topic,
              // AlterConfigs (not incremental) replaces the topic's overrides: send the others back.
              configEntries:
                spec.retentionMs === null
                  ? others
                  : [...others, { name: RETENTION, value: String(spec.retentionMs) }],
            },
          ],
        });
        changed = true;
      }
      if (await this.syncAcls(admin, topic, grants, state)) changed = true;
      if (await this.syncDenials(admin, desired, state)) changed = true;
      // Read back what is real after a change; an in-sync topic (the resync case) needs no second read.
      const after = changed
        ? await this.settle(
            admin,
            desired,
            grants,
            await this.readTopic(admin, topic, grants),
            impossible.length,
          )
        : state;
      if (impossible.length > 0) {
        const reason =
          state.partitions > spec.partitions ? 'PartitionShrinkImpossible' : 'ReplicationFactorChange';
        throw new ProviderError(`Kafka: ${impossible.join('; ')}`, reason, false);
      }
      return this.report(desired, after);
    });
  }

  async delete(desired: DesiredResource): Promise<void> {
    const topic = this.validName(desired.physicalName);
    await this.call('delete topic', async (admin) => {
      const { readers } = await this.topicAcls(admin, topic);
      const principals = new Set([
        ...readers.keys(),
        ...this.grants(desired.kafkaTopic?.consumers ?? []).map((g) => g.principal),
      ]);
      try {
        await admin.deleteTopics({ topics: [topic] });
      } catch (err) {
        if (kafkaErrorType(err) !== 'UNKNOWN_TOPIC_OR_PARTITION') throw err;
      }
      // Every ACL on the literal name: a topic recreated later under it must start with none.
      await admin.deleteAcls({ filters: [topicFilter(topic)] });
      await this.dropUnusedGroupGrants(admin, topic, principals);
    });
  }

  /**
   * The principals of a topic's tenant — its consumers and its scope (the producing deployment or
   * tenant): a suspension denies them, a resume lifts their DENY ACLs on the topic, all of them,
   * also one that was there before the suspension. That is what the reconcile of the active tenant
   * does too (to Tenantry they are its consumers and producer, and may use it), so a resume leaves the
   * topic as an active tenant's whoever denied first: a DENY re-added by a reconcile that read the
   * tenant suspended just before the resume cannot outlive the resume (seen in CI: the next
   * suspension recorded nobody to lift, and the tenant stayed denied after its resume).
   */
  async observeAccess(desired: DesiredResource): Promise<AccessGrant> {
    const topic = this.validName(desired.physicalName);
    return { provider: this.name, topic, deny: this.tenantPrincipals(desired) };
  }

  /** DENY READ, WRITE and DESCRIBE on the topic to each principal of the grant: clients stop. */
  async revokeAccess(_desired: DesiredResource, grant: AccessGrant): Promise<void> {
    if (deniedPrincipals(grant).length === 0) return;
    await this.call('deny topic access', (admin) =>
      admin.createAcls({ acl: denyEntries(grant) }).then(() => undefined),
    );
  }

  /** Deletes exactly the DENY ACLs the grant's suspension created. */
  async restoreAccess(_desired: DesiredResource, grant: AccessGrant): Promise<void> {
    if (deniedPrincipals(grant).length === 0) return;
    await this.call('lift topic denial', (admin) =>
      admin.deleteAcls({ filters: denyEntries(grant) }).then(() => undefined),
    );
  }

  async close(): Promise<void> {
    const admin = this.admin;
    this.admin = undefined;
    if (admin) await (await admin.catch(() => undefined))?.disconnect();
  }

  /** Runs one admin conversation; reconnects next time after a connection-level failure. */
  private async call<T>(action: string, fn: (admin: Admin) => Promise<T>): Promise<T> {
    try {
      return await fn(await this.connect());
    } catch (err) {
      const mapped = toProviderError(err, action);
      if (mapped instanceof ProviderError && mapped.reason === 'BrokerUnavailable') await this.close();
      throw mapped;
    }
  }

  private connect(): Promise<Admin> {
    if (!this.admin) {
      this.admin = this.client().then(async (kafka) => {
        const admin = kafka.admin();
        await admin.connect();
        return admin;
      });
      this.admin.catch(() => {
        this.admin = undefined;
      });
    }
    return this.admin;
  }

  /** The cluster's client, made once kafkajs is loaded (at the first call, not with this module). */
  private client(): Promise<KafkaClient> {
    this.kafka ??= lazyKafkajs.load().then((kafkajs) => {
      ({
        AclOperationTypes: Op,
        AclPermissionTypes: Permission,
        AclResourceTypes: Resource,
        ConfigResourceTypes,
        ConfigSource,
        ResourcePatternTypes: Pattern,
      } = kafkajs);
      const { config, options } = this;
      return new kafkajs.Kafka({
        clientId: config.clientId,
        brokers: config.brokers,
        ssl: config.ssl,
        sasl: config.sasl,
        connectionTimeout: options.connectionTimeoutMs ?? 3000,
        requestTimeout: options.requestTimeoutMs ?? 15_000,
        retry: { retries: options.retries ?? 2, initialRetryTime: 200, maxRetryTime: 2000 },
        logLevel: kafkajs.logLevel.NOTHING,
      });
    });
    this.kafka.catch(() => {
      this.kafka = undefined;
    });
    return this.kafka;
  }

  private validName(name: string): string {
    if (!TOPIC_NAME.test(name) || name === '.' || name === '..')
      throw new ProviderError(
        `Kafka: "${name}" is not a legal topic name (1-249 of a-z A-Z 0-9 . _ -)`,
        'InvalidName',
        false,
      );
    return name;
  }

  private validate(desired: DesiredResource): NonNullable<DesiredResource['kafkaTopic']> {
    if (desired.type !== 'kafka-topic')
      throw new ProviderError(
        `Kafka provider cannot handle ${desired.type} resources`,
        'InvalidConfiguration',
        false,
      );
    this.validName(desired.physicalName);
    const spec = desired.kafkaTopic;
    const problems: string[] = [];
    if (!spec) problems.push('kafkaTopic settings are missing');
    else {
      if (!Number.isInteger(spec.partitions) || spec.partitions < 1) problems.push('partitions must be ≥ 1');
      if (!Number.isInteger(spec.replicationFactor) || spec.replicationFactor < 1)
        problems.push('replicationFactor must be ≥ 1');
      if (spec.retentionMs !== null && (!Number.isInteger(spec.retentionMs) || spec.retentionMs < -1))
        problems.push('retentionMs must be -1 (unlimited), ≥ 0 or null (broker default)');
    }
    if (problems.length > 0 || !spec)
      throw new ProviderError(
        `Kafka: topic ${desired.physicalName}: ${problems.join('; ')}`,
        'InvalidConfiguration',
        false,
      );
    return spec;
  }

  /** The tenant's principals on a topic: its consumers' and its scope's (the producer). */
  private tenantPrincipals(desired: DesiredResource): string[] {
    return [
      ...new Set([
        ...this.grants(desired.kafkaTopic?.consumers ?? []).map((g) => g.principal),
        this.config.principalTemplate.replace('{consumer}', desired.scopeSlug),
      ]),
    ].sort();
  }

  /**
   * Makes the tenant's DENY ACLs on the topic match its suspension: each principal denied every
   * operation of deniedOps() while suspended, none of them otherwise. True when it changed anything.
   */
  private async syncDenials(admin: Admin, desired: DesiredResource, state: TopicState): Promise<boolean> {
    const grant = { provider: this.name, topic: desired.physicalName, deny: this.tenantPrincipals(desired) };
    const held = (e: AclEntry) => state.denials.get(e.principal)?.has(e.operation) ?? false;
    const entries = denyEntries(grant).filter((e) => (desired.suspended ? !held(e) : held(e)));
    if (entries.length === 0) return false;
    if (desired.suspended) await admin.createAcls({ acl: entries });
    else await admin.deleteAcls({ filters: entries });
    return true;
  }

  private grants(consumers: string[]): ConsumerGrant[] {
    return [...new Set(consumers)].map((consumer) => ({
      consumer,
      principal: this.config.principalTemplate.replace('{consumer}', consumer),
      groupPrefix: this.config.groupPrefixTemplate.replace('{consumer}', consumer),
    }));
  }

  /** The consumer slug behind a principal made from the template, if it was. */
  private consumerOf(principal: string): string | undefined {
    return this.principalPattern.exec(principal)?.[1];
  }

  /** The topic's real state, or undefined when it does not exist. */
  private async readTopic(
    admin: Admin,
    topic: string,
    grants: ConsumerGrant[],
  ): Promise<TopicState | undefined> {
    let metadata: ITopicMetadata | undefined;
    try {
      metadata = (await admin.fetchTopicMetadata({ topics: [topic] })).topics.find((t) => t.name === topic);
    } catch (err) {
      if (kafkaErrorType(err) === 'UNKNOWN_TOPIC_OR_PARTITION') return undefined;
      throw err;
    }
    if (!metadata) return undefined;
    const [configs, { readers, denials }, groupReaders] = await Promise.all([
      admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
      }),
      this.topicAcls(admin, topic),
      this.groupReaders(admin, grants),
    ]);
    const entries: ConfigEntries[] = configs.resources[0]?.configEntries ?? [];
    const retention = entries.find((e) => e.configName === RETENTION);
    const overrides = entries
      .filter((e) => e.configSource === ConfigSource.TOPIC_CONFIG && !e.isSensitive)
      .map((e) => ({ name: e.configName, value: e.configValue }));
    return {
      partitions: metadata.partitions.length,
      replicationFactor: Math.max(0, ...metadata.partitions.map((p) => p.replicas.length)),
      retentionMs: retention?.configValue != null ? Number(retention.configValue) : null,
      retentionOverridden: retention?.configSource === ConfigSource.TOPIC_CONFIG,
      overrides,
      readers,
      denials,
      groupReaders,
    };
  }

  /** Reads a just-created topic once the broker's metadata shows it (up to 10 s, then retryable). */
  private async waitForTopic(admin: Admin, topic: string, grants: ConsumerGrant[]): Promise<TopicState> {
    const deadline = Date.now() + 10_000;
    for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
      const state = await this.readTopic(admin, topic, grants);
      if (state && state.partitions > 0) return state;
      if (Date.now() > deadline)
        throw new ProviderError(
          `Kafka: topic ${topic} was created but is not visible in the metadata after 10 s`,
          'TopicNotVisible',
          true,
        );
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  /**
   * The broker's metadata cache shows a change a moment after the controller has committed it (ACLs
   * especially): reads again for up to 3 s until no more than `expectedDrift` lines remain (the ones
   * that cannot be fixed), so a successful ensure does not report drift that is already repaired.
   */
  private async settle(
    admin: Admin,
    desired: DesiredResource,
    grants: ConsumerGrant[],
    state: TopicState | undefined,
    expectedDrift: number,
  ): Promise<TopicState | undefined> {
    const deadline = Date.now() + 3000;
    for (let delay = 10; ; delay = Math.min(delay * 2, 250)) {
      if (this.report(desired, state).drift.length <= expectedDrift || Date.now() > deadline) return state;
      await new Promise((r) => setTimeout(r, delay));
      state = await this.readTopic(admin, desired.physicalName, grants);
    }
  }

  /**
   * Principal → operations of the ACLs on the literal topic from any host: `readers` the ALLOW READ
   * and DESCRIBE ones, `denials` the DENY ones of deniedOps().
   */
  private async topicAcls(
    admin: Admin,
    topic: string,
  ): Promise<{ readers: Map<string, Set<number>>; denials: Map<string, Set<number>> }> {
    const res = await admin.describeAcls(topicFilter(topic));
    const readers = new Map<string, Set<number>>();
    const denials = new Map<string, Set<number>>();
    for (const r of res.resources) {
      for (const acl of r.acls) {
        if (acl.host !== '*') continue;
        const allow = acl.permissionType === Permission.ALLOW;
        if (
          allow
            ? acl.operation !== Op.READ && acl.operation !== Op.DESCRIBE
            : !deniedOps().includes(acl.operation)
        )
          continue;
        const into = allow ? readers : denials;
        const ops = into.get(acl.principal) ?? new Set<number>();
        ops.add(acl.operation);
        into.set(acl.principal, ops);
      }
    }
    return { readers, denials };
  }

  /** The principals among `grants` that hold READ on their consumer-group prefix. */
  private async groupReaders(admin: Admin, grants: ConsumerGrant[]): Promise<Set<string>> {
    const held = await Promise.all(
      grants.map(async (g) => {
        const res = await admin.describeAcls(groupFilter(g.groupPrefix, g.principal));
        return res.resources.some((r) => r.acls.length > 0) ? [g.principal] : [];
      }),
    );
    return new Set(held.flat());
  }

  /** Grants the consumers what they lack and revokes what others hold; true when it changed anything. */
  private async syncAcls(
    admin: Admin,
    topic: string,
    grants: ConsumerGrant[],
    state: TopicState,
  ): Promise<boolean> {
    const { readers } = state;
    const create: AclEntry[] = [];
    for (const g of grants) {
      const ops = readers.get(g.principal);
      for (const operation of [Op.READ, Op.DESCRIBE]) {
        if (!ops?.has(operation)) create.push(topicAcl(topic, g.principal, operation));
      }
      if (!state.groupReaders.has(g.principal)) create.push(groupAcl(g.groupPrefix, g.principal));
    }
    if (create.length > 0) await admin.createAcls({ acl: create });
    const wanted = new Set(grants.map((g) => g.principal));
    const removed = [...readers.keys()].filter((p) => !wanted.has(p));
    if (removed.length > 0) {
      await admin.deleteAcls({
        filters: removed.flatMap((principal) =>
          [Op.READ, Op.DESCRIBE].map((operation) => ({ ...topicAcl(topic, principal, operation) })),
        ),
      });
      await this.dropUnusedGroupGrants(admin, topic, new Set(removed));
    }
    return create.length > 0 || removed.length > 0;
  }

  /** Removes the group grant of each principal that may no longer read any topic but `topic`. */
  private async dropUnusedGroupGrants(admin: Admin, topic: string, principals: Set<string>): Promise<void> {
    const filters = await Promise.all(
      [...principals].map(async (principal): Promise<AclFilter[]> => {
        const consumer = this.consumerOf(principal);
        if (consumer === undefined) return [];
        const reads = await admin.describeAcls({
          resourceType: Resource.TOPIC,
          resourcePatternType: Pattern.ANY,
          principal,
          host: '*',
          operation: Op.READ,
          permissionType: Permission.ALLOW,
        });
        if (reads.resources.some((r) => r.resourceName !== topic && r.acls.length > 0)) return [];
        const [grant] = this.grants([consumer]);
        return [groupFilter(grant!.groupPrefix, principal)];
      }),
    );
    if (filters.flat().length > 0) await admin.deleteAcls({ filters: filters.flat() });
  }

  private report(desired: DesiredResource, state: TopicState | undefined): ObservedResource {
    const topic = desired.physicalName;
    const spec = desired.kafkaTopic!;
    if (!state) return { exists: false, details: { topic }, drift: [`topic ${topic} does not exist`] };
    const drift: string[] = [];
    if (state.partitions !== spec.partitions)
      drift.push(`partitions: ${state.partitions} on the broker, ${spec.partitions} desired`);
    if (state.replicationFactor !== spec.replicationFactor)
      drift.push(
        `replication factor: ${state.replicationFactor} on the broker, ${spec.replicationFactor} desired`,
      );
    if (!retentionInSync(spec.retentionMs, state)) {
      drift.push(
        spec.retentionMs === null
          ? `retention.ms: overridden to ${state.retentionMs} on the topic, the broker default desired`
          : `retention.ms: ${state.retentionMs}${state.retentionOverridden ? '' : ' (broker default)'} on the broker, ${spec.retentionMs} desired`,
      );
    }
    const grants = this.grants(spec.consumers);
    for (const g of grants) {
      const ops = state.readers.get(g.principal);
      const missing = [Op.READ, Op.DESCRIBE]
        .filter((o) => !ops?.has(o))
        .map((o) => (o === Op.READ ? 'READ' : 'DESCRIBE'));
      if (missing.length > 0)
        drift.push(`consumer ${g.consumer}: ${g.principal} lacks ${missing.join(' and ')} on the topic`);
      if (!state.groupReaders.has(g.principal))
        drift.push(
          `consumer ${g.consumer}: ${g.principal} lacks READ on consumer groups prefixed "${g.groupPrefix}"`,
        );
    }
    const wanted = new Set(grants.map((g) => g.principal));
    for (const principal of [...state.readers.keys()].sort()) {
      if (!wanted.has(principal)) drift.push(`${principal} may read the topic but is not a listed consumer`);
    }
    for (const principal of this.tenantPrincipals(desired)) {
      const ops = state.denials.get(principal);
      if (desired.suspended && deniedOps().some((o) => !ops?.has(o)))
        drift.push(`${principal} is not denied the topic while its tenant is suspended`);
      if (!desired.suspended && ops && ops.size > 0)
        drift.push(`${principal} is denied the topic but its tenant is not suspended`);
    }
    return {
      exists: true,
      details: {
        topic,
        partitions: state.partitions,
        replicationFactor: state.replicationFactor,
        retentionMs: state.retentionMs,
        retentionSource: state.retentionOverridden ? 'topic' : 'broker default',
        readers: [...state.readers.keys()].sort(),
        ...(desired.suspended ? { denied: [...state.denials.keys()].sort() } : {}),
      },
      drift,
    };
  }
}

function retentionInSync(desired: number | null, state: TopicState): boolean {
  return desired === null ? !state.retentionOverridden : state.retentionMs === desired;
}

function topicFilter(topic: string): AclFilter {
  return {
    resourceType: Resource.TOPIC,
    resourceName: topic,
    resourcePatternType: Pattern.LITERAL,
    operation: Op.ANY,
    permissionType: Permission.ANY,
  };
}

function groupFilter(prefix: string, principal: string): AclFilter {
  return { ...groupAcl(prefix, principal) };
}

function topicAcl(topic: string, principal: string, operation: number): AclEntry {
  return {
    resourceType: Resource.TOPIC,
    resourceName: topic,
    resourcePatternType: Pattern.LITERAL,
    principal,
    host: '*',
    operation,
    permissionType: Permission.ALLOW,
  };
}

function groupAcl(prefix: string, principal: string): AclEntry {
  return {
    resourceType: Resource.GROUP,
    resourceName: prefix,
    resourcePatternType: Pattern.PREFIXED,
    principal,
    host: '*',
    operation: Op.READ,
    permissionType: Permission.ALLOW,
  };
}

/** The operations a suspension denies. */
const deniedOps = () => [Op.READ, Op.WRITE, Op.DESCRIBE];

function deniedPrincipals(grant: AccessGrant): string[] {
  return Array.isArray(grant.deny) ? (grant.deny as string[]) : [];
}

function denyEntries(grant: AccessGrant): AclEntry[] {
  const topic = String(grant.topic);
  return deniedPrincipals(grant).flatMap((principal) =>
    deniedOps().map((operation) => ({
      ...topicAcl(topic, principal, operation),
      permissionType: Permission.DENY,
    })),
  );
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The `kafka-topic` provider for one cluster. */
export function createKafkaProvider(config: KafkaConfig, options?: KafkaProviderOptions): KafkaTopicProvider {
  return new KafkaTopicProvider(config, options);
}
