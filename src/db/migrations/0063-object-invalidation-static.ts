import { type Kysely, sql } from 'kysely';

/**
 * The object invalidation trigger of migration 0057 without dynamic SQL (issue 24). Its two
 * `execute format(…)` statements were parsed and planned on every call, that is on every change of a
 * registry object: under `bench/profile-apply.ts` about 0.5 ms of PostgreSQL time per POST /v1/apply,
 * a sixth of the server's whole share. Now both statements are static, so PL/pgSQL plans them once per
 * session and table; the tenant column (TG_ARGV[1]: `id`, `tenant_id` or none) is read from the row
 * as JSON. The notifications are the same: `<kind> <tenant> <id> <generation>` per row (tenant empty
 * for platform objects), one `*` for more than 200 rows, nothing for none; the triggers are unchanged.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create or replace function tenantry_object_changed() returns trigger language plpgsql as $$
declare
  n bigint;
  tenant text := nullif(TG_ARGV[1], '');
begin
  if TG_OP = 'DELETE' then
    select count(*) into n from old_rows;
  else
    select count(*) into n from new_rows;
  end if;
  if n = 0 then
    return null;
  elsif n > 200 then
    perform pg_notify('tenantry_objects', '*');
  elsif TG_OP = 'DELETE' then
    perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], coalesce(to_jsonb(r) ->> tenant, ''),
      r.id::text, r.generation::text)) from old_rows r;
  else
    perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], coalesce(to_jsonb(r) ->> tenant, ''),
      r.id::text, r.generation::text)) from new_rows r;
  end if;
  return null;
end $$;
revoke all on function tenantry_object_changed() from public;
`.execute(db);
}
