import { type Kysely, sql } from 'kysely';

/**
 * The event numbering trigger (migrations 0045, 0058) fans its events out in its own statement
 * (issue 24). Profiled under `bench/profile-apply.ts`, `tenantry_sequence_events` was PostgreSQL's
 * costliest function on POST /v1/apply: after numbering, it called `tenantry_event_appended_unchecked`
 * once per event, a nested PL/pgSQL, security-definer function with its own `search_path` (a
 * configuration change saved and restored on every call), one planned insert and one or two
 * NOTIFYs each. Now the numbering statement also inserts the webhook deliveries of all its events
 * (one insert) and notifies each stream once; `tenantry_webhooks` once if any delivery was made.
 *
 * Unchanged: which endpoints an event goes to (the rule is now one function,
 * `tenantry_webhook_wants`, a plain SQL expression the planner inlines, used here and by
 * `tenantry_event_appended_unchecked`), the deliveries' stream and sequence, the numbering and its
 * concurrency contract (see 0045 and 0058: counters bumped at commit, in stream order), the
 * trigger and its firing. Listeners of `tenantry_events` and `tenantry_webhooks` get the same
 * wake-ups: PostgreSQL folded a transaction's identical notifications into one already.
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
  delivered bigint;
  streams bigint;
begin
  if not exists (select from outbox_events where id = new.id and seq is null) then
    return null;
  end if;
  with pending as materialized (
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
revoke all on function tenantry_sequence_events() from public;
`.execute(db);
}
