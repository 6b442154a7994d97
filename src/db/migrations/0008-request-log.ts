import { type Kysely, sql } from 'kysely';

/**
 * The request log behind per-tenant analytics (`GET /v1/tenants/{id}/activity`): one row per API
 * request a tenant made, written in batches off the request path. Analytics come from SQL over this
 * and the audit log, never from metrics labels. Rows older than the retention are deleted by the
 * writer itself.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table request_log (
  id bigint generated always as identity primary key,
  time timestamptz not null,
  tenant_id uuid not null,
  method text not null,
  route text not null,
  status integer not null,
  duration_ms real not null,
  correlation_id text not null
);
create index request_log_tenant_time on request_log (tenant_id, time);
create index request_log_time on request_log (time);
alter table request_log enable row level security;
create policy tenant_isolation on request_log
  using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
  with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
grant select, insert, delete on request_log to tenantry_app;
`.execute(db);
}
