import { setMaxListeners } from 'node:events';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { asPlatform, type Db } from '../db/database.js';
import type { EventNotifier } from '../events/event-notifier.js';
import { type SecretCipher, secretCipherFor } from '../secrets/index.js';
import { type ClaimedDelivery, claimDeliveries } from '../webhooks/claim-deliveries.js';
import type { Settlement } from '../webhooks/complete-delivery.js';
import { outcomeOf, settleRound } from '../webhooks/settle-round.js';
import { attemptOf, eventBody, PIPELINE_DEPTH } from '../webhooks/webhook-dispatcher.js';
import { openSecrets } from '../webhooks/webhook-secret-sealing.js';
import { signingSecrets } from '../webhooks/webhook-secrets.js';
import type { AgentPublicKey } from './agent-webhook-secrets.js';
import { sealForAgent } from './agent-webhook-secrets.js';

/** The lease owner of the deliveries an agent claimed: its cell, so only that cell's agent settles them. */
export const agentOwner = (cellId: string) => `cell-agent:${cellId}`;

/** One delivery handed to an agent: what it sends, as the control plane's dispatcher would. */
export interface AgentDelivery {
  id: string;
  endpointId: string;
  stream: string;
  eventId: string;
  rank: number;
  attempt: number;
  url: string;
  body: string;
  traceparent: string | null;
}

export interface AgentClaim {
  /** The claim's lease and the timeout of one attempt: no attempt starts past leaseMs - timeoutMs. */
  leaseMs: number;
  timeoutMs: number;
  deliveries: AgentDelivery[];
  /** Per endpoint: its signing secrets sealed for the agent's key (JWE), or null if they could not be opened. */
  secrets: Record<string, string | null>;
}

/** One attempt an agent made, as it reports it. */
export interface ReportedAttempt {
  id: string;
  attempt: number;
  startedAt: string;
  latencyMs: number;
  statusCode: number | null;
  responseExcerpt: string | null;
  error: string | null;
  retryAfterMs: number | null;
}

/**
 * Webhook delivery in the data plane (issue 22), the control plane's side: for a cell held by a
 * joined agent, the agent claims its cell's deliveries through its authenticated API (the same
 * claim as the dispatcher's, with per-(endpoint, tenant) order, leases and holds, limited to the
 * endpoints of the cell's tenants), sends them from the data plane, and reports each attempt. The
 * control plane keeps the record: it decides what an attempt comes to (retry with backoff, dead
 * letter, endpoint disabled) and settles exactly as for its own attempts (src/webhooks/settle-round.ts).
 * The control plane's dispatcher never claims these deliveries.
 */
