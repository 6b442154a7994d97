import pg from 'pg';
import type { Logger } from 'pino';
import { reconnectDelay } from '../db/connection-errors.js';

export type NotifyChannel =
  | 'tenantry_events'
  | 'tenantry_webhooks'
  | 'tenantry_workflows'
  | 'tenantry_identity'
  /** A registry object changed (payload `<kind> <tenant> <id> <generation>`, or `*`; migration 0057). */
  | 'tenantry_objects'
  /** A cell agent's command was asked for (payload: the cell's id; src/agent/agent-commands.ts). */
  | 'tenantry_agent_commands';

/**
 * One LISTEN connection per process for PostgreSQL NOTIFY (issued by tenantry_event_appended at
 * commit). It only wakes readers early: every reader also polls, so a lost connection or a pooler
 * that drops LISTEN delays events by at most the poll interval, never loses them. A lost connection
 * is re-established with backoff (250 ms … 5 s), and LISTEN with it. The identity and object caches
 * (src/identity/identity-cache.ts, src/registry/object-cache.ts) have no poll to fall back on: it watches whether LISTEN is in
 * place (`watch`) and keeps nothing while it is not.
 */
export class EventNotifier {
  private client: pg.Client | undefined;
  private readonly listeners = new Map<NotifyChannel, Set<(payload: string) => void>>();
  private readonly watchers = new Set<(listening: boolean) => void>();
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private failures = 0;

  constructor(
    private readonly connectionString: string,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.stopped = false;
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.connectionString });
    client.on('notification', (n) => {
      for (const fn of this.listeners.get(n.channel as NotifyChannel) ?? []) fn(n.payload ?? '');
    });
    client.on('error', (err) => {
      if (this.client !== client) return; // a failed connect: handled below
      this.log.warn({ err }, 'event notifier connection lost; polling until it is back');
      this.reconnect();
    });
    // Ended without an error (the server closed it): the same, since nothing arrives any more.
    client.on('end', () => {
      if (this.client !== client) return;
      this.log.warn('event notifier connection ended; polling until it is back');
      this.reconnect();
    });
    try {
      await client.connect();
      await client.query(
        'listen tenantry_events; listen tenantry_webhooks; listen tenantry_workflows; listen tenantry_identity; listen tenantry_objects; listen tenantry_agent_commands',
      );
      if (this.stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      this.client = client;
      if (this.failures > 0) this.log.info('event notifier listening again');
      this.failures = 0;
      this.tell(true);
    } catch (err) {
      await client.end().catch(() => undefined);
      if (this.stopped) return;
      if (this.failures === 0) this.log.warn({ err }, 'event notifier cannot listen; polling');
      this.reconnect();
    }
  }

  private reconnect(): void {
    const old = this.client;
    this.client = undefined;
    if (old) this.tell(false);
    old?.end().catch(() => undefined);
    if (this.stopped || this.retry) return;
    this.retry = setTimeout(
      () => {
        this.retry = undefined;
        void this.connect();
      },
      reconnectDelay(this.failures++),
    );
    this.retry.unref();
  }

  /** Whether notifications arrive now (LISTEN is in place on a live connection). */
  get listening(): boolean {
    return this.client !== undefined;
  }

  /**
   * Called with false when the connection is lost (notifications may be missed from then on) and
   * with true once LISTEN is in place again: for readers that must not trust what they kept meanwhile.
   */
  watch(fn: (listening: boolean) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  private tell(listening: boolean): void {
    for (const fn of this.watchers) fn(listening);
  }

  subscribe(channel: NotifyChannel, fn: (payload: string) => void): () => void {
    const set = this.listeners.get(channel) ?? new Set();
    this.listeners.set(channel, set);
    set.add(fn);
    return () => set.delete(fn);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    const c = this.client;
    this.client = undefined;
    if (c) this.tell(false);
    await c?.end().catch(() => undefined);
  }
}
