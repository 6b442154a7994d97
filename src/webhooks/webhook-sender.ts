import { SpanKind } from '@opentelemetry/api';
import { Agent, type Dispatcher, request as undiciRequest } from 'undici';
import { currentTraceparent, inSpan, withTraceparent } from '../observability/tracing.js';
import type { AttemptResult } from './complete-delivery.js';
import { parseRetryAfter } from './retry-schedule.js';
import { signatureHeader } from './sign-webhook.js';
import { type PinnedAddress, UrlGuard } from './url-guard.js';

export type { PinnedAddress } from './url-guard.js';

export const USER_AGENT = 'Tenantry-Webhooks/1 (+https://www.standardwebhooks.com)';
const EXCERPT_BYTES = 1024;
/** Past this much response body the connection is dropped rather than read to its end. */
const DRAIN_BYTES = 64 * 1024;

/** One delivery ready to go out: its CloudEvent body built, its endpoint's signing secrets in clear. */
export interface OutboundDelivery {
  id: string;
  endpointId: string;
  eventId: string;
  /** Its place in its (endpoint, stream) queue when claimed: 1 is the head. */
  rank: number;
  /** The attempt this is (the claim counted the head's; the sender counts those behind it). */
  attempt: number;
  url: string;
  body: string;
  /** Null when the endpoint's secrets could not be opened: the attempt fails and is retried. */
  secrets: string[] | null;
  traceparent: string | null;
}

/** One attempt made. */
export interface SentAttempt {
  delivery: OutboundDelivery;
  result: AttemptResult & { retryAfterMs: number | null };
}

/** A signed request ready to POST: Standard Webhooks headers, CloudEvents structured body. */
export interface SignedRequest {
  body: string;
  headers: Record<string, string>;
}

