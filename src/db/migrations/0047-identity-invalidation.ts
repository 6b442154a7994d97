import { type Kysely, sql } from 'kysely';

/**
 * Read-path speed (issues 23 and 24): identity invalidation, and policies the planner can estimate.
 *
 * 1. The identity cache's invalidation (issue 24, src/identity/identity-cache.ts): every change that
 * can change what `tenantry_identify` answers sends `NOTIFY tenantry_identity` at commit, so every
 * API process forgets the identities it verified before that change, whichever process (or a
 * hand-written statement) made it:
 * - sessions: updated (revoked, renewed, expiry changed) or deleted; a session inserted is one
 *   identify binds itself, no cached identity can name it before;
 * - break_glass_grants: any change (an elevation granted, ended or purged);
 * - tenants: deleted, or its slug or customer changed (a token names its tenant by slug or UUID);
 *   the common update (a new generation, a status) sends nothing.
 * Row triggers, so a statement that changes nothing says nothing; the payload is empty, so NOTIFY
 * folds the notifications of one transaction into one.
 *
 * 2. Every policy calls `tenantry_is_platform()` once per statement (`(select tenantry_is_platform())`,
 * an initplan), as migration 0020 did for `tenantry_current_tenant()`. Inlined per row, its
 * `current_setting(…) = 'on' and pg_has_role(…)` was costed for every row and estimated to pass
 * one row in 600 (the default selectivity of an equality with no column, times that of a boolean
 * function): for the platform, which sees every row, a list of a customer's 10,000 tenants was
 * planned as 17 rows, sorted after a full scan (52 ms) instead of read in slug order from the
 * index and stopped at the page (0.2 ms, EXPLAIN ANALYZE). As a parameter it is estimated at one
 * half, and evaluated once. The decision is the same: the setting and the session user do not
 * change within a statement, and a tenant connection is still never the platform.
 *
 * 3. The hierarchy's slug search (`slug like 'prefix%'`) reads an index of the live tenants' slugs in
 * byte order (text_pattern_ops), which LIKE can use whatever the database's collation.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create function tenantry_identity_changed() returns trigger language plpgsql as $$
begin
  perform pg_notify('tenantry_identity', '');
  return null;
end $$;
revoke all on function tenantry_identity_changed() from public;

create trigger identity_changed after update or delete on sessions
  for each row execute function tenantry_identity_changed();
create trigger identity_changed after insert or update or delete on break_glass_grants
  for each row execute function tenantry_identity_changed();
create trigger identity_changed after update on tenants for each row
  when (old.deleted_at is distinct from new.deleted_at or old.slug is distinct from new.slug
        or old.customer_id is distinct from new.customer_id)
  execute function tenantry_identity_changed();
create trigger identity_deleted after delete on tenants
  for each row execute function tenantry_identity_changed();

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
    -- Calls not yet in a sub-select (pg_get_expr shows those as "SELECT tenantry_is_platform()").
    q := regexp_replace(p.qual, '(?<!SELECT )(tenantry_is_platform|tenantry_current_tenant)\\(\\)', '(select \\1())', 'g');
    c := regexp_replace(p.chk, '(?<!SELECT )(tenantry_is_platform|tenantry_current_tenant)\\(\\)', '(select \\1())', 'g');
    if q is distinct from p.qual or c is distinct from p.chk then
      execute format('alter policy %I on %s', p.polname, p.tbl)
        || coalesce(' using (' || q || ')', '') || coalesce(' with check (' || c || ')', '');
    end if;
  end loop;
end $do$;

create index tenants_slug_prefix on tenants (slug text_pattern_ops) where deleted_at is null;
create index workflows_recent on workflows (created_at desc, id desc);
create index promotions_recent on promotions (created_at desc, id desc);
`.execute(db);
}
