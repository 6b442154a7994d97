import { type Kysely, sql } from 'kysely';

/**
 * The reconcile controller (src/controller). `reconcile_jobs` (0001) stays the queue: one row per
 * object, kept for the object's life (its `run_after` doubles as the next periodic resync) and
 * removed once a deleted object is finalised. `ticket` counts enqueues, so a worker that finishes
 * can tell whether the object changed while it worked. `resource_secrets` holds generated
 * credentials of provisioned resources; only the platform scope can read it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter table reconcile_jobs add column ticket bigint not null default 0;

create table resource_secrets (
  tenant_id uuid not null,
  resource_id uuid not null,
  name text not null,
  value jsonb not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, resource_id)
);
alter table resource_secrets enable row level security;
create policy platform_only on resource_secrets
  using (tenantry_is_platform()) with check (tenantry_is_platform());
grant select, insert, update, delete on resource_secrets to tenantry_app;

-- Objects written before the controller existed get their job now.
insert into reconcile_jobs (object_kind, object_id, tenant_id, generation)
select 'Customer', id, null::uuid, generation from customers where deleted_at is null
union all select 'System', id, null::uuid, generation from systems where deleted_at is null
union all select 'Tenant', id, id, generation from tenants where phase <> 'Deleted'
union all select 'Deployment', id, tenant_id, generation from deployments where phase <> 'Deleted'
union all select 'IntegrationResource', id, tenant_id, generation from integration_resources where phase <> 'Deleted'
on conflict do nothing;
`.execute(db);
}
