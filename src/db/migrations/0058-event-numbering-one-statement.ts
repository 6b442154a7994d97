import { type Kysely, sql } from 'kysely';

/**
 * Event numbering at commit (migration 0045) in one statement instead of one per stream and two per
 * event: profiled under `npm run bench -- http` (issue 24), every transaction that appends an event
 * (each change, each checkpoint publication, each settlement batch) ran the trigger's group-by, then
 * per stream an upsert of the counter and an update numbering its events. Now one statement bumps the
 * counters of all the transaction's streams (in stream order, as before, so two transactions writing
 * to the same streams lock their counters in one order), numbers every event (a stream's in the order
 * they were appended) and fans each out (`tenantry_event_appended_unchecked`, unchanged: webhook
 * deliveries and NOTIFY). What 0045 guarantees is unchanged: gap-free per stream, in commit order,
 * no committed event without `seq`; the trigger and its firing (deferred, per row; later firings find
 * their events numbered) are the same, only the function body is replaced.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create or replace function tenantry_sequence_events() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  fanned bigint;
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
  )
  select count(tenantry_event_appended_unchecked(s.id, s.tenant_id, s.type, s.subject, s.seq)) into fanned
  from (select * from sequenced order by stream, seq) s;
  return null;
end $$;
revoke all on function tenantry_sequence_events() from public;
`.execute(db);
}
