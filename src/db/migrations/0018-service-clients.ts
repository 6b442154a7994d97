import { type Kysely, sql } from 'kysely';

/**
 * Service credentials of a tenant (issue 18): activation issues one OAuth client per tenant, whose
 * client-credentials grant (`POST /v1/oauth/token`) gets a service token of Tenantry's built-in
 * issuer scoped to that tenant. The secret is a generated credential like a database password
 * (`resource_secrets`): readable only in the platform scope, handed out through the API after
 * authorization. Revoked clients (a failed activation's undo, a purge) stay, with `revoked_at`.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table service_clients (
  client_id text primary key,
  tenant_id uuid not null,
  secret text not null,
  roles text[] not null,
  workflow_id uuid,
  created_at timestamptz not null default now(),
  revoked_at timestamptz
);
create unique index service_clients_one_live_per_tenant on service_clients (tenant_id) where revoked_at is null;
alter table service_clients enable row level security;
create policy platform_only on service_clients
  using (tenantry_is_platform()) with check (tenantry_is_platform());
grant select, insert, update, delete on service_clients to tenantry_app;
`.execute(db);
}
