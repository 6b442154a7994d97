import { type Kysely, sql } from 'kysely';

/**
 * Tenancy-mode migrations (issue 19, src/tenant-migrations). One row per migration, written by its
 * workflow's steps in their checkpoint transactions: the plan (source and target of every database
 * resource), the copy mode, the verification (row counts and per-table checksums on both sides),
 * the write freeze (start, end, duration), the cut-over, and the rollback window during which the
 * source is kept. `state`: Running → CutOver → RolledBack | Retired, or Failed (compensated).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table tenant_migrations (
  id uuid primary key,
  tenant_id uuid not null,
  kind text not null check (kind in ('isolation')),
  state text not null default 'Running'
    check (state in ('Running', 'CutOver', 'RolledBack', 'Retired', 'Failed')),
  source jsonb not null,
  target jsonb not null,
  plan jsonb not null,
  mode text,
  verification jsonb,
  -- While true, the reconcile keeps the frozen side's role NOLOGIN (src/controller/reconcilers.ts).
  writes_frozen boolean not null default false,
  freeze_started_at timestamptz,
  freeze_ended_at timestamptz,
  freeze_ms integer,
  cut_over_at timestamptz,
  rollback_window_seconds integer not null,
  rollback_until timestamptz,
  rollback_workflow_id uuid,
  rollback_verification jsonb,
  rolled_back_at timestamptz,
  retired_at timestamptz,
  error text,
  actor jsonb not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index tenant_migrations_by_tenant on tenant_migrations (tenant_id, created_at desc);
alter table tenant_migrations enable row level security;
create policy tenant_isolation on tenant_migrations
  using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
  with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
grant select, insert, update, delete on tenant_migrations to tenantry_app;
`.execute(db);
}
