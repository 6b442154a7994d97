import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Db } from '../db/database.js';
import { isDatabaseUnavailable } from '../errors/errors.js';
import { toCloudEvent } from '../events/cloud-event.js';
import type { EventNotifier } from '../events/event-notifier.js';
import type { Metrics } from '../observability/metrics.js';
import { type SecretCipher, secretCipherFor } from '../secrets/index.js';
import { type ClaimedDelivery, claimDeliveries } from './claim-deliveries.js';
import type { Settlement } from './complete-delivery.js';
import { outcomeLabel, outcomeOf, settleRound } from './settle-round.js';
import { openSecrets } from './webhook-secret-sealing.js';
import { signingSecrets } from './webhook-secrets.js';
import { type OutboundDelivery, type SignedRequest, signRequest, WebhookSender } from './webhook-sender.js';

export { post, type SignedRequest, USER_AGENT } from './webhook-sender.js';

/**
 * Deliveries of one (endpoint, stream) queue claimed together and sent one after the other on one
 * keep-alive connection: a tenant's burst goes out in one round instead of one round per event.
 */
export const PIPELINE_DEPTH = 16;
/**
 * Rounds in flight at once in one dispatcher: while one round waits for its slowest queue or for
 * its settlement, another claims the queues that are free, so the receivers never wait for a
 * round's tail and a new event is claimed at once (its NOTIFY wakes an idle lane).
 */
const LANES = 4;

/** The CloudEvents structured body of a claimed delivery (the bytes that are signed and sent). */
export function eventBody(d: ClaimedDelivery, source: string): string {
  return JSON.stringify(
    toCloudEvent(
      {
        id: d.event_id,
        tenant_id: d.event_tenant_id,
        type: d.type,
        subject: d.subject,
        time: d.time,
        data: d.data,
        correlation_id: d.correlation_id,
        stream: d.stream,
        seq: d.seq,
        txid: d.txid,
        position: d.position,
      },
      source,
    ),
  );
}

/** `secrets`: the endpoint's signing secrets in clear (opened just before). */
export function signedRequest(
  d: ClaimedDelivery,
  source: string,
  secrets: string[],
  now = new Date(),
): SignedRequest {
  return signRequest({ eventId: d.event_id, body: eventBody(d, source) }, secrets, now);
}

/** Claimed deliveries grouped into their (endpoint, stream) queues. */
export function queuesOf<T extends { endpointId: string; stream: string }>(items: T[]): T[][] {
  const queues = new Map<string, T[]>();
  for (const d of items) {
    const key = `${d.endpointId}/${d.stream}`;
    const q = queues.get(key);
    if (q) q.push(d);
    else queues.set(key, [d]);
  }
  return [...queues.values()];
}

/** The attempt a claimed delivery is: the claim counted the head's; one behind it is counted now. */
export const attemptOf = (d: Pick<ClaimedDelivery, 'rank' | 'attempts'>): number =>
  d.rank === 1 ? d.attempts : d.attempts + 1;

/**
 * The durable webhook dispatcher: claims due deliveries (src/webhooks/claim-deliveries.ts), signs and
 * sends them, and settles each (delivered, retry with backoff, dead letter, or endpoint disabled on
 * 410). Any number of dispatchers may run side by side. Woken by NOTIFY, with a poll fallback.
 */
