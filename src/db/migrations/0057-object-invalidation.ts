import { type Kysely, sql } from 'kysely';

/**
 * The object read cache's invalidation (issue 24, src/registry/object-cache.ts): every change of a
 * registry object's row sends `NOTIFY tenantry_objects` at commit, whichever process, controller or
 * hand-written statement made it, so every API process forgets what it served of that object.
 *
 * - Payload `<kind> <tenant> <id> <generation>` (tenant empty for platform objects): small, and
 *   distinct per object, so the notifications of one transaction fold per object only.
 * - Statement triggers with transition tables: one trigger call per statement, whatever its size.
 *   A statement that changes more than 200 rows sends one `*` (forget everything) instead of a
 *   notification per row, so bulk work does not flood the queue or the listeners.
 * - UPDATE (desired state, status, lifecycle, deletion as a tombstone) and DELETE: an INSERT makes an
 *   object that no cache can hold yet (misses are never cached). An upsert that updates fires UPDATE.
 * - `tenantry_watch_objects(table, kind)` installs both triggers: a migration that adds a kind calls it.
 *   The server caches only kinds whose table has them (it looks at start), so a kind whose table
 *   lacks them is read from the database every time, never served stale.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create function tenantry_object_changed() returns trigger language plpgsql as $$
declare
  n bigint;
  rel text := case when TG_OP = 'DELETE' then 'old_rows' else 'new_rows' end;
  tenant text := case TG_ARGV[1] when '' then 'null' else format('%I::text', TG_ARGV[1]) end;
begin
  execute format('select count(*) from %I', rel) into n;
  if n = 0 then
    return null;
  elsif n > 200 then
    perform pg_notify('tenantry_objects', '*');
    return null;
  end if;
  execute format(
    'select pg_notify(''tenantry_objects'', concat_ws('' '', %L, coalesce(%s, ''''), id::text, generation::text)) from %I',
    TG_ARGV[0], tenant, rel);
  return null;
end $$;
revoke all on function tenantry_object_changed() from public;

create function tenantry_watch_objects(p_table regclass, p_kind text) returns void language plpgsql as $$
declare
  tenant text := case
    when p_table = 'tenants'::regclass then 'id'
    when exists (select from pg_attribute where attrelid = p_table and attname = 'tenant_id' and not attisdropped)
      then 'tenant_id'
    else '' end;
begin
  execute format(
    'create trigger object_updated after update on %s referencing new table as new_rows '
    'for each statement execute function tenantry_object_changed(%L, %L)', p_table, p_kind, tenant);
  execute format(
    'create trigger object_deleted after delete on %s referencing old table as old_rows '
    'for each statement execute function tenantry_object_changed(%L, %L)', p_table, p_kind, tenant);
end $$;
revoke all on function tenantry_watch_objects(regclass, text) from public;

select tenantry_watch_objects(t::regclass, k) from (values
  ('customers', 'Customer'), ('tenants', 'Tenant'), ('deployments', 'Deployment'),
  ('integration_resources', 'IntegrationResource'), ('systems', 'System'), ('plans', 'Plan'),
  ('cells', 'Cell'), ('regions', 'Region'), ('webhook_endpoints', 'WebhookEndpoint'),
  ('services', 'Service'), ('scaling_policies', 'ScalingPolicy'), ('configurations', 'Configuration'),
  ('releases', 'Release'), ('pipelines', 'Pipeline')
) as v(t, k);
`.execute(db);
}
