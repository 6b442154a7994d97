import { type Kysely, sql } from 'kysely';

/**
 * Runtime inventory (issue 20): services, their scaling policies, configuration versions, and drift
 * findings. Tenant-scoped like deployments: `tenant_id` leads the keys, row-level security binds the
 * application role.
 * - services.observed: what the compute target last reported (replicas by name, health, version).
 * - configurations: immutable content (spec.content) with its RFC 8785 / SHA-256 checksum; the
 *   controller settles version_state (draft, active, superseded) per (tenant, config_name).
 * - drift_findings: one row each time observed runtime state differed from desired: opened, and
 *   resolved by whom (the controller's repair) or still open.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table services (
  tenant_id uuid not null references tenants (id),
  id uuid not null,
  deployment_id uuid not null,
  component text not null,
  observed jsonb,
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
  foreign key (tenant_id, deployment_id) references deployments (tenant_id, id)
);
create unique index services_id on services (id);
create unique index services_slug_live on services (slug) where deleted_at is null;
create index services_deployment on services (tenant_id, deployment_id);

create table scaling_policies (
  tenant_id uuid not null references tenants (id),
  id uuid not null,
  service_id uuid not null,
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
  foreign key (tenant_id, service_id) references services (tenant_id, id)
);
create unique index scaling_policies_id on scaling_policies (id);
create unique index scaling_policies_slug_live on scaling_policies (slug) where deleted_at is null;
-- Exactly one live policy per service.
create unique index scaling_policies_service_live on scaling_policies (tenant_id, service_id) where deleted_at is null;

create table configurations (
  tenant_id uuid not null references tenants (id),
  id uuid not null,
  config_name text not null,
  version integer not null check (version > 0),
  checksum text not null check (checksum ~ '^[0-9a-f]{64}$'),
  version_state text not null default 'draft' check (version_state in ('draft', 'active', 'superseded')),
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
  primary key (tenant_id, id)
);
create unique index configurations_id on configurations (id);
create unique index configurations_slug_live on configurations (slug) where deleted_at is null;
create index configurations_name on configurations (tenant_id, config_name, version);

create table drift_findings (
  tenant_id uuid not null references tenants (id),
  id uuid not null default gen_random_uuid(),
  object_kind text not null,
  object_id uuid not null,
  object_slug text not null,
  drift jsonb not null,
  opened_at timestamptz not null default now(),
  resolved_at timestamptz,
  resolved_by text,
  primary key (tenant_id, id)
);
create index drift_findings_object on drift_findings (tenant_id, object_id, opened_at);
create index drift_findings_open on drift_findings (tenant_id, opened_at) where resolved_at is null;
`.execute(db);
  for (const table of ['services', 'scaling_policies', 'configurations', 'drift_findings']) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy tenant_isolation on ${sql.table(table)}
        using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
        with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
      grant select, insert, update, delete on ${sql.table(table)} to tenantry_app;
    `.execute(db);
  }
}