export class WebhookDispatcher {
  readonly owner: string;
  private readonly cipher: SecretCipher;
  private readonly sender: WebhookSender;
  private stopped = true;
  private running: Promise<void>[] = [];
  private paused = false;
  /** Bumped by every NOTIFY: a lane that claimed nothing sleeps only if none came since it looked. */
  private notified = 0;
  private readonly waiters = new Set<() => void>();
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly notifier?: EventNotifier,
    /** Where attempts are counted (the process's metrics, from src/app.ts). */
    private readonly metrics?: Metrics,
  ) {
    this.owner = `${config.instanceId}/${randomUUID().slice(0, 8)}`;
    this.cipher = secretCipherFor(db, config);
    this.sender = new WebhookSender(config.events.webhookAllowedNetworks, config.events.webhookTimeoutMs);
  }

  /** A NOTIFY: one idle lane looks (the busy ones look again after their round anyway). */
  private wakeOne(): void {
    this.notified++;
    const first = this.waiters.values().next();
    if (!first.done) first.value();
  }

  private wakeAll(): void {
    this.notified++;
    for (const w of [...this.waiters]) w();
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.unsubscribe = this.notifier?.subscribe('tenantry_webhooks', () => this.wakeOne());
    this.running = Array.from({ length: LANES }, () => this.loop());
  }

  /** Stops claiming; waits for the requests in flight (bounded by the timeout) to be settled. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeAll();
    this.unsubscribe?.();
    await Promise.all(this.running);
    this.running = [];
    await this.sender.close();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let claimed = 0;
      const seen = this.notified;
      try {
        claimed = await this.runOnce();
        if (this.paused) this.log.info('database reachable again; webhook dispatcher resumed');
        this.paused = false;
      } catch (err) {
        // A claimed delivery whose settlement failed is claimed again when its lease runs out.
        if (!isDatabaseUnavailable(err)) this.log.error({ err }, 'webhook dispatch failed; retrying');
        else if (!this.paused)
          this.log.warn({ err: (err as Error).message }, 'database unavailable; webhook dispatcher paused');
        this.paused = isDatabaseUnavailable(err);
      }
      // Nothing was due and no NOTIFY came meanwhile: wait for one, or the poll. After a round,
      // look again at once.
      if (claimed === 0 && !this.stopped && seen === this.notified) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            this.waiters.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, this.config.events.pollMs);
          this.waiters.add(wake);
        });
      }
    }
  }

  /** The signing secrets of each endpoint of a round, opened once per round, just before sending. */
  private async openAll(claimed: ClaimedDelivery[]): Promise<Map<string, string[] | null>> {
    const byEndpoint = new Map<string, ClaimedDelivery>();
    for (const d of claimed) if (!byEndpoint.has(d.endpoint_id)) byEndpoint.set(d.endpoint_id, d);
    const now = new Date();
    const opened = await Promise.all(
      [...byEndpoint.values()].map(async (d) => {
        const at = { tenantId: d.endpoint_tenant_id, slug: d.endpoint_slug };
        try {
          return [d.endpoint_id, signingSecrets(await openSecrets(this.cipher, d.secrets, at), now)] as const;
        } catch (err) {
          // Fails this round's attempts of the endpoint (retried); the rest of the round goes on.
          this.log.error({ err, endpoint: d.endpoint_id }, 'the signing secret could not be opened');
          return [d.endpoint_id, null] as const;
        }
      }),
    );
    return new Map(opened);
  }

  /**
   * One round: claim, send the queues in parallel (each in order), settle all in one transaction.
   * Returns how many deliveries were claimed.
   */
  async runOnce(): Promise<number> {
    const { webhookConcurrency, webhookLeaseMs, webhookTimeoutMs, webhookRetrySchedule } = this.config.events;
    const claimedAt = performance.now();
    const claimed = await claimDeliveries(
      this.db,
      this.owner,
      webhookConcurrency,
      webhookLeaseMs,
      PIPELINE_DEPTH,
    );
    if (claimed.length === 0) return 0;
    const secrets = await this.openAll(claimed);
    const outbound = claimed.map((d): OutboundDelivery & { stream: string; claimed: ClaimedDelivery } => ({
      id: d.id,
      endpointId: d.endpoint_id,
      stream: d.stream,
      eventId: d.event_id,
      rank: d.rank,
      attempt: attemptOf(d),
      url: d.url,
      body: eventBody(d, this.config.source),
      secrets: secrets.get(d.endpoint_id) ?? null,
      traceparent: d.traceparent,
      claimed: d,
    }));
    const { sent, released } = await this.sender.send(
      queuesOf(outbound),
      claimedAt + webhookLeaseMs - webhookTimeoutMs,
    );
    const settlements: Settlement[] = sent.map(({ delivery, result }) => {
      const d = (delivery as (typeof outbound)[number]).claimed;
      const outcome = outcomeOf(delivery.attempt, result, webhookRetrySchedule);
      const label = outcomeLabel(outcome);
      this.metrics?.webhookAttempts.inc({ outcome: label });
      this.metrics?.webhookDuration.observe({ outcome: label }, result.latencyMs / 1000);
      return { delivery: { ...d, attempts: delivery.attempt }, result, outcome };
    });
    await settleRound(this.db, this.owner, this.config.events, settlements, released);
    for (const { delivery: d, result, outcome } of settlements) {
      this.log.info(
        {
          endpoint: d.endpoint_id,
          event: d.event_id,
          attempt: d.attempts,
          status: result.statusCode,
          latencyMs: result.latencyMs,
          outcome: outcome.kind,
        },
        'webhook attempt',
      );
    }
    return claimed.length;
  }
}
