import { type Kysely, sql } from 'kysely';

/**
 * Audit retention made safe (issue 17). The Merkle trees over the chains (src/audit/audit-tree.ts)
 * need no schema: their leaves are the v1 record hashes already stored.
 *
 * - tenantry_audit_apply_retention runs for the platform only: from a tenant's context it refused
 *   nothing before; now it raises insufficient_privilege.
 * - A minimum age: audit_retention_policy.min_age (default 90 days), changeable by the owner only;
 *   retention through a checkpoint younger than that is refused.
 * - Legal holds: a chain with a hold in audit_legal_holds that has not expired is skipped. Holds are
 *   append-only (a hold ends at its `until`), platform-only, and the application role cannot delete
 *   them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table audit_retention_policy (
  singleton boolean primary key default true check (singleton),
  min_age interval not null default interval '90 days' check (min_age >= interval '0')
);
insert into audit_retention_policy default values;
-- Platform configuration: the platform role reads it, no tenant connection sees it, nobody but the
-- owner changes it.
revoke all on audit_retention_policy from tenantry_app;
grant select on audit_retention_policy to tenantry_platform;

create table audit_legal_holds (
  id uuid primary key default gen_random_uuid(),
  chain text not null,
  reason text not null check (length(reason) between 1 and 1000),
  created_at timestamptz not null default now(),
  until timestamptz
);
create index audit_legal_holds_chain on audit_legal_holds (chain);
alter table audit_legal_holds enable row level security;
create policy platform_only on audit_legal_holds
  using (tenantry_is_platform()) with check (tenantry_is_platform());
grant select, insert on audit_legal_holds to tenantry_app;
revoke update, delete, truncate on audit_legal_holds from tenantry_app;
create trigger audit_legal_holds_append_only before update or delete on audit_legal_holds
  for each row execute function tenantry_audit_append_only();

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
