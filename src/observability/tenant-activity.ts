import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope } from '../db/database.js';

export interface ActivityDay {
  day: string;
  /** API requests made by the tenant's callers. */
  requests: number;
  clientErrors: number;
  serverErrors: number;
  /** Request latency percentiles in milliseconds (null on a day without requests). */
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  /** Audited operations on the tenant's objects, by outcome. */
  changes: number;
  denied: number;
  failed: number;
}

/**
 * Per-tenant activity per UTC day, from SQL over the request log and the audit log (the tenant
 * dashboard query pack of seed 003), in the caller's row-level-security scope.
 */
export async function tenantActivity(
  db: Db,
  ctx: RequestContext,
  tenantId: string,
  days: number,
): Promise<ActivityDay[]> {
  const { rows } = await inScope(db, ctx.scope, (trx) =>
    sql<{
      day: string;
      requests: string | null;
      client_errors: string | null;
      server_errors: string | null;
      p50: number | null;
      p95: number | null;
      p99: number | null;
      changes: string | null;
      denied: string | null;
      failed: string | null;
    }>`
      with days as (
        select generate_series(date_trunc('day', now() at time zone 'utc') - make_interval(days => ${days - 1}),
                               date_trunc('day', now() at time zone 'utc'), interval '1 day') as day),
      since as (select min(day) at time zone 'utc' as t from days),
      req as (
        select date_trunc('day', time at time zone 'utc') as day, count(*) as requests,
               count(*) filter (where status between 400 and 499) as client_errors,
               count(*) filter (where status >= 500) as server_errors,
               percentile_cont(0.5) within group (order by duration_ms) as p50,
               percentile_cont(0.95) within group (order by duration_ms) as p95,
               percentile_cont(0.99) within group (order by duration_ms) as p99
        from request_log where tenant_id = ${tenantId} and time >= (select t from since) group by 1),
      aud as (
        select date_trunc('day', time at time zone 'utc') as day,
               count(*) filter (where outcome = 'success') as changes,
               count(*) filter (where outcome = 'denied') as denied,
               count(*) filter (where outcome = 'failure') as failed
        from audit_records where tenant_id = ${tenantId} and time >= (select t from since) group by 1)
      select to_char(days.day, 'YYYY-MM-DD') as day, req.requests, req.client_errors, req.server_errors, req.p50, req.p95, req.p99,
             aud.changes, aud.denied, aud.failed
      from days left join req using (day) left join aud using (day) order by days.day`.execute(trx),
  );
  const n = (v: string | null) => Number(v ?? 0);
  const ms = (v: number | null) => (v === null ? null : Math.round(v * 100) / 100);
  return rows.map((r) => ({
    day: r.day,
    requests: n(r.requests),
    clientErrors: n(r.client_errors),
    serverErrors: n(r.server_errors),
    p50Ms: ms(r.p50),
    p95Ms: ms(r.p95),
    p99Ms: ms(r.p99),
    changes: n(r.changes),
    denied: n(r.denied),
    failed: n(r.failed),
  }));
}
