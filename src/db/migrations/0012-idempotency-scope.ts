import { type Kysely, sql } from 'kysely';

/**
 * Idempotency records keyed by the whole caller, not its subject alone: issuer, subject, application
 * and tenant scope, with the method and path. Row-level security like every tenant-scoped table (a
 * tenant connection sees its own records only; platform records have no tenant and are seen under
 * the platform scope only). Records expire (`expires_at`). Stored responses are redacted copies.
 * Breaking: the previous records are dropped (they were keyed by subject alone and could be replayed
 * across tenants); a retry of a request made before the upgrade runs again.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
drop table idempotency_keys;
create table idempotency_keys (
  issuer text not null,
  principal text not null,
  app_id text not null,
  scope text not null,
  tenant_id uuid,
  method text not null,
  path text not null,
  key text not null,
  request_hash text not null,
  status_code integer,
  response jsonb,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  primary key (issuer, principal, app_id, scope, method, path, key),
  check ((scope = 'platform') = (tenant_id is null)),
  check (scope = 'platform' or scope = tenant_id::text)
);
create index idempotency_keys_expires on idempotency_keys (expires_at);
create index idempotency_keys_tenant on idempotency_keys (tenant_id, expires_at);
alter table idempotency_keys enable row level security;
create policy tenant_isolation on idempotency_keys
  using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
  with check ((tenantry_is_platform() and tenant_id is null) or tenant_id = tenantry_current_tenant());
grant select, insert, update, delete on idempotency_keys to tenantry_app;
`.execute(db);
}
