import type { Producer } from 'kafkajs';
import { sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { KafkaConfig } from '../config/config.js';
import { reconnectDelay } from '../db/connection-errors.js';
import { asPlatform, type Db } from '../db/database.js';
import { kafkajs as lazyKafkajs } from '../providers/kafka/kafkajs.js';
import { EVENT_NAMES } from '../registry/kinds/index.js';
import { type OutboxRow, toCloudEvent } from './cloud-event.js';

/** The Kafka topic of an event domain: `tenantry.events.<kind>` (e.g. `tenantry.events.tenant`). */
export const busTopic = (kind: string): string => `tenantry.events.${kind.toLowerCase()}`;

/** Session-level advisory lock key: one publisher at a time keeps each tenant's order on the bus. */
const PUBLISHER_LOCK = 0x74656e62; // 'tenb'

/**
 * Publishes the outbox to Kafka (the event bus adapter): every event once it is committed, as a
 * structured CloudEvent, on the topic of its domain, keyed by its tenant (or `platform`), so a
 * partition carries each tenant's events in sequence order. At least once: an event is marked
 * published only after the broker acknowledged it (acks = all, idempotent producer, one request in
 * flight); a crash in between publishes it again, and consumers drop repeats by CloudEvent `id`.
 *
 * Concurrency contract: any number of processes may run it; a PostgreSQL session advisory lock
 * elects one publisher (released if its process dies), so per-tenant order is never interleaved.
 * A stream's events become visible in sequence order (the sequence row lock serialises its writers),
 * so reading `seq` ascending per stream never skips an event that commits later.
 */
export class KafkaEventBus {
  private producer: Producer | undefined;
  private lockClient: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;
  private failures = 0;
  private retryAt = 0;
  published = 0;

  constructor(
    private readonly db: Db,
    private readonly ownerOrAppUrl: string,
    private readonly config: KafkaConfig,
    private readonly source: string,
    private readonly log: Logger,
    private readonly pollMs = 500,
  ) {}

  /** Loads kafkajs (not before: a server without the bus does not carry it), then connects. */
  async start(): Promise<void> {
    const kafkajs = await lazyKafkajs.load();
    const kafka = new kafkajs.Kafka({
      clientId: `${this.config.clientId}-event-bus`,
      brokers: this.config.brokers,
      ...(this.config.sasl ? { sasl: this.config.sasl } : {}),
      ssl: this.config.ssl,
      logLevel: kafkajs.logLevel.NOTHING,
    });
    const admin = kafka.admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      // Every event domain's topic: each kind's, and those of workflows, audit checkpoints and
      // promotions (dev.tenantry.<domain>.<event>.v1), so no event waits on a topic that is absent.
      const missing = [...new Set(EVENT_NAMES.map((n) => busTopic(n.split('.')[0]!)))].filter(
        (t) => !existing.has(t),
      );
      if (missing.length > 0)
        await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: 6 })) });
    } finally {
      await admin.disconnect();
    }
    this.producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await this.producer.connect();
    this.timer = setInterval(() => {
      this.running = this.running
        .then(async () => {
          await this.tick();
        })
        .catch((err) => {
          this.log.warn({ err }, 'event bus publish failed; retrying');
        });
    }, this.pollMs);
    this.timer.unref();
  }

  /** Publishes what is committed and unpublished, if this process holds the publisher lock. */
  async tick(): Promise<number> {
    if (this.stopped || !this.producer) return 0;
    if (!(await this.holdLock())) return 0;
    let total = 0;
    for (;;) {
      const rows = await asPlatform(this.db, async (trx) => {
        const r = await sql<OutboxRow>`
          select id, tenant_id, type, subject, time, data, correlation_id, stream, seq, txid::text as txid, position
          from outbox_events where published_at is null order by stream, seq limit 500`.execute(trx);
        return r.rows;
      });
      if (rows.length === 0) return total;
      const byTopic = new Map<string, { key: string; value: string; headers: Record<string, string> }[]>();
      for (const row of rows) {
        // dev.tenantry.<kind>.<action>.v1
        const topic = busTopic(row.type.split('.')[2]!);
        const list = byTopic.get(topic) ?? [];
        list.push({
          key: row.stream,
          value: JSON.stringify(toCloudEvent(row, this.source)),
          headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' },
        });
        byTopic.set(topic, list);
      }
      await this.producer.sendBatch({
        acks: -1,
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
      await asPlatform(this.db, (trx) =>
        sql`update outbox_events set published_at = now() where id = any(${rows.map((r) => r.id)}::uuid[])`.execute(
          trx,
        ),
      );
      total += rows.length;
      this.published += rows.length;
    }
  }

  /**
   * Takes (or keeps) the publisher lock. A lost session loses the lock with it: the next attempt
   * reconnects, after a backoff that grows while the database stays unreachable (250 ms … 5 s).
   */
  private async holdLock(): Promise<boolean> {
    if (this.lockClient) return true;
    if (Date.now() < this.retryAt) return false;
    const client = new pg.Client({ connectionString: this.ownerOrAppUrl, connectionTimeoutMillis: 5_000 });
    client.on('error', (err) => {
      if (this.lockClient !== client) return;
      this.log.warn({ err }, 'event bus lost its publisher lock session; electing again');
      this.lockClient = undefined;
      client.end().catch(() => undefined);
    });
    try {
      await client.connect();
      const { rows } = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1) as ok', [
        PUBLISHER_LOCK,
      ]);
      this.failures = 0;
      if (rows[0]?.ok && !this.stopped) {
        this.lockClient = client;
        return true;
      }
    } catch (err) {
      this.retryAt = Date.now() + reconnectDelay(this.failures++);
      await client.end().catch(() => undefined);
      throw err;
    }
    await client.end().catch(() => undefined);
    return false;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running.catch(() => undefined);
    await this.producer?.disconnect();
    await this.lockClient?.end().catch(() => undefined);
    this.lockClient = undefined;
  }
}
