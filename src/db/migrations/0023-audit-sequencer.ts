import { type Kysely, sql } from 'kysely';

/**
 * Audit appends that do not serialise changes (issue 17).
 *
 * - An audit record is written in the change's own transaction without its chain position: `seq`,
 *   `prev_hash` and `hash` are null (an unsequenced entry, as a Tessera/Rekor log queues entries).
 *   No lock is shared with any other change.
 * - One sequencer at a time (src/audit/audit-sequencer.ts, elected by a transaction advisory lock,
 *   connected as the platform role: the tenant role may not call the function)
 *   integrates committed entries in batches: it assigns each its position and v1 hash through
 *   tenantry_audit_sequence(), the only way a record is ever updated, once, from unsequenced to
 *   sequenced; the content of the record cannot change (the trigger compares it), and the batch
 *   must continue each chain's head gap-free and linked, or it is refused as a whole.
 * - The chain heads are written only by that function: the application role loses INSERT/UPDATE on
 *   audit_chain_heads.
 * - audit_trees: per chain, the compact range of its Merkle tree (the perfect subtree roots, RFC 9162
 *   hashing), advanced by the sequencer in the batch's transaction, so that a batch's checkpoint is
 *   signed without reading the chain; and what was last published as a checkpoint event. A cache of
 *   what the records determine: a wrong peak would sign a root that no proof from the records
 *   matches, which any witness holding a checkpoint detects. Platform only.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter table audit_records
  alter column seq drop not null,
  alter column prev_hash drop not null,
  alter column hash drop not null,
  add constraint audit_records_sequenced
    check ((seq is null and prev_hash is null and hash is null) or (seq is not null and prev_hash is not null and hash is not null));
alter table audit_records alter column time set default clock_timestamp();
-- The sequencer's queue: committed entries without a position, oldest first.
create index audit_records_unsequenced on audit_records (time, id) where seq is null;

create or replace function tenantry_audit_append_only() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' and tg_table_name = 'audit_records'
     and coalesce(current_setting('tenantry.audit_retention', true), '') = 'on' then
    return old;
  end if;
  -- Sequencing: an unsequenced record gets its position and hash, once; nothing else changes.
  -- (Nested: a condition naming old.seq cannot be evaluated for the other audit tables.)
  if tg_op = 'UPDATE' and tg_table_name = 'audit_records'
     and coalesce(current_setting('tenantry.audit_sequencing', true), '') = 'on' then
    if to_jsonb(old) ->> 'seq' is null and to_jsonb(new) ->> 'seq' is not null
       and to_jsonb(old) - '{seq,prev_hash,hash}'::text[] = to_jsonb(new) - '{seq,prev_hash,hash}'::text[] then
      return new;
    end if;
  end if;
  raise exception 'audit table % is append-only: % refused', tg_table_name, tg_op
    using errcode = 'insufficient_privilege',
          hint = 'Audit records are deleted only by retention, whole segments at a time.';
end $$;

-- Integrates a batch: p_ids[i] gets position p_seqs[i] with p_prev[i] and p_hashes[i]. Refuses the
-- whole batch unless every entry was unsequenced and, per chain, the positions continue the head
-- gap-free and each links to the one before. Platform only; security definer because the
-- application role may neither update audit_records nor write audit_chain_heads.
create function tenantry_audit_sequence(p_ids uuid[], p_seqs bigint[], p_prev text[], p_hashes text[])
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
declare
  n integer;
  r record;
  head_seq bigint;
  head_hash text;
begin
  if not tenantry_is_platform() then
    raise exception 'sequencing the audit log is a platform operation' using errcode = 'insufficient_privilege';
  end if;
  perform set_config('tenantry.audit_sequencing', 'on', true);
  update audit_records a set seq = b.seq, prev_hash = b.prev_hash, hash = b.hash
    from unnest(p_ids, p_seqs, p_prev, p_hashes) as b(id, seq, prev_hash, hash)
    where a.id = b.id and a.seq is null;
  get diagnostics n = row_count;
  perform set_config('tenantry.audit_sequencing', '', true);
  if n <> coalesce(cardinality(p_ids), 0) then
    raise exception 'audit batch: % of % entries were unsequenced', n, cardinality(p_ids)
      using errcode = 'serialization_failure';
  end if;
  for r in
    select b.chain, min(b.seq) as lo, max(b.seq) as hi, count(*) as cnt,
           (array_agg(b.prev_hash order by b.seq))[1] as first_prev,
           (array_agg(b.hash order by b.seq desc))[1] as last_hash,
           bool_and(b.linked) as linked
    from (select a.chain, a.seq, a.prev_hash, a.hash,
                 a.prev_hash = coalesce(lag(a.hash) over (partition by a.chain order by a.seq), a.prev_hash) as linked
          from audit_records a where a.id = any(p_ids)) b
    group by b.chain
  loop
    select h.seq, h.hash into head_seq, head_hash from audit_chain_heads h where h.chain = r.chain for update;
    if r.lo <> coalesce(head_seq, 0) + 1 or r.hi - r.lo + 1 <> r.cnt or not r.linked
       or r.first_prev <> coalesce(head_hash, repeat('0', 64)) then
      raise exception 'audit batch does not continue chain % at seq %', r.chain, coalesce(head_seq, 0)
        using errcode = 'serialization_failure';
    end if;
    insert into audit_chain_heads as h (chain, seq, hash) values (r.chain, r.hi, r.last_hash)
      on conflict (chain) do update set seq = excluded.seq, hash = excluded.hash, updated_at = now();
  end loop;
  return n;
end $$;
revoke all on function tenantry_audit_sequence(uuid[], bigint[], text[], text[]) from public, tenantry_app;
grant execute on function tenantry_audit_sequence(uuid[], bigint[], text[], text[]) to tenantry_platform;

revoke insert, update on audit_chain_heads from tenantry_app;

create table audit_trees (
  chain text primary key,
  size bigint not null check (size >= 0),
  peaks text[] not null,
  published_size bigint not null default 0,
  published_at timestamptz
);
alter table audit_trees enable row level security;
create policy platform_only on audit_trees using (tenantry_is_platform()) with check (tenantry_is_platform());
revoke all on audit_trees from tenantry_app;
grant select, insert, update on audit_trees to tenantry_platform;

-- Whole-chain reads (verification, export) read sequenced records only: in the row comparison
-- (chain, seq) > (c, s) a null seq would pass whenever chain > c.
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
    return query select a.id, a.chain, a.seq, tenantry_audit_time(a.time), a.tenant_id, a.app_id, a.actor_principal,
        a.actor_kind, a.session_id, a.action, a.target_kind, a.target_id, a.target_slug, a.before, a.after,
        a.outcome, a.decision, a.request_id, a.correlation_id, a.prev_hash, a.hash
      from audit_records a where a.chain = p_chain and a.seq > p_after_seq order by a.seq limit p_limit;
  else
    return query select a.id, a.chain, a.seq, tenantry_audit_time(a.time), a.tenant_id, a.app_id, a.actor_principal,
        a.actor_kind, a.session_id, a.action, a.target_kind, a.target_id, a.target_slug, a.before, a.after,
        a.outcome, a.decision, a.request_id, a.correlation_id, a.prev_hash, a.hash
      from audit_records a where (a.chain, a.seq) > (p_after_chain, p_after_seq) and a.seq is not null
      order by a.chain, a.seq limit p_limit;
  end if;
end $$;
`.execute(db);
}
