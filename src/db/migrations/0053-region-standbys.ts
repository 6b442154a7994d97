import { type Kysely, sql } from 'kysely';

/**
 * Region failover (issue 19, src/tenant-migrations/standby.ts and failover.ts).
 * - `tenant_standbys`: one per tenant whose spec names a standby region: what is replicated where
 *   (the plan), its state (Establishing → Streaming → FailedOver, or Failed), and what the keeper
 *   last measured — replication lag in bytes, the last moment the standby was seen caught up, the
 *   primary's row counts and sequence values then (the "last known" the post-failover checks
 *   compare with), the last blob sync, and how many measurements in a row found the primary
 *   unreachable (a tenant's `standby.failoverAfterChecks` fails it over at that count).
 * - `tenant_failovers`: one per failover: from and to placement, the standby's lag and data-loss
 *   window when it started, the post-failover consistency checks, and the outcome.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table tenant_standbys (
  tenant_id uuid primary key,
  region text not null,
  state text not null default 'Establishing'
    check (state in ('Establishing', 'Streaming', 'FailedOver', 'Failed')),
  workflow_id uuid,
  plan jsonb not null default '{}',
  lag_bytes bigint,
  measured_at timestamptz,
  caught_up_at timestamptz,
  last_known jsonb,
  blobs jsonb,
  -- Measurements in a row that found the primary's data plane unreachable (the failover policy's count).
  unreachable_checks integer not null default 0,
  error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table tenant_standbys enable row level security;
create policy tenant_isolation on tenant_standbys
  using ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()))
  with check ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()));
grant select, insert, update, delete on tenant_standbys to tenantry_app;

create table tenant_failovers (
  id uuid primary key,
  tenant_id uuid not null,
  from_region text not null,
  to_region text not null,
  state text not null default 'Running' check (state in ('Running', 'FailedOver', 'Failed')),
  reason text not null,
  source jsonb not null,
  target jsonb not null,
  standby jsonb not null,
  plan jsonb,
  consistency jsonb,
  failed_over_at timestamptz,
  -- When the old primary came back and its role lost LOGIN, its slot and publication dropped.
  fenced_at timestamptz,
  fence jsonb,
  error text,
  actor jsonb not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index tenant_failovers_by_tenant on tenant_failovers (tenant_id, created_at desc);
alter table tenant_failovers enable row level security;
create policy tenant_isolation on tenant_failovers
  using ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()))
  with check ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()));
grant select, insert, update, delete on tenant_failovers to tenantry_app;
`.execute(db);
}
