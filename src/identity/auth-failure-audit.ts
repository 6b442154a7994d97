import { recordAuditAttempt } from '../audit/append-audit.js';
import type { Db } from '../db/database.js';

export interface AuthFailure {
  /** The client address (the request's source). */
  source: string;
  /** The refusal's stable code (`token.expired`, `token.issuer_untrusted`, …). */
  code: string;
  route: string;
  requestId: string;
  correlationId: string;
}

/**
 * Failed authentication goes into the audit log, rate-limited per source so that a flood of bad
 * tokens cannot fill it: at most `perSource` records per source in each window; the first record
 * of the next window says how many were left out (`suppressed`). Sources are remembered in a
 * bounded map (the oldest forgotten first). No principal is known: the actor is `anonymous`.
 */
export class AuthFailureAudit {
  private readonly sources = new Map<string, { windowStart: number; count: number; suppressed: number }>();

  constructor(
    private readonly db: Db,
    private readonly opts: { perSource: number; windowMs: number; maxSources: number } = {
      perSource: 10,
      windowMs: 60_000,
      maxSources: 10_000,
    },
    private readonly now: () => number = Date.now,
  ) {}

  /** Audits the failure unless its source is over its share; returns whether it was recorded. */
  async record(f: AuthFailure): Promise<boolean> {
    const t = this.now();
    let s = this.sources.get(f.source);
    if (!s || t - s.windowStart >= this.opts.windowMs) {
      const carried = s?.suppressed ?? 0;
      this.sources.delete(f.source);
      if (this.sources.size >= this.opts.maxSources) {
        const oldest = this.sources.keys().next().value;
        if (oldest !== undefined) this.sources.delete(oldest);
      }
      s = { windowStart: t, count: 0, suppressed: carried };
      this.sources.set(f.source, s);
    }
    if (s.count >= this.opts.perSource) {
      s.suppressed++;
      return false;
    }
    s.count++;
    const suppressed = s.suppressed;
    s.suppressed = 0;
    await recordAuditAttempt(
      this.db,
      {
        actor: { principal: 'anonymous', kind: 'user' },
        appId: null,
        sessionId: null,
        requestId: f.requestId,
        correlationId: f.correlationId,
      },
      {
        tenantId: null,
        action: 'authentication',
        outcome: 'denied',
        target: { kind: 'Route', slug: f.route },
        decision: {
          decision: 'deny',
          code: f.code,
          source: f.source,
          ...(suppressed > 0 ? { suppressed } : {}),
        },
      },
    );
    return true;
  }
}
