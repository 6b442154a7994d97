import { type Kysely, sql } from 'kysely';

/**
 * One-statement reads (issue 24): `tenantry_read_object(null::<table>, id, slug, include_deleted,
 * tenant, expires, proof)` enters the scope and reads one registry object in the statement's own
 * transaction, one round trip where BEGIN / scope / SELECT / COMMIT took four.
 *
 * The database still enforces the scope, exactly as in a transaction:
 * - security invoker: the SELECT runs as the caller's role, under row-level security;
 * - a tenant scope is entered through `tenantry_enter_tenant` with its HMAC proof (migration 0020),
 *   bound to this backend and this (implicit) transaction, so it ends with the statement;
 * - `p_tenant` null asks for the platform scope: the setting only, which shows every row on the
 *   platform role's connection and nothing on the tenant role's (`tenantry_is_platform`, 0013).
 * The table is the type of `p_row` (a registry table's row type); the values are bound parameters.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create function tenantry_read_object(
  p_row anyelement, p_id uuid, p_slug text, p_include_deleted boolean,
  p_tenant uuid, p_expires bigint, p_proof bytea
) returns setof anyelement
language plpgsql volatile security invoker as $$
declare
  tbl regclass := pg_typeof(p_row)::text::regclass;
begin
  if (p_id is null) = (p_slug is null) then
    raise exception 'exactly one of id and slug' using errcode = 'invalid_parameter_value';
  end if;
  if p_tenant is null then
    perform set_config('tenantry.platform', 'on', true), set_config('tenantry.tenant_id', '', true);
  else
    perform set_config('tenantry.platform', '', true);
    perform public.tenantry_enter_tenant(p_tenant, p_expires, p_proof);
  end if;
  if p_id is not null then
    return query execute format('select * from %s where id = $1%s', tbl,
      case when p_include_deleted then '' else ' and deleted_at is null' end) using p_id;
  else
    return query execute format('select * from %s where slug = $1 and deleted_at is null', tbl) using p_slug;
  end if;
end $$;
revoke all on function tenantry_read_object(anyelement, uuid, text, boolean, uuid, bigint, bytea) from public;
grant execute on function tenantry_read_object(anyelement, uuid, text, boolean, uuid, bigint, bytea) to tenantry_app;
`.execute(db);
}
