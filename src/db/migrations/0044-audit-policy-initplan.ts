import { type Kysely, sql } from 'kysely';

/**
 * The audit records' row-level policy, evaluated once per statement instead of once per row
 * (issue 17: `audit verify` reads every record as the platform). `tenantry_is_platform()` is stable
 * (a setting and a role membership that no statement changes while it runs), so as an initplan it
 * gives every row the same answer it gave before; migration 0020 did the same for
 * `tenantry_current_tenant()`. Same rule, same result: only the cost moves.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter policy tenant_isolation on audit_records
  using ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()))
  with check ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()));
`.execute(db);
}
