import { type Kysely, sql } from 'kysely';

/**
 * Retention leaves each log's Merkle tree verifiable (issue 17): the records it deletes keep their
 * leaf hashes in audit_pruned_leaves, so a pruned chain still has its whole tree — the same root
 * for the same size, inclusion proofs for what remains, consistency proofs from any checkpoint a
 * witness saved before the pruning. (Chains pruned before this migration have lost those hashes;
 * their trees stay incomplete, as `audit.tree_incomplete` says.)
 *
 * Append-only like the other audit tables; platform only; written only inside the retention
 * function (security definer), the application and platform roles may only read it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table audit_pruned_leaves (
  chain text not null,
  seq bigint not null check (seq >= 1),
  hash text not null check (octet_length(hash) = 64),
  primary key (chain, seq)
);
alter table audit_pruned_leaves enable row level security;
create policy platform_only on audit_pruned_leaves using (tenantry_is_platform()) with check (tenantry_is_platform());
revoke all on audit_pruned_leaves from tenantry_app;
grant select on audit_pruned_leaves to tenantry_platform;
create trigger audit_pruned_leaves_append_only before update or delete on audit_pruned_leaves
  for each row execute function tenantry_audit_append_only();
create trigger audit_pruned_leaves_no_truncate before truncate on audit_pruned_leaves
  for each statement execute function tenantry_audit_append_only();

-- As in migration 0014, and the deleted records' leaf hashes are kept first.
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
    if not exists (select from audit_records a where a.chain = h.chain and a.seq = h.seq and a.hash = h.hash) then
      raise exception 'audit chain % does not match checkpoint % at seq %; run audit verify', h.chain, cp.id, h.seq
        using errcode = 'data_corrupted';
    end if;
    insert into audit_pruned_leaves (chain, seq, hash)
      select a.chain, a.seq, a.hash from audit_records a where a.chain = h.chain and a.seq <= h.seq;
    perform set_config('tenantry.audit_retention', 'on', true);
    delete from audit_records a where a.chain = h.chain and a.seq <= h.seq;
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
