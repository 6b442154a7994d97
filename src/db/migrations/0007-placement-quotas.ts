import { type Kysely, sql } from 'kysely';

/**
 * Placement, plans, quotas and rate limits (issue 8).
 * - regions, cells, plans: platform objects of the registry (readable by every scope, written by the platform).
 * - tenants.cell_id / tenants.placement: the tenant's binding to a cell (isolation, quota, partitions).
 * - cells.allocated: tenants bound to the cell; changed only under the cell's row lock.
 * - tenant_usage: one row per tenant, the lock that serialises quota checks of one tenant.
 * - usage_history: versioned quota and usage snapshots, for billing comparison.
 * - limit_overrides: audited, optionally expiring per-tenant overrides of quotas and rate limits.
 * - rate_limit_buckets: GCRA state (theoretical arrival time) per tenant and method class.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table regions (
  id uuid primary key,
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
  deleted_at timestamptz
);
create unique index regions_slug_live on regions (slug) where deleted_at is null;

create table cells (
  id uuid primary key,
  slug text not null,
  region text not null,
  stage text not null,
  tenancy text not null check (tenancy in ('shared', 'dedicated')),
  allocated integer not null default 0 check (allocated >= 0),
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
create unique index cells_slug_live on cells (slug) where deleted_at is null;
create index cells_region on cells (region, tenancy, id) where deleted_at is null;

create table plans (
  id uuid primary key,
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
  deleted_at timestamptz
);
create unique index plans_slug_live on plans (slug) where deleted_at is null;

alter table tenants add column cell_id uuid references cells (id);
alter table tenants add column placement jsonb;
create index tenants_cell on tenants (cell_id, id) where cell_id is not null;

create table tenant_usage (
  tenant_id uuid primary key references tenants (id),
  storage_bytes bigint not null default 0,
  version bigint not null default 0,
  updated_at timestamptz not null default now()
);

create table usage_history (
  tenant_id uuid not null references tenants (id),
  version bigint not null,
  time timestamptz not null default now(),
  reason text not null,
  plan text,
  usage jsonb not null,
  limits jsonb not null,
  request_id text not null,
  primary key (tenant_id, version)
);

create table limit_overrides (
  tenant_id uuid not null references tenants (id),
  id uuid not null,
  name text not null,
  value integer not null check (value >= 0),
  reason text not null,
  created_by text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  primary key (tenant_id, id)
);
create index limit_overrides_active on limit_overrides (tenant_id, name) where revoked_at is null;

create table rate_limit_buckets (
  tenant_id uuid not null,
  class text not null,
  tat timestamptz not null,
  primary key (tenant_id, class)
);
`.execute(db);

  for (const table of ['regions', 'cells', 'plans']) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy catalogue_read on ${sql.table(table)} for select using (true);
      create policy catalogue_write on ${sql.table(table)} for all
        using (tenantry_is_platform()) with check (tenantry_is_platform());
    `.execute(db);
  }
  // rate_limit_buckets holds no tenant data (a timestamp per tenant id and class) and is written
  // before any scope is known, so it has no row-level security.
  for (const table of ['tenant_usage', 'usage_history', 'limit_overrides']) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy tenant_isolation on ${sql.table(table)}
        using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
        with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
    `.execute(db);
  }
  await sql`
    grant select, insert, update, delete on regions, cells, plans, tenant_usage, usage_history,
      limit_overrides, rate_limit_buckets to tenantry_app;
  `.execute(db);
}
