import { type Kysely, sql } from 'kysely';

/**
 * Audit positions in a narrow table of their own (issue 17). The sequencer used to give each record
 * its chain position by an UPDATE of audit_records: a new version of the whole row and an entry in
 * each of its indexes (measured: the sequencer's bound at 1,500-2,100 records/s). Now:
 *
 * - audit_positions (chain, seq, record_id, prev_hash, hash): one row per integrated record, inserted
 *   by the sequencer (tenantry_audit_sequence, security definer), never updated or deleted (the
 *   append-only trigger). Gap-free (chain, seq) is its primary key; a record has at most one
 *   position (unique record_id). A position counts while its record exists: retention deletes the
 *   records and keeps their leaf hashes in audit_pruned_leaves, as before.
 * - audit_queue (time, record_id, chain): the entries written but not yet integrated, oldest first. The
 *   change's INSERT into audit_records fills it (a statement trigger over the inserted rows, so the
 *   change's SQL is unchanged and the entry is queued in the change's own transaction); the
 *   sequencer takes a batch off it in the transaction that positions it. Platform only.
 * - audit_records loses seq, prev_hash and hash (moved to audit_positions with their constraints)
 *   and the sequencing exception of its append-only trigger: no role updates a record any more.
 * - The (action, time) index goes: actions are few (a search by action walks the (time, id) index
 *   and filters, and `tenant.*` prefixes could not use it anyway); every index is a cost on every
 *   change's append.
 * - tenantry_audit_scan and tenantry_audit_apply_retention read positions from the new table.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table audit_positions (
  chain text not null,
  seq bigint not null check (seq >= 1),
  record_id uuid not null constraint audit_positions_record unique,
  prev_hash text not null,
  hash text not null,
  primary key (chain, seq),
  -- The format is checked by verification; a regular expression here would cost more than the insert.
  constraint audit_positions_hash_length check (octet_length(hash) = 64 and octet_length(prev_hash) = 64)
);
alter table audit_positions enable row level security;
create policy tenant_isolation on audit_positions
  using ((select tenantry_is_platform()) or chain = (select tenantry_current_tenant())::text)
  with check ((select tenantry_is_platform()));
grant select on audit_positions to tenantry_app;
revoke insert, update, delete, truncate on audit_positions from tenantry_app;

create table audit_queue (
  time timestamptz not null,
  record_id uuid not null,
  chain text not null,
  primary key (time, record_id)
);
alter table audit_queue enable row level security;
create policy platform_only on audit_queue
  using ((select tenantry_is_platform())) with check ((select tenantry_is_platform()));
revoke all on audit_queue from tenantry_app;
grant select on audit_queue to tenantry_platform;

insert into audit_positions (chain, seq, record_id, prev_hash, hash)
  select chain, seq, id, prev_hash, hash from audit_records where seq is not null;
insert into audit_queue (time, record_id, chain) select time, id, chain from audit_records where seq is null;

-- No sequencing exception any more: nobody updates an audit record.
create or replace function tenantry_audit_append_only() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' and tg_table_name = 'audit_records'
     and coalesce(current_setting('tenantry.audit_retention', true), '') = 'on' then
    return old;
  end if;
  raise exception 'audit table % is append-only: % refused', tg_table_name, tg_op
    using errcode = 'insufficient_privilege',
          hint = 'Audit records are deleted only by retention, whole segments at a time.';
end $$;

create trigger audit_positions_append_only before update or delete on audit_positions
  for each row execute function tenantry_audit_append_only();
create trigger audit_positions_no_truncate before truncate on audit_positions
  for each statement execute function tenantry_audit_append_only();

alter table audit_records
  drop constraint audit_records_sequenced,
  drop constraint audit_records_chain_seq,
  drop constraint audit_records_seq_positive,
  drop constraint audit_records_hash_length,
  drop column seq,
  drop column prev_hash,
  drop column hash;
drop index if exists audit_records_unsequenced;
drop index if exists audit_records_action_time;

-- Queues what an INSERT into audit_records wrote, in its transaction, once per statement.
create function tenantry_audit_enqueue() returns trigger language plpgsql security definer
set search_path = public, pg_temp as $$
begin
  insert into audit_queue (time, record_id, chain) select n.time, n.id, n.chain from added n;
  return null;
end $$;
revoke all on function tenantry_audit_enqueue() from public;
create trigger audit_records_enqueue after insert on audit_records referencing new table as added
  for each statement execute function tenantry_audit_enqueue();

-- Integrates a batch: p_ids[i] gets position p_seqs[i] with p_prev[i] and p_hashes[i], in the chain
-- its queue entry names (the record's own, copied by the enqueue trigger). Refuses the whole batch
-- unless every entry was queued (unsequenced) and, per chain, the positions continue the head
-- gap-free and each links to the one before. Platform only.
create or replace function tenantry_audit_sequence(p_ids uuid[], p_seqs bigint[], p_prev text[], p_hashes text[])
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
declare
  n integer;
  head_seq bigint;
  head_hash text;
  v_chain text[];
  v_lo bigint[];
  v_hi bigint[];
  v_cnt bigint[];
  v_first text[];
  v_last text[];
  v_linked boolean[];
begin
  if not tenantry_is_platform() then
    raise exception 'sequencing the audit log is a platform operation' using errcode = 'insufficient_privilege';
  end if;
  -- One statement: the entries come off the queue (taking them is the claim that they were
  -- unsequenced; the queue names each one's chain), their positions go in, and per chain what the
  -- batch placed is summed up for the checks below.
  with taken as (
    delete from audit_queue q where q.record_id = any(p_ids) returning q.record_id, q.chain
  ), placed as (
    insert into audit_positions (chain, seq, record_id, prev_hash, hash)
    select t.chain, b.seq, t.record_id, b.prev_hash, b.hash
    from unnest(p_ids, p_seqs, p_prev, p_hashes) as b(id, seq, prev_hash, hash)
    join taken t on t.record_id = b.id
    returning chain, seq, prev_hash, hash
  )
  select coalesce(sum(g.cnt), 0), array_agg(g.chain), array_agg(g.lo), array_agg(g.hi), array_agg(g.cnt),
         array_agg(g.first_prev), array_agg(g.last_hash), array_agg(g.linked)
    into n, v_chain, v_lo, v_hi, v_cnt, v_first, v_last, v_linked
  from (select b.chain, min(b.seq) as lo, max(b.seq) as hi, count(*) as cnt,
               (array_agg(b.prev_hash order by b.seq))[1] as first_prev,
               (array_agg(b.hash order by b.seq desc))[1] as last_hash,
               bool_and(b.linked) as linked
        from (select p.chain, p.seq, p.prev_hash, p.hash,
                     p.prev_hash = coalesce(lag(p.hash) over (partition by p.chain order by p.seq), p.prev_hash) as linked
              from placed p) b
        group by b.chain) g;
  if n <> coalesce(cardinality(p_ids), 0) then
    raise exception 'audit batch: % of % entries were unsequenced', n, cardinality(p_ids)
      using errcode = 'serialization_failure';
  end if;
  for i in 1 .. coalesce(cardinality(v_chain), 0) loop
    select h.seq, h.hash into head_seq, head_hash from audit_chain_heads h where h.chain = v_chain[i] for update;
    if v_lo[i] <> coalesce(head_seq, 0) + 1 or v_hi[i] - v_lo[i] + 1 <> v_cnt[i] or not v_linked[i]
       or v_first[i] <> coalesce(head_hash, repeat('0', 64)) then
      raise exception 'audit batch does not continue chain % at seq %', v_chain[i], coalesce(head_seq, 0)
        using errcode = 'serialization_failure';
    end if;
    insert into audit_chain_heads as h (chain, seq, hash) values (v_chain[i], v_hi[i], v_last[i])
      on conflict (chain) do update set seq = excluded.seq, hash = excluded.hash, updated_at = now();
  end loop;
  return n;
end $$;

create or replace function tenantry_audit_scan(p_chain text, p_after_chain text, p_after_seq bigint, p_limit integer)
returns table (id uuid, chain text, seq bigint, "time" text, tenant_id uuid, app_id text, actor_principal text,
  actor_kind text, session_id text, action text, target_kind text, target_id uuid, target_slug text, before jsonb,
  after jsonb, outcome text, decision jsonb, request_id text, correlation_id text, prev_hash text, hash text)
language plpgsql stable security definer set search_path = public, pg_temp as $$
#variable_conflict use_column
begin
  if not tenantry_is_platform() then
    raise exception 'reading whole audit chains needs the platform scope' using errcode = 'insufficient_privilege';
  end if;
  if p_chain is not null then
    return query select a.id, p.chain, p.seq, tenantry_audit_time(a.time), a.tenant_id, a.app_id, a.actor_principal,
        a.actor_kind, a.session_id, a.action, a.target_kind, a.target_id, a.target_slug, a.before, a.after,
        a.outcome, a.decision, a.request_id, a.correlation_id, p.prev_hash, p.hash
      from audit_positions p join audit_records a on a.id = p.record_id
      where p.chain = p_chain and p.seq > p_after_seq order by p.seq limit p_limit;
  else
    return query select a.id, p.chain, p.seq, tenantry_audit_time(a.time), a.tenant_id, a.app_id, a.actor_principal,
        a.actor_kind, a.session_id, a.action, a.target_kind, a.target_id, a.target_slug, a.before, a.after,
        a.outcome, a.decision, a.request_id, a.correlation_id, p.prev_hash, p.hash
      from audit_positions p join audit_records a on a.id = p.record_id
      where (p.chain, p.seq) > (p_after_chain, p_after_seq) order by p.chain, p.seq limit p_limit;
  end if;
end $$;

-- As in migration 0024, with the positions read from audit_positions.
create or replace function tenantry_audit_apply_retention(p_checkpoint uuid, p_older_than timestamptz)
returns table (chain text, through_seq bigint, through_hash text, deleted bigint)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  cp audit_checkpoints;
  h record;
  n bigint;
  min_age interval;
begin
  if not tenantry_is_platform() then
    raise exception 'audit retention is a platform operation' using errcode = 'insufficient_privilege';
  end if;
  if p_older_than > now() then
    raise exception 'retention cut-off % is in the future', p_older_than using errcode = 'invalid_parameter_value';
  end if;
  select p.min_age into min_age from audit_retention_policy p;
  if p_older_than > now() - coalesce(min_age, interval '90 days') then
    raise exception 'retention cut-off % is younger than the minimum age %', p_older_than, min_age
      using errcode = 'invalid_parameter_value';
  end if;
  select * into cp from audit_checkpoints c where c.id = p_checkpoint;
  if not found then
    raise exception 'audit checkpoint % does not exist', p_checkpoint using errcode = 'no_data_found';
  end if;
  if cp.time >= p_older_than then
    raise exception 'audit checkpoint % is not older than %', p_checkpoint, p_older_than
      using errcode = 'invalid_parameter_value';
  end if;
  for h in
    select e.key as chain, (e.value->>'seq')::bigint as seq, e.value->>'hash' as hash
    from jsonb_each(cp.heads) e order by e.key
  loop
    continue when exists (select from audit_retention r where r.chain = h.chain and r.through_seq >= h.seq);
    continue when exists (select from audit_legal_holds l where l.chain = h.chain and (l.until is null or l.until > now()));
    if not exists (select from audit_positions p join audit_records a on a.id = p.record_id
                   where p.chain = h.chain and p.seq = h.seq and p.hash = h.hash) then
      raise exception 'audit chain % does not match checkpoint % at seq %; run audit verify', h.chain, cp.id, h.seq
        using errcode = 'data_corrupted';
    end if;
    insert into audit_pruned_leaves (chain, seq, hash)
      select p.chain, p.seq, p.hash from audit_positions p join audit_records a on a.id = p.record_id
      where p.chain = h.chain and p.seq <= h.seq;
    perform set_config('tenantry.audit_retention', 'on', true);
    delete from audit_records a using audit_positions p
      where p.record_id = a.id and p.chain = h.chain and p.seq <= h.seq;
    get diagnostics n = row_count;
    perform set_config('tenantry.audit_retention', '', true);
    insert into audit_retention (id, chain, through_seq, through_hash, checkpoint_id, deleted)
      values (gen_random_uuid(), h.chain, h.seq, h.hash, cp.id, n);
    chain := h.chain; through_seq := h.seq; through_hash := h.hash; deleted := n;
    return next;
  end loop;
end $$;
`.execute(db);
}
