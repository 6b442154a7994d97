import { type Kysely, sql } from 'kysely';
import { NUMBER_MANY_EVENTS } from './0067-event-numbering-one-event.js';

/**
 * Event numbering at commit (migrations 0045, 0058, 0067): a change's one event in one statement (issue 24).
 * Profiled under the HTTP suite's apply load (`npx tsx bench/profile-apply.ts`), a change's one event
 * cost, at commit, after the checks that it was still unnumbered and was the transaction's only
 * pending one: the counter upsert, the update numbering the event, and a nested security-definer
 * call (`tenantry_event_appended_unchecked`) with statements of its own (the deliveries' insert, the
 * NOTIFY) and its own setup (search path, security context).
 *
 * - One pending event (every change of the change path): the counter bump, the numbering and the
 *   deliveries are one statement, and the NOTIFYs follow it; no nested function call.
 * - The checks are 0067's: a primary-key probe of the firing's own event first (a batch's later
 *   firings, one per event, return after it: folding it into the count as a one-time filter made
 *   them dearer, measured on batches of 2,000 events), then the count of pending events.
 * - More: the statement of 0067, unchanged.
 *
 * Seven statements per numbered event become four (probe, count, this one, NOTIFY). Measured with the
 * apply load alternating 0067's function and this one in one run (3 rounds, 2 shared cores, load
 * 11-15): the applies' statement time 1.58 against 1.75 ms per apply (medians), throughput within
 * the noise (198 against 201 req/s). What bounds the commit is the NOTIFY: see NOTIFY_AB in
 * bench/profile-apply.ts.
 *
 * Unchanged: the guarantees of 0045 (gap-free per stream, in commit order, no committed event
 * without `seq`, streams' counters locked in stream order), the trigger and its firing, the
 * endpoints an event goes to (`tenantry_webhook_wants`), the notifications (the stream on
 * `tenantry_events`; `tenantry_webhooks` when a delivery was made).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create or replace function tenantry_sequence_events() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  pending int;
  one_id uuid;
  one_stream text;
  delivered bigint;
  streams bigint;
begin
  if not exists (select from outbox_events where id = new.id and seq is null) then
    return null;
  end if;
  select count(*), (array_agg(p.id))[1], (array_agg(p.stream))[1] into pending, one_id, one_stream
  from (select id, stream from outbox_events where txid = pg_current_xact_id() and seq is null limit 2) p;
  if pending = 1 then
    with bumped as (
      insert into event_sequences as c (stream, seq) values (one_stream, 1)
      on conflict (stream) do update set seq = c.seq + 1
      returning c.seq
    ), numbered as (
      update outbox_events o set seq = b.seq from bumped b where o.id = one_id
      returning o.id, o.tenant_id, o.type, o.subject, o.stream, o.seq
    ), deliveries as (
      insert into webhook_deliveries (tenant_id, endpoint_id, event_id, stream, seq)
      select e.tenant_id, e.id, n.id, n.stream, n.seq
      from numbered n join webhook_endpoints e on tenantry_webhook_wants(e, n.tenant_id, n.type, n.subject)
      returning 1
    )
    select count(*) into delivered from deliveries;
    perform pg_notify('tenantry_events', one_stream);
    if delivered > 0 then
      perform pg_notify('tenantry_webhooks', '');
    end if;
    return null;
  end if;
${sql.raw(NUMBER_MANY_EVENTS)}revoke all on function tenantry_sequence_events() from public;
`.execute(db);
}
