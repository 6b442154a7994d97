import { randomUUID } from 'node:crypto';
import { SpanKind } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { Agent, type Response as UndiciResponse, fetch as undiciFetch } from 'undici';
import type { Config } from '../config/config.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, type Db } from '../db/database.js';
import { isDatabaseUnavailable } from '../errors/errors.js';
import { toCloudEvent } from '../events/cloud-event.js';
import type { EventNotifier } from '../events/event-notifier.js';
import type { Metrics } from '../observability/metrics.js';
import { currentTraceparent, inSpan, withTraceparent } from '../observability/tracing.js';
import { type SecretCipher, secretCipherFor } from '../secrets/index.js';
import { type ClaimedDelivery, claimDeliveries, releaseDeliveries } from './claim-deliveries.js';
import {
  type AttemptResult,
  completeDeliveries,
  failingSince,
  type Outcome,
  type Settlement,
} from './complete-delivery.js';
import { disableEndpoint } from './disable-endpoint.js';
import { nextAttemptDelay, parseRetryAfter } from './retry-schedule.js';
import { signatureHeader } from './sign-webhook.js';
import { UrlGuard } from './url-guard.js';
import { openSecrets } from './webhook-secret-sealing.js';
import { signingSecrets } from './webhook-secrets.js';

export const USER_AGENT = 'Tenantry-Webhooks/1 (+https://www.standardwebhooks.com)';
const EXCERPT_BYTES = 1024;
/**
 * Deliveries of one (endpoint, stream) queue claimed together and sent one after the other on one
 * keep-alive connection: a tenant's burst goes out in one round instead of one round per event.
 */
const PIPELINE_DEPTH = 16;

/** A signed request ready to POST: Standard Webhooks headers, CloudEvents structured body. */
export interface SignedRequest {
  body: string;
  headers: Record<string, string>;
}

/** `secrets`: the endpoint's signing secrets in clear (opened just before, see `attempt`). */
export function signedRequest(
  d: ClaimedDelivery,
  source: string,
  secrets: string[],
  now = new Date(),
): SignedRequest {
  const event = toCloudEvent(
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
  );
  const body = JSON.stringify(event);
  const timestamp = Math.floor(now.getTime() / 1000);
  return {
    body,
    headers: {
      'content-type': 'application/cloudevents+json; charset=utf-8',
      'user-agent': USER_AGENT,
      'webhook-id': d.event_id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signatureHeader(secrets, d.event_id, timestamp, body),
    },
  };
}

/** Reads at most EXCERPT_BYTES of the response, then drops the rest. */
async function excerpt(res: UndiciResponse): Promise<string | null> {
  if (!res.body) return null;
  const reader = res.body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < EXCERPT_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  const text = Buffer.concat(chunks).subarray(0, EXCERPT_BYTES).toString('utf8');
  return text.length > 0 ? text : null;
}

/** An address the SSRF guard checked: the connection goes there, whatever the name resolves to now. */
export interface PinnedAddress {
  address: string;
  family: 4 | 6;
}

/** An HTTP client whose every lookup answers the pinned address (TLS still verifies the host name). */
function pinnedAgent(pin: PinnedAddress): Agent {
  const lookup = (
    _host: string,
    opts: { all?: boolean } | undefined,
    cb: (err: Error | null, address: string | { address: string; family: number }[], family?: number) => void,
  ) =>
    opts?.all ? cb(null, [{ address: pin.address, family: pin.family }]) : cb(null, pin.address, pin.family);
  return new Agent({ connect: { lookup: lookup as never } });
}

/**
 * POSTs one signed request; never throws. Outbound requests carry Tenantry's identity only. With
 * `pin`, the connection goes to that address (the one the SSRF guard checked); redirects are never
 * followed.
 */
export async function post(
  url: string,
  req: SignedRequest,
  timeoutMs: number,
  pin?: PinnedAddress,
  /** A keep-alive client for `pin`, kept by the caller (`PinnedAgents`); default: one for this request. */
  agent?: Agent,
): Promise<AttemptResult & { retryAfterMs: number | null }> {
  const startedAt = new Date();
  const t0 = performance.now();
  const own = pin && !agent ? pinnedAgent(pin) : undefined;
  const dispatcher = agent ?? own;
  try {
    const res = await undiciFetch(url, {
      method: 'POST',
      headers: req.headers,
      body: req.body,
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
      ...(dispatcher ? { dispatcher } : {}),
    });
    const text = await excerpt(res);
    return {
      startedAt,
      latencyMs: Math.round(performance.now() - t0),
      statusCode: res.status,
      responseExcerpt: text,
      error: res.ok ? null : `HTTP ${res.status}`,
      retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
    };
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    const error =
      e.name === 'TimeoutError'
        ? `timeout after ${timeoutMs} ms`
        : `${e.cause?.code ?? e.name}: ${e.message}`;
    return {
      startedAt,
      latencyMs: Math.round(performance.now() - t0),
      statusCode: null,
      responseExcerpt: null,
      error,
      retryAfterMs: null,
    };
  } finally {
    await own?.close().catch(() => undefined);
  }
}

