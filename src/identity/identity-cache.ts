/** What the invalidation source must offer: the process's LISTEN connection (src/events/event-notifier.ts). */
export interface IdentityInvalidation {
  readonly listening: boolean;
  subscribe(channel: 'tenantry_identity', fn: (payload: string) => void): () => void;
  watch(fn: (listening: boolean) => void): () => void;
}

interface Entry<T> {
  value: T;
  /** Epoch milliseconds after which the entry is not used. */
  until: number;
}

/**
 * The identities this process verified (what `tenantry_identify` answered for a token's tenant,
 * issuer, principal, application and session), so that a request of a known caller costs no
 * database round trip before its own work (issue 24).
 *
 * Correctness rests on invalidation, not on the time bound:
 * - Every change that can change an answer sends `NOTIFY tenantry_identity` at commit (triggers of
 *   migration 0047: sessions revoked or changed, break-glass elevations, tenants deleted or renamed),
 *   whichever process or statement made it; each notification empties the cache of every process.
 * - Notifications can be missed only while LISTEN is not in place: the cache keeps and answers
 *   nothing then, and empties itself when it is in place again. Without an invalidation source
 *   (`attach` never called) it is off.
 * - The process's own mutations (`forgetAll` after every unsafe request, before its answer is sent)
 *   are forgotten at once, so a caller who revoked a session finds it revoked on its next request
 *   even if the notification is still on its way.
 * - An identity read before an invalidation is not stored after it (the epoch it began in is over),
 *   so a read racing with a revocation cannot put the old answer back.
 * - Entries end at `ttlMs` at the latest, and earlier where the answer itself ends (the session's or
 *   the elevation's expiry: `until`), and the cache holds at most `maxEntries` (oldest out first).
 * Only answers that admitted the caller are kept: refusals are decided and audited every time.
 */
export class IdentityCache<T> {
  private readonly entries = new Map<string, Entry<T>>();
  private epoch = 0;
  private live = false;
  private detach: (() => void) | undefined;

  constructor(private readonly opts: { ttlMs: number; maxEntries: number; now?: () => number }) {}

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  /** Turns the cache on while `source` listens; every notification or lost connection empties it. */
  attach(source: IdentityInvalidation): void {
    if (this.opts.ttlMs <= 0) return;
    this.detach?.();
    const unsubscribe = source.subscribe('tenantry_identity', () => this.forgetAll());
    const unwatch = source.watch((listening) => {
      this.forgetAll();
      this.live = listening;
    });
    this.live = source.listening;
    this.detach = () => {
      unsubscribe();
      unwatch();
      this.live = false;
      this.forgetAll();
    };
  }

  /** Turns the cache off (the server closes). */
  close(): void {
    this.detach?.();
    this.detach = undefined;
  }

  get enabled(): boolean {
    return this.live;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): T | undefined {
    if (!this.live) return undefined;
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.until <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  /** The epoch to give `set` for a value read from now on. */
  begin(): number {
    return this.epoch;
  }

  /** Keeps `value` until `until` (capped at the TTL), unless an invalidation came since `begin()`. */
  set(key: string, value: T, epoch: number, until = Number.POSITIVE_INFINITY): void {
    if (!this.live || epoch !== this.epoch) return;
    const now = this.now();
    const end = Math.min(until, now + this.opts.ttlMs);
    if (end <= now) return;
    this.entries.delete(key);
    this.entries.set(key, { value, until: end });
    while (this.entries.size > this.opts.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  /** Forgets every identity and every read under way. */
  forgetAll(): void {
    this.epoch++;
    this.entries.clear();
  }
}
