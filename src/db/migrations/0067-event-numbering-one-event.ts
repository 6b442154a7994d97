import { type Kysely, sql } from 'kysely';

/**
 * Event numbering at commit (migrations 0045, 0058) made cheaper for its common case (issue 24).
 * Measured on one backend (a procedure appending one event and committing, 3,000 times, alternated
 * with the previous function): the trigger cost ~0.2 ms per transaction over the insert and commit,
 * for a statement of six CTEs (materialise the pending events, count per stream, bump, window-number,
 * update, fan out one by one) where the transaction had one event.
 *
 * - One pending event (every change of the change path): its stream's counter is bumped by one and
 *   the event numbered, two planned statements, then fanned out as before
 *   (`tenantry_event_appended_unchecked`). With one stream there is one counter lock, so the lock
 *   order of 0045 (streams sorted) holds trivially.
 * - More (a settlement batch, a promotion): the statement of 0058, except that the fan-out is one
 *   insert of every event's deliveries and one NOTIFY per stream, not a nested security-definer
 *   call per event; `tenantry_webhooks` once if any delivery was made.
 *
 * Which endpoints an event goes to is one rule, `tenantry_webhook_wants` (a plain SQL expression the
 * planner inlines), used by both paths. Unchanged: the guarantees of 0045 (gap-free per stream, in
 * commit order, no committed event without `seq`), the trigger and its firing, the wake-ups listeners
 * get (PostgreSQL already folded a transaction's identical notifications into one).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create function tenantry_webhook_wants(e webhook_endpoints, p_tenant uuid, p_type text, p_subject text)
returns boolean language sql stable as $$
  select e.deleted_at is null
    and coalesce((e.spec ->> 'enabled')::boolean, true)
    and (e.tenant_id is null or e.tenant_id = p_tenant)
    and (case when e.spec ? 'eventTypes' then e.spec -> 'eventTypes' ? p_type
              else p_type not like 'dev.tenantry.workflow.%' end)
    -- An endpoint is not sent the events about itself (its own creation, rotation, disabling).
    and p_subject <> 'webhookendpoints/' || e.id::text
$$;
revoke all on function tenantry_webhook_wants(webhook_endpoints, uuid, text, text) from public;

create or replace function tenantry_event_appended_unchecked(p_event uuid, p_tenant uuid, p_type text, p_subject text, p_seq bigint)
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
declare n integer;
begin
  insert into webhook_deliveries (tenant_id, endpoint_id, event_id, stream, seq)
  select e.tenant_id, e.id, p_event, coalesce(p_tenant::text, 'platform'), p_seq
  from webhook_endpoints e where tenantry_webhook_wants(e, p_tenant, p_type, p_subject);
  get diagnostics n = row_count;
  perform pg_notify('tenantry_events', coalesce(p_tenant::text, 'platform'));
  if n > 0 then perform pg_notify('tenantry_webhooks', ''); end if;
  return n;
end $$;

create or replace function tenantry_sequence_events() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  pending int;
  one_id uuid;
  one_stream text;
  last bigint;
  one record;
  delivered bigint;
  streams bigint;
begin
  if not exists (select from outbox_events where id = new.id and seq is null) then
    return null;
  end if;
  select count(*), (array_agg(p.id))[1], (array_agg(p.stream))[1] into pending, one_id, one_stream
  from (select id, stream from outbox_events where txid = pg_current_xact_id() and seq is null limit 2) p;
  if pending = 1 then
    insert into event_sequences as c (stream, seq) values (one_stream, 1)
      on conflict (stream) do update set seq = c.seq + 1
      returning c.seq into last;
    update outbox_events o set seq = last where o.id = one_id returning o.tenant_id, o.type, o.subject into one;
    perform tenantry_event_appended_unchecked(one_id, one.tenant_id, one.type, one.subject, last);
    return null;
  end if;
${sql.raw(NUMBER_MANY_EVENTS)}revoke all on function tenantry_sequence_events() from public;
`.execute(db);
}

/**
 * The body's end for a transaction with more than one pending event: number them all and fan them out
 * (the second point of the comment above `up`). Also the end of 0074's body, which changed only the one-event path before it.
 */
export const NUMBER_MANY_EVENTS = `  with pending as materialized (
    select id, stream, position from outbox_events
    where txid = pg_current_xact_id() and seq is null
  ), counted as (
    select stream, count(*) as n from pending group by stream
  ), bumped as (
    insert into event_sequences as c (stream, seq)
    select stream, counted.n from counted order by stream
    on conflict (stream) do update set seq = c.seq + excluded.seq
    returning c.stream, c.seq as last
  ), numbered as (
    select p.id, b.last - k.n + row_number() over (partition by p.stream order by p.position) as seq
    from pending p join counted k on k.stream = p.stream join bumped b on b.stream = p.stream
  ), sequenced as (
    update outbox_events o set seq = numbered.seq from numbered where o.id = numbered.id
    returning o.id, o.tenant_id, o.type, o.subject, o.seq, o.stream
  ), deliveries as (
    insert into webhook_deliveries (tenant_id, endpoint_id, event_id, stream, seq)
    select e.tenant_id, e.id, s.id, s.stream, s.seq
    from sequenced s join webhook_endpoints e on tenantry_webhook_wants(e, s.tenant_id, s.type, s.subject)
    order by s.stream, s.seq
    returning 1
  ), woken as (
    select pg_notify('tenantry_events', w.stream) from (select distinct stream from sequenced order by stream) w
  )
  select (select count(*) from deliveries), (select count(*) from woken) into delivered, streams;
  if delivered > 0 then
    perform pg_notify('tenantry_webhooks', '');
  end if;
  return null;
end $$;
`;