/**
 * Keep-alive clients, one per pinned address, so that the deliveries of a round reuse their
 * connections instead of opening one each. Bounded: past `max` addresses the least recently used
 * one is closed. Every lookup of a client answers its pinned address (the SSRF guard's).
 */
export class PinnedAgents {
  private readonly agents = new Map<string, Agent>();

  constructor(private readonly max = 256) {}

  for(pin: PinnedAddress): Agent {
    const key = `${pin.family}/${pin.address}`;
    let agent = this.agents.get(key);
    if (agent) this.agents.delete(key);
    else agent = pinnedAgent(pin);
    this.agents.set(key, agent);
    if (this.agents.size > this.max) {
      const [oldest, a] = this.agents.entries().next().value as [string, Agent];
      this.agents.delete(oldest);
      void a.close().catch(() => undefined);
    }
    return agent;
  }

  async close(): Promise<void> {
    const all = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(all.map((a) => a.close().catch(() => undefined)));
  }
}

/**
 * The durable webhook dispatcher: claims due deliveries (src/webhooks/claim-deliveries.ts), signs and
 * sends them, and settles each (delivered, retry with backoff, dead letter, or endpoint disabled on
 * 410). Any number of dispatchers may run side by side. Woken by NOTIFY, with a poll fallback.
 */
