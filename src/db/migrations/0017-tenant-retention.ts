import { type Kysely, sql } from 'kysely';

/**
 * Retention, legal hold and purge (issue 18). Archiving a tenant starts its retention clock:
 * `tenant_retention` keeps, per data class, the window (days, from its plan) and the moment it ends;
 * the tenant's provider resources (topics, containers, databases) and their secrets stay until the
 * `retiredServices` window has passed and a purge removes them (`purged_at`, with the deletion record
 * in the audit log). A deleted tenant that was never archived (Draft) gets a record with no window.
 * `legal_holds`: at most one hold in force per tenant (the partial unique index); while one is, no
 * purge runs. Released holds stay, with who released them and why.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table tenant_retention (
  tenant_id uuid primary key,
  started_at timestamptz not null default now(),
  windows jsonb not null,
  resources_purge_after timestamptz not null,
  purged_at timestamptz,
  purge_workflow_id uuid
);
create table legal_holds (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  reason text not null,
  placed_by jsonb not null,
  placed_at timestamptz not null default now(),
  released_by jsonb,
  released_at timestamptz,
  release_reason text
);
create unique index legal_holds_one_in_force on legal_holds (tenant_id) where released_at is null;
`.execute(db);
  for (const table of ['tenant_retention', 'legal_holds']) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy tenant_isolation on ${sql.table(table)}
        using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
        with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
      grant select, insert, update, delete on ${sql.table(table)} to tenantry_app;
    `.execute(db);
  }
}
