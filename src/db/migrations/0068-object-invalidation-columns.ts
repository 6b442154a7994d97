import { type Kysely, sql } from 'kysely';

/**
 * The object invalidation trigger (migrations 0057, 0063) reads the tenant column directly (issue
 * 24). 0063 found it by name in `to_jsonb(r)`, which turned every changed row, its spec, labels,
 * conditions and placement included, into JSON to read one member: on POST /v1/apply the tenant's
 * whole row, once per change. Now one static statement per kind of tenant column (TG_ARGV[1]: `id`,
 * `tenant_id` or none), of which a trigger only ever runs its own: PL/pgSQL plans a statement when it
 * first runs it, per trigger, so `r.tenant_id` is never planned for a table without that column.
 * The notifications are the same as 0063's, and the triggers are unchanged.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create or replace function tenantry_object_changed() returns trigger language plpgsql as $$
declare
  n bigint;
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
    case TG_ARGV[1]
      when 'id' then
        perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], r.id::text, r.id::text, r.generation::text))
        from old_rows r;
      when 'tenant_id' then
        perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], coalesce(r.tenant_id::text, ''), r.id::text,
          r.generation::text)) from old_rows r;
      else
        perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], '', r.id::text, r.generation::text))
        from old_rows r;
    end case;
  else
    case TG_ARGV[1]
      when 'id' then
        perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], r.id::text, r.id::text, r.generation::text))
        from new_rows r;
      when 'tenant_id' then
        perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], coalesce(r.tenant_id::text, ''), r.id::text,
          r.generation::text)) from new_rows r;
      else
        perform pg_notify('tenantry_objects', concat_ws(' ', TG_ARGV[0], '', r.id::text, r.generation::text))
        from new_rows r;
    end case;
  end if;
  return null;
end $$;
revoke all on function tenantry_object_changed() from public;
`.execute(db);
}
