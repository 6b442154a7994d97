import { type RawBuilder, sql } from 'kysely';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import type { StoredSecret } from './webhook-secrets.js';

/** A claimed delivery with everything needed to send it. */
export interface ClaimedDelivery {
  id: string;
  endpoint_id: string;
  tenant_id: string | null;
  event_id: string;
  stream: string;
  seq: number;
  attempts: number;
  trigger: 'scheduled' | 'manual';
  /** Its place in its (endpoint, stream) queue when claimed: 1 is the head. */
  rank: number;
  url: string;
  /** Sealed (src/secrets): bound to the endpoint's tenant and slug. */
  secrets: StoredSecret[];
  endpoint_tenant_id: string | null;
  endpoint_slug: string;
  event_tenant_id: string | null;
  type: string;
  subject: string;
  time: Date;
  data: unknown;
  correlation_id: string;
  txid: string;
  position: number;
  /** W3C trace context of the change that wrote the event. */
  traceparent: string | null;
}

/**
 * Claims due deliveries for dispatcher `owner` until `leaseMs` from now, in a transaction of its
 * own as the platform: the heads of up to `queues` (endpoint, stream) queues,
 * oldest head first, and behind each head up to `depth - 1` of its next deliveries, in order (the
 * dispatcher sends them one after the other and stops a queue at its first failure, releasing the
 * rest: `releaseDeliveries`). `rank` is a delivery's place in its queue (1: the head).
 *
 * A head's attempt is counted by the claim, so an attempt of a dispatcher that dies while sending it
 * still counts. The deliveries behind it are counted by their settlement (`completeDeliveries`):
 * one in flight when its dispatcher dies is sent again without its attempt counted, once.
 *
 * Concurrency contract:
 * - Claims are serialised by a transaction-level advisory lock, and `for update of d skip locked`
 *   leaves rows another transaction holds: concurrent dispatchers never claim the same row, and a
 *   claim sees every earlier claim committed. A claimed row is owned until `locked_until`. A
 *   dispatcher that dies mid-delivery loses the lease and the row is claimed again (at-least-once;
 *   the same `webhook-id`, the event id, is sent).
 * - Per-endpoint, per-tenant order: a delivery is claimable only when every pending delivery before
 *   it in its (endpoint, stream) queue is claimable too and claimed with it. A head waiting for its
 *   retry, or in flight, blocks the events behind it; a dead-lettered one no longer does. A row
 *   skipped because it was locked leaves a gap: the dispatcher sends nothing behind a gap. This is
 *   why a generic job queue (pg-boss, graphile-worker) does not fit: they run jobs independently and
 *   cannot hold back job n+1 of one key until job n has succeeded or been given up.
 * - Deliveries of an agent-held cell's endpoints are claimed by that agent only (`scope`), those of
 *   every other endpoint by the control plane's dispatchers only.
 * - A suspended tenant's deliveries are held (src/workflows, `tenant_suspensions.webhooks_held`),
 *   except its lifecycle events (`tenant.*`, `workflow.*`), which pass the held ones; the held ones
 *   go out in their order once the tenant is resumed.
 */
export async function claimDeliveries(
  db: Db,
  owner: string,
  queues: number,
  leaseMs: number,
  depth = 1,
  /** Whose deliveries: the control plane's (default) or those of one agent-held cell. */
  scope: ClaimScope = { kind: 'control-plane' },
): Promise<ClaimedDelivery[]> {
  return asPlatform(db, async (trx) => {
    await sql`select pg_advisory_xact_lock(hashtext('tenantry.webhook_claim'))`.execute(trx);
    const r = await sql<ClaimedDelivery>`
      with ranked as (
        select d.id, d.next_attempt_at, d.endpoint_id, d.stream,
          row_number() over q as rank,
          bool_and(d.next_attempt_at <= now() and (d.locked_until is null or d.locked_until < now())) over q as ready
        from webhook_deliveries d
        join webhook_endpoints e on e.id = d.endpoint_id
        where d.status = 'pending'
          and e.deleted_at is null and coalesce((e.spec ->> 'enabled')::boolean, true)
          and not ${held(sql`d`)}
          and ${scopeOf(scope)}
        window q as (partition by d.endpoint_id, d.stream order by d.seq)
      ),
      heads as (
        select endpoint_id, stream from ranked where rank = 1 and ready order by next_attempt_at limit ${queues}
      ),
      picked as (
        select r.id, r.rank from ranked r join heads h using (endpoint_id, stream)
        where r.ready and r.rank <= ${depth}
      ),
      due as (
        select d.id, p.rank from webhook_deliveries d join picked p on p.id = d.id
        for update of d skip locked
      )
      update webhook_deliveries d
      set locked_by = ${owner}, locked_until = now() + ${leaseMs} * interval '1 millisecond',
          attempts = d.attempts + case when due.rank = 1 then 1 else 0 end, updated_at = now()
      from due, webhook_endpoints e, outbox_events o
      where d.id = due.id and e.id = d.endpoint_id and o.id = d.event_id
      returning d.id, d.endpoint_id, d.tenant_id, d.event_id, d.stream, d.seq, d.attempts, d.trigger,
        due.rank::int as rank,
        e.spec ->> 'url' as url, e.secrets, e.tenant_id as endpoint_tenant_id, e.slug as endpoint_slug,
        o.tenant_id as event_tenant_id, o.type, o.subject, o.time, o.data,
        o.correlation_id, o.txid::text as txid, o.position, o.traceparent`.execute(trx);
    return r.rows;
  });
}

/**
 * Who sends a delivery (issue 22): an endpoint of a tenant whose cell is held by a joined agent (not
 * the in-process agent of the embedded default) is that agent's, sent from the data plane; every
 * other one (platform-wide endpoints included) is the control plane's.
 */
export type ClaimScope = { kind: 'control-plane' } | { kind: 'cell'; cellId: string };

function scopeOf(scope: ClaimScope): RawBuilder<unknown> {
  const agentCell = sql`select 1 from tenants t join cell_agents a on a.cell_id = t.cell_id
    where t.id = e.tenant_id and not a.embedded`;
  return scope.kind === 'cell'
    ? sql`exists (${agentCell} and t.cell_id = ${scope.cellId}::uuid)`
    : sql`not exists (${agentCell})`;
}

/**
 * Gives back claimed deliveries that were not attempted (behind a failure or a gap in their queue,
 * or past the lease): unlocked. Only while `owner` still holds them.
 */
export async function releaseDeliveries(trx: Trx, owner: string, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await sql`
    update webhook_deliveries set locked_by = null, locked_until = null, updated_at = now()
    where id = any(${ids}::uuid[]) and locked_by = ${owner}`.execute(trx);
}

/** Whether delivery `d` is held: its stream's tenant is suspended and its event is no lifecycle event. */
function held(d: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`exists (
    select 1 from tenant_suspensions s, outbox_events o
    where s.tenant_id::text = ${d}.stream and s.webhooks_held and o.id = ${d}.event_id
      and o.type not like 'dev.tenantry.tenant.%' and o.type not like 'dev.tenantry.workflow.%')`;
}
