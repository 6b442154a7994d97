import { type Kysely, sql } from 'kysely';

/**
 * The registry, the lineage of every desired-state change, and the three records the change path
 * writes with it (audit, outbox event, reconcile job). Row-level security on every table that
 * holds tenant data, keyed on the per-transaction settings `tenantry.tenant_id` / `tenantry.platform`.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
do $$ begin
  if not exists (select from pg_roles where rolname = 'tenantry_app') then
    create role tenantry_app nologin nosuperuser nocreatedb nocreaterole noinherit nobypassrls;
  end if;
end $$;

create function tenantry_current_tenant() returns uuid language sql stable
  as $$ select nullif(current_setting('tenantry.tenant_id', true), '')::uuid $$;
create function tenantry_is_platform() returns boolean language sql stable
  as $$ select coalesce(current_setting('tenantry.platform', true), '') = 'on' $$;

create table customers (
  id uuid primary key,
  slug text not null,
  short_code text not null,
  spec jsonb not null,
  labels jsonb not null default '{}',
  generation bigint not null default 1,
  lifecycle text not null default 'Active',
  phase text not null default 'Pending',
  observed_generation bigint not null default 0,
  conditions jsonb not null default '[]',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
create unique index customers_slug_live on customers (slug) where deleted_at is null;

create table systems (
  id uuid primary key,
  slug text not null,
  service_id text not null,
  spec jsonb not null,
  labels jsonb not null default '{}',
  generation bigint not null default 1,
  lifecycle text not null default 'Active',
  phase text not null default 'Pending',
  observed_generation bigint not null default 0,
  conditions jsonb not null default '[]',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
create unique index systems_slug_live on systems (slug) where deleted_at is null;

create table tenants (
  id uuid primary key,
  customer_id uuid not null references customers (id),
  slug text not null,
  region text not null,
  environment_type text not null,
  qualifier text,
  spec jsonb not null,
  labels jsonb not null default '{}',
  generation bigint not null default 1,
  lifecycle text not null default 'Active'
    check (lifecycle in ('Draft', 'Active', 'Suspended', 'Archived', 'Deleted')),
  phase text not null default 'Pending',
  observed_generation bigint not null default 0,
  conditions jsonb not null default '[]',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
create unique index tenants_slug_live on tenants (slug) where deleted_at is null;
create index tenants_customer on tenants (customer_id, id);
create index tenants_region_env on tenants (region, environment_type, id);

create table deployments (
  tenant_id uuid not null references tenants (id),
  id uuid not null,
  system_id uuid not null references systems (id),
  slug text not null,
  qualifier text,
  spec jsonb not null,
  labels jsonb not null default '{}',
  generation bigint not null default 1,
  lifecycle text not null default 'Active',
  phase text not null default 'Pending',
  observed_generation bigint not null default 0,
  conditions jsonb not null default '[]',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz,
  primary key (tenant_id, id)
);
create unique index deployments_id on deployments (id);
create unique index deployments_slug_live on deployments (slug) where deleted_at is null;

create table integration_resources (
  tenant_id uuid not null references tenants (id),
  id uuid not null,
  deployment_id uuid,
  scope text not null check (scope in ('tenant', 'deployment')),
  resource_type text not null,
  physical_name text not null,
  slug text not null,
  spec jsonb not null,
  labels jsonb not null default '{}',
  generation bigint not null default 1,
  lifecycle text not null default 'Active',
  phase text not null default 'Pending',
  observed_generation bigint not null default 0,
  conditions jsonb not null default '[]',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz,
  primary key (tenant_id, id),
  foreign key (tenant_id, deployment_id) references deployments (tenant_id, id),
  check ((scope = 'deployment') = (deployment_id is not null))
);
create unique index integration_resources_id on integration_resources (id);
create unique index integration_resources_slug_live on integration_resources (slug) where deleted_at is null;
create unique index integration_resources_physical_live
  on integration_resources (resource_type, physical_name) where deleted_at is null;

-- Every desired-state version of every object: the lineage.
create table object_versions (
  id bigint generated always as identity primary key,
  tenant_id uuid,
  object_kind text not null,
  object_id uuid not null,
  generation bigint not null,
  action text not null,
  slug text not null,
  state jsonb,
  changes jsonb not null default '[]',
  actor jsonb not null,
  request_id text not null,
  correlation_id text not null,
  created_at timestamptz not null default now(),
  unique (object_kind, object_id, generation)
);
create index object_versions_tenant on object_versions (tenant_id, object_kind, object_id, generation);

create table audit_records (
  id uuid primary key,
  time timestamptz not null default now(),
  tenant_id uuid,
  app_id text,
  actor_principal text not null,
  actor_kind text not null,
  session_id text,
  action text not null,
  target_kind text not null,
  target_id uuid,
  target_slug text,
  before jsonb,
  after jsonb,
  outcome text not null check (outcome in ('success', 'failure', 'denied')),
  decision jsonb,
  request_id text not null,
  correlation_id text not null
);
create index audit_records_tenant_time on audit_records (tenant_id, time);
create index audit_records_target on audit_records (target_id);

create table outbox_events (
  id uuid primary key,
  tenant_id uuid,
  type text not null,
  subject text not null,
  time timestamptz not null default now(),
  data jsonb not null,
  correlation_id text not null,
  published_at timestamptz
);
create index outbox_events_unpublished on outbox_events (time) where published_at is null;
create index outbox_events_tenant on outbox_events (tenant_id, time);

-- One row per object that needs reconciling: enqueueing twice collapses into one (level-triggered).
create table reconcile_jobs (
  object_kind text not null,
  object_id uuid not null,
  tenant_id uuid,
  generation bigint not null,
  run_after timestamptz not null default now(),
  attempts integer not null default 0,
  locked_by text,
  locked_until timestamptz,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (object_kind, object_id)
);
create index reconcile_jobs_due on reconcile_jobs (run_after);
`.execute(db);

  // Row-level security. The application role never owns these tables, so the policies bind it.
  for (const table of [
    'deployments',
    'integration_resources',
    'object_versions',
    'audit_records',
    'outbox_events',
    'reconcile_jobs',
  ]) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy tenant_isolation on ${sql.table(table)}
        using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
        with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
    `.execute(db);
  }
  await sql`
alter table tenants enable row level security;
create policy tenant_isolation on tenants
  using (tenantry_is_platform() or id = tenantry_current_tenant())
  with check (tenantry_is_platform() or id = tenantry_current_tenant());

alter table customers enable row level security;
create policy customer_read on customers for select
  using (tenantry_is_platform() or id = (select t.customer_id from tenants t where t.id = tenantry_current_tenant()));
create policy customer_write on customers for all
  using (tenantry_is_platform()) with check (tenantry_is_platform());

alter table systems enable row level security;
create policy catalogue_read on systems for select using (true);
create policy catalogue_write on systems for all
  using (tenantry_is_platform()) with check (tenantry_is_platform());

grant usage on schema public to tenantry_app;
grant select, insert, update, delete on all tables in schema public to tenantry_app;
grant usage, select on all sequences in schema public to tenantry_app;
alter default privileges in schema public grant select, insert, update, delete on tables to tenantry_app;
alter default privileges in schema public grant usage, select on sequences to tenantry_app;
`.execute(db);
}
