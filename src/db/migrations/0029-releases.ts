import { type Kysely, sql } from 'kysely';

/**
 * Releases and promotion (issue 21, src/releases).
 * - pipelines, releases: platform kinds of the registry, read and written by the platform only.
 *   A release is one version of a system; (system, version) is unique among live releases.
 * - deployment_releases: which release each Deployment runs, written only by promotions (the
 *   runtime inventory of issue 20 is not relied on). `previous_version` is what a rollback restores.
 * - release_pins: a tenant pinned to a version of a system (reason, expiry): waves skip it.
 * - maintenance_windows: a customer's windows during which its tenant is not changed; a promotion
 *   defers the tenant until the window ends.
 * - deployment_health: what the runtime last reported for a deployment (replica readiness, error
 *   rate, the version it runs); verification reads it.
 * - promotions: one row per promotion (its workflow has the same id), with approvals and progress.
 * - promotion_targets: one row per tenant deployment a promotion covers, with its wave and
 *   outcome; the runtime update and the target's state change commit together, so a resumed
 *   promotion neither repeats nor skips a tenant.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table pipelines (
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
create unique index pipelines_slug_live on pipelines (slug) where deleted_at is null;

create table releases (
  id uuid primary key,
  system_id uuid not null references systems (id),
  version text not null,
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
create unique index releases_slug_live on releases (slug) where deleted_at is null;
create unique index releases_version_live on releases (system_id, version) where deleted_at is null;

create table deployment_releases (
  tenant_id uuid not null references tenants (id),
  deployment_id uuid not null,
  system_id uuid not null references systems (id),
  version text not null,
  previous_version text,
  promotion_id uuid,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, deployment_id),
  foreign key (tenant_id, deployment_id) references deployments (tenant_id, id)
);
create index deployment_releases_system on deployment_releases (system_id, version);

create table release_pins (
  tenant_id uuid not null references tenants (id),
  system_id uuid not null references systems (id),
  version text not null,
  reason text not null,
  until timestamptz not null,
  created_by jsonb not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, system_id)
);

create table maintenance_windows (
  tenant_id uuid not null references tenants (id),
  name text not null,
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  reason text not null,
  created_by jsonb not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, name),
  check (ends_at > starts_at)
);

create table deployment_health (
  tenant_id uuid not null references tenants (id),
  deployment_id uuid not null,
  version text not null,
  ready_replicas integer not null check (ready_replicas >= 0),
  desired_replicas integer not null check (desired_replicas >= 0),
  error_rate double precision not null check (error_rate >= 0 and error_rate <= 1),
  reported_at timestamptz not null default now(),
  primary key (tenant_id, deployment_id),
  foreign key (tenant_id, deployment_id) references deployments (tenant_id, id)
);

create table promotions (
  id uuid primary key,
  system_id uuid not null references systems (id),
  release_id uuid not null references releases (id),
  version text not null,
  pipeline_id uuid not null references pipelines (id),
  stage text not null,
  -- The stage as the pipeline said when the promotion was requested (a later edit does not change it).
  stage_spec jsonb not null,
  mode text not null check (mode in ('promote', 'rollback')),
  state text not null check (state in ('AwaitingApproval', 'Running', 'Succeeded', 'Failed', 'Cancelled')),
  requested_by jsonb not null,
  author text,
  required_approvals integer not null,
  approvals jsonb not null default '[]',
  gates jsonb,
  progress jsonb not null default '{}',
  error text,
  request_id text not null,
  correlation_id text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  finished_at timestamptz
);
create index promotions_system on promotions (system_id, created_at desc);

create table promotion_targets (
  promotion_id uuid not null references promotions (id),
  tenant_id uuid not null references tenants (id),
  deployment_id uuid not null,
  wave integer not null,
  state text not null
    check (state in ('Pending', 'Deferred', 'Updated', 'Verified', 'RolledBack', 'Skipped', 'Halted')),
  reason text,
  from_version text,
  to_version text not null,
  deferred_until timestamptz,
  updated_at timestamptz not null default now(),
  primary key (promotion_id, tenant_id, deployment_id)
);
create index promotion_targets_tenant on promotion_targets (tenant_id, promotion_id);
`.execute(db);

  // Release and CI metadata is the platform's: a tenant's principals see none of it (a tenant reads
  // the version each of its deployments runs from deployment_releases).
  for (const table of ['pipelines', 'releases', 'promotions']) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy platform_only on ${sql.table(table)}
        using (tenantry_is_platform()) with check (tenantry_is_platform());
    `.execute(db);
  }
  for (const table of [
    'deployment_releases',
    'release_pins',
    'maintenance_windows',
    'deployment_health',
    'promotion_targets',
  ]) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy tenant_isolation on ${sql.table(table)}
        using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
        with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
    `.execute(db);
  }
  await sql`
    grant select, insert, update, delete on pipelines, releases, deployment_releases, release_pins,
      maintenance_windows, deployment_health, promotions, promotion_targets to tenantry_app;
  `.execute(db);
}