export class WebhookDispatcher {
  readonly owner: string;
  private readonly guard: UrlGuard;
  private readonly cipher: SecretCipher;
  private stopped = true;
  private running: Promise<void> | undefined;
  private paused = false;
  private wake: (() => void) | undefined;
  private unsubscribe: (() => void) | undefined;
  private readonly agents = new PinnedAgents();

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly notifier?: EventNotifier,
    /** Where attempts are counted (the process's metrics, from src/app.ts). */
    private readonly metrics?: Metrics,
  ) {
    this.owner = `${config.instanceId}/${randomUUID().slice(0, 8)}`;
    this.guard = new UrlGuard(config.events.webhookAllowedNetworks);
    this.cipher = secretCipherFor(db, config);
  }

  /** The secrets that sign now, decrypted only here, just before signing. */
  private async signingSecrets(d: ClaimedDelivery): Promise<string[]> {
    const at = { tenantId: d.endpoint_tenant_id, slug: d.endpoint_slug };
    return signingSecrets(await openSecrets(this.cipher, d.secrets, at), new Date());
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.unsubscribe = this.notifier?.subscribe('tenantry_webhooks', () => this.wake?.());
    this.running = this.loop();
  }

  /** Stops claiming; waits for the requests in flight (bounded by the timeout) to be settled. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    this.unsubscribe?.();
    await this.running;
    await this.agents.close();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let claimed = 0;
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
      // Nothing was due: wait for a NOTIFY or the poll. After a round, look again at once.
      if (claimed === 0 && !this.stopped) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.config.events.pollMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }

  /**
   * One round: claim, send the queues in parallel (each in order), settle all in one transaction.
   * Returns how many deliveries were claimed.
   */
  async runOnce(): Promise<number> {
    const { webhookConcurrency, webhookLeaseMs, webhookTimeoutMs } = this.config.events;
    const claimedAt = performance.now();
    const claimed = await claimDeliveries(
      this.db,
      this.owner,
      webhookConcurrency,
      webhookLeaseMs,
      PIPELINE_DEPTH,
    );
    if (claimed.length === 0) return 0;
    // Queues side by side; within a queue one after the other, in order, until one is not
    // delivered, a gap (a row another transaction held at the claim) or the lease would run out.
    const queues = new Map<string, ClaimedDelivery[]>();
    for (const d of claimed) {
      const key = `${d.endpoint_id}/${d.stream}`;
      queues.set(key, [...(queues.get(key) ?? []), d]);
    }
    const released: string[] = [];
    const settlements = (
      await Promise.all(
        [...queues.values()].map(async (queue) => {
          queue.sort((a, b) => a.rank - b.rank);
          const out: Settlement[] = [];
          for (const [i, d] of queue.entries()) {
            const fits = performance.now() - claimedAt + webhookTimeoutMs < webhookLeaseMs;
            if (d.rank !== i + 1 || (i > 0 && (!fits || out[i - 1]?.outcome.kind !== 'delivered'))) {
              released.push(...queue.slice(i).map((r) => r.id));
              break;
            }
            // Behind the head, the attempt is counted here (the claim counted the head's).
            out.push(await this.attempt(d.rank === 1 ? d : { ...d, attempts: d.attempts + 1 }));
          }
          return out;
        }),
      )
    ).flat();
    await asPlatform(this.db, async (trx) => {
      await releaseDeliveries(trx, this.owner, released);
      const settled = await completeDeliveries(trx, this.owner, settlements);
      for (const { delivery: d, outcome } of settlements) {
        if (!settled.has(d.id) || outcome.kind === 'delivered') continue;
        const ctx = systemContext('tenantry-webhooks', { correlationId: d.correlation_id });
        if (outcome.kind === 'parked') {
          await disableEndpoint(
            trx,
            ctx,
            d.endpoint_id,
            'EndpointGone',
            'The endpoint answered 410 Gone; re-enable it to resume deliveries.',
          );
          continue;
        }
        const since = await failingSince(trx, d.endpoint_id);
        if (since && Date.now() - since.getTime() >= this.config.events.webhookDisableAfterMs) {
          await disableEndpoint(
            trx,
            ctx,
            d.endpoint_id,
            'EndpointFailing',
            `Every attempt since ${since.toISOString()} failed; re-enable it to resume deliveries.`,
          );
        }
      }
    });
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

  /** Sends one claimed delivery and decides what comes of it. */
  private async attempt(d: ClaimedDelivery): Promise<Settlement> {
    const { webhookTimeoutMs, webhookRetrySchedule } = this.config.events;
    // A secret that cannot be opened (the data key unreadable, the KEK file without its key) fails
    // this attempt like any other error, and it is retried; the rest of the batch goes on.
    const secrets = await this.signingSecrets(d).catch((err: unknown) => {
      this.log.error({ err, endpoint: d.endpoint_id }, 'the signing secret could not be opened');
      return undefined;
    });
    const checked = secrets
      ? await this.guard.resolve(d.url)
      : { refused: 'the signing secret could not be opened' };
    const result =
      'refused' in checked
        ? {
            startedAt: new Date(),
            latencyMs: 0,
            statusCode: null,
            responseExcerpt: null,
            error: checked.refused,
            retryAfterMs: null,
          }
        : await withTraceparent(d.traceparent, () =>
            inSpan(
              'webhook attempt',
              {
                'tenantry.endpoint_id': d.endpoint_id,
                'tenantry.event_id': d.event_id,
                'tenantry.attempt': d.attempts,
              },
              async (span) => {
                const request = signedRequest(d, this.config.source, secrets ?? []);
                const traceparent = currentTraceparent();
                if (traceparent) request.headers.traceparent = traceparent;
                const r = await post(d.url, request, webhookTimeoutMs, checked, this.agents.for(checked));
                if (r.statusCode !== null) span.setAttribute('http.response.status_code', r.statusCode);
                return r;
              },
              SpanKind.CLIENT,
            ),
          );
    let outcome: Outcome;
    if (result.statusCode !== null && result.statusCode >= 200 && result.statusCode < 300) {
      outcome = { kind: 'delivered' };
    } else if (result.statusCode === 410) {
      outcome = { kind: 'parked', reason: 'endpoint answered 410 Gone; endpoint disabled' };
    } else {
      const delay = nextAttemptDelay(d.attempts, webhookRetrySchedule, result.retryAfterMs);
      outcome =
        delay === null
          ? { kind: 'dead', reason: `gave up after ${d.attempts} attempts: ${result.error}` }
          : { kind: 'retry', delayMs: delay };
    }
    const label = { delivered: 'delivered', retry: 'retry', dead: 'dead_letter', parked: 'endpoint_gone' }[
      outcome.kind
    ];
    this.metrics?.webhookAttempts.inc({ outcome: label });
    this.metrics?.webhookDuration.observe({ outcome: label }, result.latencyMs / 1000);
    return { delivery: d, result, outcome };
  }
}
