import { setMaxListeners } from 'node:events';
import { setTimeout as pause } from 'node:timers/promises';
import type { Logger } from 'pino';
import { queuesOf } from '../webhooks/webhook-dispatcher.js';
import { type OutboundDelivery, WebhookSender } from '../webhooks/webhook-sender.js';
import { AgentKey } from './agent-webhook-secrets.js';
import type { AgentClaim, ReportedAttempt } from './agent-webhooks.service.js';

export interface AgentWebhooksOptions {
  /** The control plane's URL. */
  server: string;
  /** The cell agent whose credential it uses (joined and rotated by ./cell-agent.ts). */
  agent: { readonly cellId: string | undefined; readonly credential: string | undefined };
  /** Networks the agent may send to although private (TENANTRY_WEBHOOK_ALLOWED_NETWORKS where it runs). */
  allowedNetworks: readonly string[];
  logger: Logger;
  /** Seconds a claim waits for a due delivery. */
  waitSeconds?: number;
  /** Queues per claim. */
  queues?: number;
}

/**
 * Webhook delivery in the data plane (issue 22), the agent's side: claims its cell's due deliveries
 * through its agent API (long poll), opens each endpoint's signing secrets with its own key (made at
 * start, in memory only: src/agent/agent-webhook-secrets.ts), sends them from here with the same
 * sender as the control plane's dispatcher (order per queue, SSRF guard with this side's allowed
 * networks, Standard Webhooks signatures), and reports every attempt. Reports that could not be
 * sent are kept and sent first at the next round; a delivery whose lease ran out meanwhile is
 * claimed and sent again (at least once, same webhook-id).
 */
export class AgentWebhooks {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly aborts = new AbortController();
  private key: AgentKey | undefined;
  private readonly sender: WebhookSender;
  private unreported: { attempts: ReportedAttempt[]; released: string[] }[] = [];
  private reachable = true;
  /** Attempts made (tests). */
  attempts = 0;

  constructor(private readonly o: AgentWebhooksOptions) {
    setMaxListeners(100, this.aborts.signal);
    // The lease and the timeout come with each claim; this one only bounds a request's default.
    this.sender = new WebhookSender(o.allowedNetworks, 10_000);
  }

  async start(): Promise<void> {
    this.key = await AgentKey.generate();
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.aborts.abort();
    await this.loop;
    await this.sender.close();
  }

  private async call<T>(route: string, body: unknown, timeoutMs: number): Promise<T> {
    const { cellId, credential } = this.o.agent;
    if (!cellId || !credential) throw new Error('the agent has not joined its cell yet');
    const res = await fetch(new URL(`/v1/agent/${cellId}/${route}`, this.o.server), {
      method: 'POST',
      headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.any([this.aborts.signal, AbortSignal.timeout(timeoutMs)]),
    });
    const text = await res.text();
    if (res.status >= 400) throw new Error(`${route}: HTTP ${res.status} ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }

  private async flush(): Promise<void> {
    while (this.unreported.length > 0) {
      const next = this.unreported[0]!;
      await this.call('webhooks/attempts', next, 30_000);
      this.unreported.shift();
    }
  }

  /** `ms`, or less once the agent stops. */
  private sleep(ms: number): Promise<void> {
    return pause(ms, undefined, { signal: this.aborts.signal }).catch(() => undefined);
  }

  private async run(): Promise<void> {
    let delay = 200;
    while (this.running) {
      try {
        await this.flush();
        await this.round();
        if (!this.reachable) this.o.logger.info('webhook deliveries: control plane reachable again');
        this.reachable = true;
        delay = 200;
      } catch (err) {
        if (!this.running) return;
        if (this.reachable)
          this.o.logger.warn(
            { err: (err as Error).message },
            'webhook deliveries: control plane unreachable',
          );
        this.reachable = false;
        await this.sleep(delay);
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  /** One claim, sent and reported. */
  private async round(): Promise<void> {
    const key = this.key!;
    const wait = this.o.waitSeconds ?? 25;
    const claim = await this.call<AgentClaim>(
      'webhooks/claim',
      { publicKey: key.publicKey, queues: this.o.queues ?? 32, wait },
      (wait + 10) * 1000,
    );
    const receivedAt = performance.now();
    if (claim.deliveries.length === 0) return;
    const cellId = this.o.agent.cellId!;
    const secrets = new Map<string, string[] | null>();
    for (const [endpointId, sealed] of Object.entries(claim.secrets)) {
      const opened = sealed
        ? await key.open(sealed, { cellId, endpointId }).catch((err: unknown) => {
            this.o.logger.error({ err: (err as Error).message, endpointId }, 'a signing secret did not open');
            return null;
          })
        : null;
      secrets.set(endpointId, opened);
    }
    const outbound: (OutboundDelivery & { stream: string })[] = claim.deliveries.map((d) => ({
      ...d,
      secrets: secrets.get(d.endpointId) ?? null,
    }));
    const { sent, released } = await this.sender.send(
      queuesOf(outbound),
      receivedAt + claim.leaseMs - claim.timeoutMs,
      claim.timeoutMs,
    );
    this.attempts += sent.length;
    this.unreported.push({
      attempts: sent.map(({ delivery: d, result: r }) => ({
        id: d.id,
        attempt: d.attempt,
        startedAt: r.startedAt.toISOString(),
        latencyMs: r.latencyMs,
        statusCode: r.statusCode,
        responseExcerpt: r.responseExcerpt,
        error: r.error?.slice(0, 2000) ?? null,
        retryAfterMs: r.retryAfterMs,
      })),
      released,
    });
    await this.flush();
  }
}
