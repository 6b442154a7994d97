import { type Kysely, sql } from 'kysely';

/**
 * The platform scope cannot be entered from a tenant connection. Until now any connection could
 * `set tenantry.platform = on` and see every tenant; one SQL injection in a tenant request would
 * have been a full bypass. Now:
 * - `tenantry_platform` is a role of its own (login, password set at start-up like tenantry_app's).
 *   It holds tenantry_app's table privileges (membership) and is the only one that may be platform.
 * - `tenantry_is_platform()` is true only when the setting is on AND the connection logged in as a
 *   member of tenantry_platform (`session_user`: neither `set role` nor a security-definer function
 *   changes it, and tenantry_app is a member of nothing). Every policy uses it, so tenant requests,
 *   which run as tenantry_app, see their own tenant whatever they set.
 * - The security-definer functions check the caller's scope: identify and retention are platform
 *   work only; an event is appended for the caller's own tenant unless the caller is the platform;
 *   the audit scan was platform-only already (and now that means the platform role).
 * - The migration bookkeeping tables are the owner's alone.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
do $$ begin
  if not exists (select from pg_roles where rolname = 'tenantry_platform') then
    create role tenantry_platform nologin nosuperuser nocreatedb nocreaterole inherit nobypassrls;
  end if;
end $$;
grant tenantry_app to tenantry_platform;
grant usage on schema public to tenantry_platform;

create function tenantry_is_platform_role() returns boolean language sql stable
  as $$ select pg_has_role(session_user, 'tenantry_platform', 'member') $$;
create or replace function tenantry_is_platform() returns boolean language sql stable
  as $$ select coalesce(current_setting('tenantry.platform', true), '') = 'on' and tenantry_is_platform_role() $$;

revoke all on tenantry_migrations, tenantry_migrations_lock from tenantry_app;
grant select on tenantry_migrations, tenantry_migrations_lock to tenantry_platform;
-- Rate-limit buckets name every tenant and are taken before any scope is known: the platform role's.
revoke all on rate_limit_buckets from tenantry_app;
grant select, insert, update, delete on rate_limit_buckets to tenantry_platform;

-- Identify resolves any tenant and binds sessions of any tenant: platform work (the authenticator
-- runs it over the platform role's pool), refused to anyone else.
create or replace function tenantry_identify_guard() returns void language plpgsql stable as $$
begin
  if not tenantry_is_platform_role() then
    raise exception 'needs the platform role' using errcode = 'insufficient_privilege';
  end if;
end $$;
revoke execute on function tenantry_identify(text, text, text, text, text, integer) from tenantry_app;
grant execute on function tenantry_identify(text, text, text, text, text, integer) to tenantry_platform;
revoke execute on function tenantry_audit_apply_retention(uuid, timestamptz) from tenantry_app;
grant execute on function tenantry_audit_apply_retention(uuid, timestamptz) to tenantry_platform;
revoke execute on function tenantry_audit_scan(text, text, bigint, integer) from tenantry_app;
grant execute on function tenantry_audit_scan(text, text, bigint, integer) to tenantry_platform;
`.execute(db);

  // The functions' own checks (belt and braces over the grants): wrap the bodies by renaming.
  await sql`
alter function tenantry_identify(text, text, text, text, text, integer) rename to tenantry_identify_unchecked;
revoke all on function tenantry_identify_unchecked(text, text, text, text, text, integer) from public, tenantry_app, tenantry_platform;
create function tenantry_identify(
  p_tenant text, p_issuer text, p_principal text, p_app_id text, p_session text, p_session_ttl_seconds integer
) returns table (
  tenant_id uuid, customer_id uuid,
  session_issuer text, session_app_id text, session_tenant_id uuid, session_principal text,
  session_expires_at timestamptz, session_revoked_at timestamptz,
  elevation_id uuid, elevation_roles text[], elevation_expires_at timestamptz
) language plpgsql security definer set search_path = public, pg_temp as $$
begin
  perform tenantry_identify_guard();
  return query select * from tenantry_identify_unchecked(p_tenant, p_issuer, p_principal, p_app_id, p_session,
    p_session_ttl_seconds);
end $$;
revoke all on function tenantry_identify(text, text, text, text, text, integer) from public;
grant execute on function tenantry_identify(text, text, text, text, text, integer) to tenantry_platform;

alter function tenantry_audit_apply_retention(uuid, timestamptz) rename to tenantry_audit_apply_retention_unchecked;
revoke all on function tenantry_audit_apply_retention_unchecked(uuid, timestamptz) from public, tenantry_app, tenantry_platform;
create function tenantry_audit_apply_retention(p_checkpoint uuid, p_older_than timestamptz)
returns table (chain text, through_seq bigint, through_hash text, deleted bigint)
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if not tenantry_is_platform() then
    raise exception 'audit retention needs the platform scope' using errcode = 'insufficient_privilege';
  end if;
  return query select * from tenantry_audit_apply_retention_unchecked(p_checkpoint, p_older_than);
end $$;
revoke all on function tenantry_audit_apply_retention(uuid, timestamptz) from public;
grant execute on function tenantry_audit_apply_retention(uuid, timestamptz) to tenantry_platform;

alter function tenantry_event_appended(uuid, uuid, text, text, bigint) rename to tenantry_event_appended_unchecked;
revoke all on function tenantry_event_appended_unchecked(uuid, uuid, text, text, bigint) from public, tenantry_app, tenantry_platform;
create function tenantry_event_appended(p_event uuid, p_tenant uuid, p_type text, p_subject text, p_seq bigint)
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if not tenantry_is_platform() and p_tenant is distinct from tenantry_current_tenant() then
    raise exception 'an event of another tenant needs the platform scope' using errcode = 'insufficient_privilege';
  end if;
  return tenantry_event_appended_unchecked(p_event, p_tenant, p_type, p_subject, p_seq);
end $$;
revoke all on function tenantry_event_appended(uuid, uuid, text, text, bigint) from public;
grant execute on function tenantry_event_appended(uuid, uuid, text, text, bigint) to tenantry_app;
`.execute(db);
}
