import { type RawBuilder, sql } from 'kysely';
import { asPlatform, type Db } from '../db/database.js';
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
 * Claims up to `limit` due deliveries for dispatcher `owner` until `leaseMs` from now, counting the
 * attempt, in a transaction of its own as the platform.
 *
 * Concurrency contract:
 * - `for update of d skip locked`: concurrent dispatchers never claim the same row; a claimed row is
 *   owned until `locked_until`. A dispatcher that dies mid-delivery loses the lease and the row is
 *   claimed again (at-least-once; the same `webhook-id`, the event id, is sent).
 * - Per-endpoint, per-tenant order: only the head of each (endpoint, stream) queue is claimable —
 *   no pending delivery with a smaller sequence may exist. A head waiting for its retry, or in
 *   flight, blocks the events behind it; a dead-lettered one no longer does. This is why a generic
 *   job queue (pg-boss, graphile-worker) does not fit: they run jobs independently and cannot hold
 *   back job n+1 of one key until job n has succeeded or been given up.
 * - A suspended tenant's deliveries are held (src/workflows, `tenant_suspensions.webhooks_held`),
 *   except its lifecycle events (`tenant.*`, `workflow.*`), which pass the held ones; the held ones
 *   go out in their order once the tenant is resumed.
 */
export async function claimDeliveries(
  db: Db,
  owner: string,
  limit: number,
  leaseMs: number,
): Promise<ClaimedDelivery[]> {
  return asPlatform(db, async (trx) => {
    const r = await sql<ClaimedDelivery>`
      with due as (
        select d.id from webhook_deliveries d
        join webhook_endpoints e on e.id = d.endpoint_id
        where d.status = 'pending' and d.next_attempt_at <= now()
          and (d.locked_until is null or d.locked_until < now())
          and e.deleted_at is null and coalesce((e.spec ->> 'enabled')::boolean, true)
          and not ${held(sql`d`)}
          and not exists (
            select 1 from webhook_deliveries p
            where p.endpoint_id = d.endpoint_id and p.stream = d.stream and p.status = 'pending' and p.seq < d.seq
              and not ${held(sql`p`)})
        order by d.next_attempt_at
        limit ${limit}
        for update of d skip locked
      )
      update webhook_deliveries d
      set locked_by = ${owner}, locked_until = now() + ${leaseMs} * interval '1 millisecond',
          attempts = d.attempts + 1, updated_at = now()
      from due, webhook_endpoints e, outbox_events o
      where d.id = due.id and e.id = d.endpoint_id and o.id = d.event_id
      returning d.id, d.endpoint_id, d.tenant_id, d.event_id, d.stream, d.seq, d.attempts, d.trigger,
        e.spec ->> 'url' as url, e.secrets, e.tenant_id as endpoint_tenant_id, e.slug as endpoint_slug,
        o.tenant_id as event_tenant_id, o.type, o.subject, o.time, o.data,
        o.correlation_id, o.txid::text as txid, o.position, o.traceparent`.execute(trx);
    return r.rows;
  });
}

/** Whether delivery `d` is held: its stream's tenant is suspended and its event is no lifecycle event. */
function held(d: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`exists (
    select 1 from tenant_suspensions s, outbox_events o
    where s.tenant_id::text = ${d}.stream and s.webhooks_held and o.id = ${d}.event_id
      and o.type not like 'dev.tenantry.tenant.%' and o.type not like 'dev.tenantry.workflow.%')`;
}
