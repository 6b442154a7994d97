import { sql } from 'kysely';
import type { Logger } from 'pino';
import { asPlatform, type Db } from '../db/database.js';

export interface RequestLogEntry {
  time: Date;
  tenantId: string;
  method: string;
  route: string;
  status: number;
  durationMs: number;
  correlationId: string;
}

/**
 * Buffers tenants' request records and writes them in one multi-row INSERT per interval, so that
 * analytics cost the request path nothing but an array push. Analytics may lose the last interval
 * on a crash (they are not acknowledged writes); the buffer is bounded so a stalled database cannot
 * grow memory without limit. Also deletes rows older than the retention, once an hour.
 */
export class RequestLog {
  private buffer: RequestLogEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private lastPrune = 0;
  dropped = 0;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    private readonly opts: { intervalMs?: number; maxBuffered?: number; retentionDays?: number } = {},
  ) {}

  record(entry: RequestLogEntry): void {
    if (this.buffer.length >= (this.opts.maxBuffered ?? 50_000)) {
      this.dropped++;
      return;
    }
    this.buffer.push(entry);
  }

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.opts.intervalMs ?? 1000);
    this.timer.unref();
  }

  /** Writes what is buffered now; concurrent calls queue behind each other. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.write());
    return this.flushing;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private async write(): Promise<void> {
    const rows = this.buffer;
    this.buffer = [];
    try {
      if (rows.length > 0) {
        await asPlatform(this.db, (trx) =>
          sql`insert into request_log (time, tenant_id, method, route, status, duration_ms, correlation_id)
            select * from unnest(${rows.map((r) => r.time.toISOString())}::timestamptz[],
              ${rows.map((r) => r.tenantId)}::uuid[], ${rows.map((r) => r.method)}::text[],
              ${rows.map((r) => r.route)}::text[], ${rows.map((r) => r.status)}::integer[],
              ${rows.map((r) => r.durationMs)}::real[], ${rows.map((r) => r.correlationId)}::text[])`.execute(
            trx,
          ),
        );
      }
      if (Date.now() - this.lastPrune > 3_600_000) {
        this.lastPrune = Date.now();
        const days = this.opts.retentionDays ?? 30;
        await asPlatform(this.db, (trx) =>
          sql`delete from request_log where time < now() - make_interval(days => ${days})`.execute(trx),
        );
      }
    } catch (err) {
      this.log.warn({ err, rows: rows.length }, 'request log write failed; these records are dropped');
      this.dropped += rows.length;
    }
  }
}
