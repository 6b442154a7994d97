import { type Kysely, sql } from 'kysely';

/**
 * Freeze windows ("stop the line", issue 18): while a freeze is in force (not lifted, and inside
 * its optional window), new workflows of the tenants it covers — every tenant (`platform`), a
 * region's, or a cell's — are refused with the freeze named, except the workflow types it allows.
 * Platform objects: everyone's transitions read them, only the platform writes them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table workflow_freezes (
  name text primary key,
  scope text not null check (scope in ('platform', 'region', 'cell')),
  target text,
  allow text[] not null default '{}',
  reason text not null,
  starts_at timestamptz not null default now(),
  ends_at timestamptz,
  created_by jsonb not null,
  created_at timestamptz not null default now(),
  lifted_at timestamptz,
  check ((scope = 'platform') = (target is null))
);
alter table workflow_freezes enable row level security;
-- Every transition checks them, whoever asks; only the platform declares or lifts them.
create policy freeze_read on workflow_freezes for select using (true);
create policy freeze_write on workflow_freezes for all
  using (tenantry_is_platform()) with check (tenantry_is_platform());
grant select, insert, update, delete on workflow_freezes to tenantry_app;
`.execute(db);
}
