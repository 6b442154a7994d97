import { type Kysely, sql } from 'kysely';

/**
 * Governance exceptions to a retention window (issue 18): a purge before the window ends needs an
 * exception requested by one principal (with its reason) and approved by another. `purge_exceptions`
 * keeps both actors and moments; `used_by_workflow` names the purge that consumed an approved one.
 * At most one open (not consumed, not withdrawn) exception per tenant: the partial unique index.
 * Approver ≠ requester is checked by the service and again here (the check constraint).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table purge_exceptions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  reason text not null,
  requested_by jsonb not null,
  requested_at timestamptz not null default now(),
  approved_by jsonb,
  approved_at timestamptz,
  used_by_workflow uuid,
  used_at timestamptz,
  constraint purge_exceptions_four_eyes
    check (approved_by is null or approved_by ->> 'principal' <> requested_by ->> 'principal')
);
create unique index purge_exceptions_one_open on purge_exceptions (tenant_id) where used_at is null;
alter table purge_exceptions enable row level security;
create policy tenant_isolation on purge_exceptions
  using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
  with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
grant select, insert, update, delete on purge_exceptions to tenantry_app;
`.execute(db);
}
