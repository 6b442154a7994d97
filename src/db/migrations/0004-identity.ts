import { type Kysely, sql } from 'kysely';

/**
 * Identity (issue 4): sessions and break-glass elevations.
 *
 * - sessions: the binding of a token's `sid` to issuer + app_id + tenant + principal, made when the
 *   session is first seen; later tokens naming the session must carry the same binding. Sessions
 *   expire (expires_at) and can be revoked (revoked_at), which takes effect on the next request.
 * - break_glass_grants: time-limited elevations with a reason; they end by themselves at expires_at.
 * - tenantry_identify(): one round trip per request, as the owner (security definer, so before the
 *   caller's scope is known): resolves the token's tenant (UUID or slug), binds or reads the session,
 *   and finds an active elevation.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table sessions (
  id text primary key check (octet_length(id) between 1 and 200),
  issuer text not null,
  app_id text not null,
  tenant_id uuid references tenants (id),
  principal text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  revoked_at timestamptz,
  revoked_by text
);
create index sessions_tenant on sessions (tenant_id, created_at);
create index sessions_principal on sessions (principal, created_at);

create table break_glass_grants (
  tenant_id uuid references tenants (id),
  id uuid primary key,
  issuer text not null,
  principal text not null,
  roles text[] not null,
  reason text not null check (length(reason) >= 10),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  ended_at timestamptz,
  ended_by text,
  check (expires_at > created_at)
);
create index break_glass_grants_principal on break_glass_grants (issuer, principal, expires_at);

alter table sessions enable row level security;
create policy tenant_isolation on sessions
  using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
  with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
alter table break_glass_grants enable row level security;
create policy tenant_isolation on break_glass_grants
  using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
  with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());

create function tenantry_identify(
  p_tenant text, p_issuer text, p_principal text, p_app_id text, p_session text, p_session_ttl_seconds integer
) returns table (
  tenant_id uuid, customer_id uuid,
  session_issuer text, session_app_id text, session_tenant_id uuid, session_principal text,
  session_expires_at timestamptz, session_revoked_at timestamptz,
  elevation_id uuid, elevation_roles text[], elevation_expires_at timestamptz
) language plpgsql security definer set search_path = public as $$
declare
  t_id uuid;
  c_id uuid;
  s sessions%rowtype;
  g break_glass_grants%rowtype;
begin
  if p_tenant is not null then
    select t.id, t.customer_id into t_id, c_id from tenants t
      where t.deleted_at is null
        and (case when p_tenant ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                  then t.id = p_tenant::uuid else t.slug = p_tenant end);
    if t_id is null then return; end if;
  end if;
  if p_session is not null then
    select * into s from sessions where id = p_session;
    if not found then
      -- First sight binds; a concurrent first sight loses the insert and reads the winner's binding.
      insert into sessions (id, issuer, app_id, tenant_id, principal, expires_at)
        values (p_session, p_issuer, p_app_id, t_id, p_principal, now() + make_interval(secs => p_session_ttl_seconds))
        on conflict (id) do nothing;
      select * into s from sessions where id = p_session;
    end if;
  end if;
  select * into g from break_glass_grants b
    where b.issuer = p_issuer and b.principal = p_principal and b.ended_at is null and b.expires_at > now()
      and b.tenant_id is not distinct from t_id
    order by b.expires_at desc limit 1;
  return query select t_id, c_id, s.issuer, s.app_id, s.tenant_id, s.principal, s.expires_at, s.revoked_at,
    g.id, g.roles, g.expires_at;
end $$;
revoke all on function tenantry_identify(text, text, text, text, text, integer) from public;
grant execute on function tenantry_identify(text, text, text, text, text, integer) to tenantry_app;
`.execute(db);
}
