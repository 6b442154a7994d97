import { sql } from 'kysely';
import type { Db } from '../db/database.js';

export interface RateDecision {
  allowed: boolean;
  limit: number;
  windowSeconds: number;
  /** Requests left in the window after this one. */
  remaining: number;
  /** Seconds until the allowance is whole again (allowed), or until the next request may pass (refused). */
  resetSeconds: number;
}

/**
 * GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp) over a table that
 * every API process shares. One statement both decides and records: the upsert advances the
 * bucket's theoretical arrival time (TAT) only when the request conforms, and the row lock of
 * `insert … on conflict do update` serialises concurrent requests of one tenant and class across
 * processes. The database clock (`now()`) is the only clock, so API hosts need not agree on time.
 *
 * Why hand-written: `rate-limiter-flexible` (RateLimiterPostgres) is the maintained library for a
 * PostgreSQL-backed limiter and would have been used, but it is not installed here and packages may
 * not be added; GCRA is one SQL statement, so this stays small.
 */
export async function takeToken(
  db: Db,
  tenantId: string,
  cls: string,
  limit: number,
  windowSeconds: number,
): Promise<RateDecision> {
  const windowMs = windowSeconds * 1000;
  const intervalMs = windowMs / limit;
  const r = await sql<{ new_tat: Date | null; old_tat: Date | null; now: Date }>`
    with up as (
      insert into rate_limit_buckets as b (tenant_id, class, tat)
      values (${tenantId}, ${cls}, now() + ${intervalMs} * interval '1 millisecond')
      on conflict (tenant_id, class) do update
        set tat = greatest(b.tat, now()) + ${intervalMs} * interval '1 millisecond'
        where greatest(b.tat, now()) + ${intervalMs} * interval '1 millisecond'
              <= now() + ${windowMs} * interval '1 millisecond'
      returning tat
    )
    select (select tat from up) as new_tat,
           (select tat from rate_limit_buckets where tenant_id = ${tenantId} and class = ${cls}) as old_tat,
           now() as now`.execute(db);
  const row = r.rows[0]!;
  const now = row.now.getTime();
  if (row.new_tat) {
    const tat = row.new_tat.getTime();
    return {
      allowed: true,
      limit,
      windowSeconds,
      remaining: Math.max(0, Math.floor((now + windowMs - tat) / intervalMs)),
      resetSeconds: Math.max(0, Math.ceil((tat - now) / 1000)),
    };
  }
  // Refused: the next request conforms once TAT + interval - window has passed.
  const tat = row.old_tat?.getTime() ?? now;
  return {
    allowed: false,
    limit,
    windowSeconds,
    remaining: 0,
    resetSeconds: Math.max(1, Math.ceil((tat + intervalMs - windowMs - now) / 1000)),
  };
}