/** Signs one delivery now: the Standard Webhooks headers over its body. */
export function signRequest(
  d: Pick<OutboundDelivery, 'eventId' | 'body'>,
  secrets: string[],
  now = new Date(),
): SignedRequest {
  const timestamp = Math.floor(now.getTime() / 1000);
  return {
    body: d.body,
    headers: {
      'content-type': 'application/cloudevents+json; charset=utf-8',
      'user-agent': USER_AGENT,
      'webhook-id': d.eventId,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signatureHeader(secrets, d.eventId, timestamp, d.body),
    },
  };
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
 * Keep-alive clients, one per pinned address, so that the deliveries of a queue reuse one
 * connection instead of opening one each. Bounded: past `max` addresses the least recently used
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

const header = (v: string | string[] | undefined): string | null =>
  Array.isArray(v) ? (v[0] ?? null) : (v ?? null);

/**
 * POSTs one signed request with undici's `request` (no WHATWG streams, the cheapest of its APIs);
 * never throws. Outbound requests carry Tenantry's identity only. With `pin`, the connection goes
 * to that address (the one the SSRF guard checked), through `agent` if given (a keep-alive client
 * for it); redirects are never followed. At most EXCERPT_BYTES of the answer are kept.
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
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const u = new URL(url);
    const options: Dispatcher.RequestOptions = {
      origin: u.origin,
      path: `${u.pathname}${u.search}`,
      method: 'POST',
      headers: req.headers,
      body: req.body,
      signal,
    };
    const via = agent ?? own;
    const res = via
      ? await via.request(options)
      : await undiciRequest(u, { method: 'POST', headers: req.headers, body: req.body, signal });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      if (size < EXCERPT_BYTES) chunks.push(chunk);
      size += chunk.length;
      if (size > DRAIN_BYTES) break;
    }
    const text = Buffer.concat(chunks).subarray(0, EXCERPT_BYTES).toString('utf8');
    const ok = res.statusCode >= 200 && res.statusCode < 300;
    return {
      startedAt,
      latencyMs: Math.round(performance.now() - t0),
      statusCode: res.statusCode,
      responseExcerpt: text.length > 0 ? text : null,
      error: ok ? null : `HTTP ${res.statusCode}`,
      retryAfterMs: parseRetryAfter(header(res.headers['retry-after'])),
    };
  } catch (err) {
    const e = err as Error & { code?: string; cause?: { code?: string } };
    // undici's messages name the address it connected to; an error must not (the code says enough).
    const code = e.code ?? e.cause?.code;
    const error = signal.aborted
      ? `timeout after ${timeoutMs} ms`
      : code
        ? `${code}: the request failed`
        : `${e.name}: ${e.message}`;
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

const refusedResult = (error: string) => ({
  startedAt: new Date(),
  latencyMs: 0,
  statusCode: null,
  responseExcerpt: null,
  error,
  retryAfterMs: null,
});

/**
 * Sends queues of deliveries: queues side by side, each queue one request after the other, in
 * order, on one keep-alive connection to the address the SSRF guard checked. A queue stops at its
 * first delivery that is not accepted (not 2xx), at a gap in its ranks (a row another claim held),
 * or when the next attempt might outlast the lease; what is behind is returned as `released`, not
 * attempted. Used by the control plane's dispatcher and by a cell's agent alike: the sender only
 * sends; what an attempt comes to (retry, dead letter, disable) is the control plane's decision.
 *
 * No HTTP pipelining: a pipelined request behind one that fails would reach the receiver before the
 * failed one's retry, and per-(endpoint, tenant) order would be lost.
 */
export class WebhookSender {
  private readonly guard: UrlGuard;
  private readonly agents = new PinnedAgents();

  constructor(
    allowedNetworks: readonly string[],
    private readonly timeoutMs: number,
  ) {
    this.guard = new UrlGuard(allowedNetworks);
  }

  async send(
    queues: OutboundDelivery[][],
    /** performance.now() after which no attempt may start (the lease less one timeout). */
    lastStart: number,
    timeoutMs = this.timeoutMs,
  ): Promise<{ sent: SentAttempt[]; released: string[] }> {
    const released: string[] = [];
    const sent = (
      await Promise.all(
        queues.map(async (queue) => {
          const out: SentAttempt[] = [];
          queue.sort((a, b) => a.rank - b.rank);
          // Resolved and checked once per queue per claim; every request of it goes to that address.
          const head = queue[0];
          const checked = head?.secrets ? await this.guard.resolve(head.url) : undefined;
          for (const [i, d] of queue.entries()) {
            const previous = out[i - 1]?.result.statusCode ?? 0;
            if (
              d.rank !== i + 1 ||
              (i > 0 && (performance.now() > lastStart || previous < 200 || previous >= 300))
            ) {
              released.push(...queue.slice(i).map((r) => r.id));
              break;
            }
            out.push({ delivery: d, result: await this.attempt(d, checked, timeoutMs) });
          }
          return out;
        }),
      )
    ).flat();
    return { sent, released };
  }

  private async attempt(
    d: OutboundDelivery,
    checked: PinnedAddress | { refused: string } | undefined,
    timeoutMs: number,
  ): Promise<SentAttempt['result']> {
    // A secret that cannot be opened (the data key unreadable, the key file without its key) fails
    // this attempt like any other error, and it is retried.
    if (!d.secrets || !checked) return refusedResult('the signing secret could not be opened');
    if ('refused' in checked) return refusedResult(checked.refused);
    const secrets = d.secrets;
    return withTraceparent(d.traceparent, () =>
      inSpan(
        'webhook attempt',
        {
          'tenantry.endpoint_id': d.endpointId,
          'tenantry.event_id': d.eventId,
          'tenantry.attempt': d.attempt,
        },
        async (span) => {
          const request = signRequest(d, secrets);
          const traceparent = currentTraceparent();
          if (traceparent) request.headers.traceparent = traceparent;
          const r = await post(d.url, request, timeoutMs, checked, this.agents.for(checked));
          if (r.statusCode !== null) span.setAttribute('http.response.status_code', r.statusCode);
          return r;
        },
        SpanKind.CLIENT,
      ),
    );
  }

  async close(): Promise<void> {
    await this.agents.close();
  }
}
