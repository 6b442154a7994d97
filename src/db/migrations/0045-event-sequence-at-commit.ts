import { type Kysely, sql } from 'kysely';

/**
 * Event sequence numbers are assigned at commit (issue 17: one tenant's changes no longer serialise).
 *
 * Until now an event's `seq` came from its stream's counter row (`event_sequences`), bumped by the
 * statement that inserted the event, so the row lock was held from there to the end of the
 * transaction and serialised every change of a tenant. Now the event is inserted without a `seq`,
 * and a deferred constraint trigger numbers it at COMMIT, after the rest of the transaction's work:
 * the counter's row lock is held only while the transaction commits.
 *
 * - The first firing in a transaction numbers all of the transaction's events (the later firings
 *   find theirs numbered): streams in order (so two transactions that write to the same streams
 *   take their counter locks in one order), events of a stream in the order they were appended.
 * - Guarantees kept: a stream's sequence is gap-free (a transaction that rolls back, before or
 *   during its commit, rolls back its bump) and in commit order (the counter row is locked until
 *   the transaction has committed, so the next number goes to a later commit). No committed event
 *   is without `seq` (the trigger cannot be skipped; `set constraints … immediate` only makes it
 *   fire at the end of the inserting statement instead, which is still correct).
 * - The webhook fan-out and the NOTIFY that need the number move into the same trigger
 *   (`tenantry_event_appended_unchecked`): the row-level security checked the caller's scope when it
 *   inserted the event.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter table outbox_events alter column seq drop not null;

create function tenantry_sequence_events() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  s record;
  last bigint;
  e record;
begin
  if not exists (select from outbox_events where id = new.id and seq is null) then
    return null;
  end if;
  for s in
    select stream, count(*) as n from outbox_events
    where txid = pg_current_xact_id() and seq is null
    group by stream order by stream
  loop
    insert into event_sequences as c (stream, seq) values (s.stream, s.n)
      on conflict (stream) do update set seq = c.seq + s.n
      returning c.seq into last;
    for e in
      with numbered as (
        select id, last - s.n + row_number() over (order by position) as seq
        from outbox_events
        where txid = pg_current_xact_id() and seq is null and stream = s.stream
      )
      update outbox_events o set seq = numbered.seq from numbered where o.id = numbered.id
      returning o.id, o.tenant_id, o.type, o.subject, o.seq
    loop
      perform tenantry_event_appended_unchecked(e.id, e.tenant_id, e.type, e.subject, e.seq);
    end loop;
  end loop;
  return null;
end $$;
revoke all on function tenantry_sequence_events() from public;

create constraint trigger outbox_events_sequence after insert on outbox_events
  deferrable initially deferred for each row execute function tenantry_sequence_events();
`.execute(db);
}