export class AgentWebhooksService {
  private readonly cipher: SecretCipher;
  private readonly closing = (() => {
    const c = new AbortController();
    setMaxListeners(0, c.signal);
    return c;
  })();

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly log: Logger,
    /** Wakes a waiting claim when deliveries are written (LISTEN); without it, it polls. */
    private readonly notifier?: EventNotifier,
  ) {
    this.cipher = secretCipherFor(db, config);
  }

  /** Ends every waiting claim now (the server is closing). */
  close(): void {
    this.closing.abort();
  }

  /**
   * Claims up to `queues` queues of the cell's deliveries for its agent, waiting up to `waitMs` for
   * one to be due. The endpoints' signing secrets are opened here and sealed for `publicKey`.
   */
  async claim(
    cellId: string,
    publicKey: AgentPublicKey,
    queues: number,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<AgentClaim> {
    const { webhookLeaseMs: leaseMs, webhookTimeoutMs: timeoutMs } = this.config.events;
    const deadline = Date.now() + waitMs;
    const signals = signal ? [this.closing.signal, signal] : [this.closing.signal];
    let claimed: ClaimedDelivery[] = [];
    for (;;) {
      let woken = false;
      const unsubscribe = this.notifier?.subscribe('tenantry_webhooks', () => {
        woken = true;
      });
      try {
        claimed = await claimDeliveries(this.db, agentOwner(cellId), queues, leaseMs, PIPELINE_DEPTH, {
          kind: 'cell',
          cellId,
        });
      } finally {
        unsubscribe?.();
      }
      const left = deadline - Date.now();
      if (claimed.length > 0 || left <= 0 || signals.some((x) => x.aborted)) break;
      if (woken) continue;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          off?.();
          for (const x of signals) x.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, Math.min(left, this.config.events.pollMs));
        for (const x of signals) x.addEventListener('abort', done, { once: true });
        const off = this.notifier?.subscribe('tenantry_webhooks', done);
      });
    }
    const secrets: Record<string, string | null> = {};
    const firstOf = new Map<string, ClaimedDelivery>();
    for (const d of claimed) if (!firstOf.has(d.endpoint_id)) firstOf.set(d.endpoint_id, d);
    const now = new Date();
    for (const [endpointId, d] of firstOf) {
      try {
        const plain = await openSecrets(this.cipher, d.secrets, {
          tenantId: d.endpoint_tenant_id,
          slug: d.endpoint_slug,
        });
        secrets[endpointId] = await sealForAgent(signingSecrets(plain, now), publicKey, {
          cellId,
          endpointId,
        });
      } catch (err) {
        // The agent fails these attempts (retried), as the dispatcher does.
        this.log.error({ err, endpoint: endpointId }, 'the signing secret could not be opened');
        secrets[endpointId] = null;
      }
    }
    return {
      leaseMs,
      timeoutMs,
      secrets,
      deliveries: claimed.map((d) => ({
        id: d.id,
        endpointId: d.endpoint_id,
        stream: d.stream,
        eventId: d.event_id,
        rank: d.rank,
        attempt: attemptOf(d),
        url: d.url,
        body: eventBody(d, this.config.source),
        traceparent: d.traceparent,
      })),
    };
  }

  /**
   * The agent's attempts and the deliveries it did not attempt (released). Only deliveries this
   * cell's agent holds are settled or released; anything else (another cell's, a lease taken over)
   * is counted stale and changes nothing.
   */
  async report(
    cellId: string,
    attempts: ReportedAttempt[],
    released: string[],
  ): Promise<{ accepted: number; stale: number }> {
    const owner = agentOwner(cellId);
    const ids = [...new Set(attempts.map((a) => a.id))];
    const rows =
      ids.length === 0
        ? []
        : await asPlatform(this.db, async (trx) => {
            const r = await sql<Settlement['delivery']>`
              select d.id, d.tenant_id, d.endpoint_id, d.event_id, d.attempts, d.trigger, o.correlation_id
              from webhook_deliveries d join outbox_events o on o.id = d.event_id
              where d.id = any(${ids}::uuid[]) and d.locked_by = ${owner} and d.status = 'pending'`.execute(
              trx,
            );
            return r.rows;
          });
    const byId = new Map(rows.map((r) => [r.id, r]));
    const settlements: Settlement[] = [];
    for (const a of attempts) {
      const d = byId.get(a.id);
      if (!d) continue;
      byId.delete(a.id);
      // The head's attempt was counted by the claim; one behind it is the next one.
      const attempt = Math.min(Math.max(a.attempt, d.attempts, 1), d.attempts + 1);
      const result = {
        startedAt: new Date(a.startedAt),
        latencyMs: a.latencyMs,
        statusCode: a.statusCode,
        responseExcerpt: a.responseExcerpt,
        error: a.error,
        retryAfterMs: a.retryAfterMs,
      };
      settlements.push({
        delivery: { ...d, attempts: attempt },
        result,
        outcome: outcomeOf(attempt, result, this.config.events.webhookRetrySchedule),
      });
    }
    const settled = await settleRound(this.db, owner, this.config.events, settlements, released);
    return { accepted: settled.size, stale: attempts.length - settled.size };
  }
}
