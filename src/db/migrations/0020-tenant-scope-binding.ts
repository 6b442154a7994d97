import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';

/**
 * A tenant connection cannot set another tenant's id (issue 16). Until now the tenant scope was a
 * setting (`tenantry.tenant_id`) that any statement on the application role could change: one SQL
 * injection in a tenant request could `set_config` another tenant's id and read its rows. Now:
 * - The scope is entered only through `tenantry_enter_tenant(tenant, expires, proof)`, a
 *   security-definer function that checks an HMAC-SHA256 proof over (tenant, expiry) under a key
 *   the tenant role cannot read (`tenantry_scope_key`; the application reads it once over the
 *   platform role's pool and proves each tenant transaction it starts for a verified caller).
 *   The proof expires (at most 10 minutes ahead), and a transaction that entered one tenant
 *   cannot enter another.
 * - It binds the tenant to this backend and this transaction (`tenantry_scope_bindings`, written
 *   only by that function). `tenantry_current_tenant()`, which every policy uses, reads the binding,
 *   no longer the setting: setting `tenantry.tenant_id` by hand binds nothing and shows no row.
 * - Every policy calls it once per statement (`(select tenantry_current_tenant())`, an initplan).
 * The HMAC is composed from the built-in sha256() (RFC 2104 with the padded key stored), so no
 * extension is needed; node:crypto's createHmac computes the same proof.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  const key = randomBytes(32);
  const padded = Buffer.alloc(64);
  key.copy(padded);
  const ipad = Buffer.from(padded.map((b) => b ^ 0x36));
  const opad = Buffer.from(padded.map((b) => b ^ 0x5c));
  await sql`
create table tenantry_scope_key (
  id integer primary key check (id = 1),
  key bytea not null,
  ipad bytea not null,
  opad bytea not null
);
revoke all on tenantry_scope_key from tenantry_app;
grant select on tenantry_scope_key to tenantry_platform;

create unlogged table tenantry_scope_bindings (
  pid integer primary key,
  xact xid8 not null,
  tenant_id uuid not null
);
revoke all on tenantry_scope_bindings from tenantry_app;
grant select on tenantry_scope_bindings to tenantry_app;
alter table tenantry_scope_bindings enable row level security;
-- A connection sees its own binding only (which backend serves which tenant is no one else's business).
create policy own_backend on tenantry_scope_bindings for select using (pid = pg_backend_pid());
`.execute(db);
  await sql`insert into tenantry_scope_key (id, key, ipad, opad) values (1, ${key}, ${ipad}, ${opad})`.execute(
    db,
  );
  await sql`
create function tenantry_enter_tenant(p_tenant uuid, p_expires bigint, p_proof bytea) returns void
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  k record;
  now_s bigint := extract(epoch from now())::bigint;
begin
  select ipad, opad into k from tenantry_scope_key where id = 1;
  if p_tenant is null or p_expires is null or p_expires < now_s or p_expires > now_s + 600
     or p_proof is distinct from
        sha256(k.opad || sha256(k.ipad || convert_to(p_tenant::text || '|' || p_expires::text, 'UTF8'))) then
    raise exception 'insufficient proof for the scope of tenant %', p_tenant using errcode = 'insufficient_privilege';
  end if;
  if exists (select 1 from tenantry_scope_bindings b
             where b.pid = pg_backend_pid() and b.xact = pg_current_xact_id() and b.tenant_id <> p_tenant) then
    raise exception 'this transaction is bound to another tenant' using errcode = 'insufficient_privilege';
  end if;
  insert into tenantry_scope_bindings (pid, xact, tenant_id) values (pg_backend_pid(), pg_current_xact_id(), p_tenant)
  on conflict (pid) do update set xact = excluded.xact, tenant_id = excluded.tenant_id;
  -- For readers of the setting (logs, tracing); policies do not trust it.
  perform set_config('tenantry.tenant_id', p_tenant::text, true);
end $$;
revoke all on function tenantry_enter_tenant(uuid, bigint, bytea) from public;
grant execute on function tenantry_enter_tenant(uuid, bigint, bytea) to tenantry_app;

create or replace function tenantry_current_tenant() returns uuid language sql stable as $$
  select b.tenant_id from tenantry_scope_bindings b
  where b.pid = pg_backend_pid() and b.xact = pg_current_xact_id_if_assigned()
$$;

-- Once per statement rather than per row: every policy that calls it gets it as an initplan.
do $do$
declare
  p record;
  q text;
  c text;
begin
  for p in
    select pol.polname, pol.polrelid::regclass::text as tbl,
      pg_get_expr(pol.polqual, pol.polrelid) as qual, pg_get_expr(pol.polwithcheck, pol.polrelid) as chk
    from pg_policy pol
  loop
    q := replace(p.qual, 'tenantry_current_tenant()', '(select tenantry_current_tenant())');
    c := replace(p.chk, 'tenantry_current_tenant()', '(select tenantry_current_tenant())');
    if q is distinct from p.qual or c is distinct from p.chk then
      execute format('alter policy %I on %s', p.polname, p.tbl)
        || coalesce(' using (' || q || ')', '') || coalesce(' with check (' || c || ')', '');
    end if;
  end loop;
end $do$;
`.execute(db);
}
