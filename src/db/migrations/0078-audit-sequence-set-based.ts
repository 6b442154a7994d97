import { type Kysely, sql } from 'kysely';

/**
 * tenantry_audit_sequence (migration 0051) without its loop over the batch's chains (issue 24): a
 * batch of a light load holds about one entry per chain, so the loop's two statements per chain
 * (lock the head, upsert it) were two statements per entry. Now the heads are locked (in chain
 * order), checked and moved in one statement. Same checks, same refusal, same signature: the whole
 * batch is refused unless every entry was queued and, per chain, the positions continue the head
 * gap-free, each linked to the one before.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create or replace function tenantry_audit_sequence(p_ids uuid[], p_seqs bigint[], p_prev text[], p_hashes text[])
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
declare
  n integer;
  bad_chain text;
  bad_at bigint;
begin
  if not tenantry_is_platform() then
    raise exception 'sequencing the audit log is a platform operation' using errcode = 'insufficient_privilege';
  end if;
  -- The entries come off the queue (taking them is the claim that they were unsequenced; the queue
  -- names each one's chain), their positions go in, per chain what the batch placed is summed up
  -- and checked against the head (locked), and the heads move only if every chain passed.
  with taken as (
    delete from audit_queue q where q.record_id = any(p_ids) returning q.record_id, q.chain
  ), placed as (
    insert into audit_positions (chain, seq, record_id, prev_hash, hash)
    select t.chain, b.seq, t.record_id, b.prev_hash, b.hash
    from unnest(p_ids, p_seqs, p_prev, p_hashes) as b(id, seq, prev_hash, hash)
    join taken t on t.record_id = b.id
    returning chain, seq, prev_hash, hash
  ), g as (
    select b.chain, min(b.seq) as lo, max(b.seq) as hi, count(*) as cnt,
           (array_agg(b.prev_hash order by b.seq))[1] as first_prev,
           (array_agg(b.hash order by b.seq desc))[1] as last_hash,
           bool_and(b.linked) as linked
    from (select p.chain, p.seq, p.prev_hash, p.hash,
                 p.prev_hash = coalesce(lag(p.hash) over (partition by p.chain order by p.seq), p.prev_hash) as linked
          from placed p) b
    group by b.chain
  ), heads as materialized (
    select h.chain, h.seq, h.hash from audit_chain_heads h
    where h.chain in (select g.chain from g) order by h.chain for update
  ), bad as materialized (
    select g.chain, coalesce(h.seq, 0) as at from g left join heads h on h.chain = g.chain
    where g.lo <> coalesce(h.seq, 0) + 1 or g.hi - g.lo + 1 <> g.cnt or not g.linked
       or g.first_prev <> coalesce(h.hash, repeat('0', 64))
    order by g.chain limit 1
  ), moved as (
    insert into audit_chain_heads as h (chain, seq, hash)
    select g.chain, g.hi, g.last_hash from g where not exists (select from bad) order by g.chain
    on conflict (chain) do update set seq = excluded.seq, hash = excluded.hash, updated_at = now()
    returning 1
  )
  select (select coalesce(sum(g.cnt), 0) from g), (select chain from bad), (select at from bad),
         (select count(*) from moved)
    into n, bad_chain, bad_at;
  if n <> coalesce(cardinality(p_ids), 0) then
    raise exception 'audit batch: % of % entries were unsequenced', n, cardinality(p_ids)
      using errcode = 'serialization_failure';
  end if;
  if bad_chain is not null then
    raise exception 'audit batch does not continue chain % at seq %', bad_chain, bad_at
      using errcode = 'serialization_failure';
  end if;
  return n;
end $$;
`.execute(db);
}
