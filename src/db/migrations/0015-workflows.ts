import { type Kysely, sql } from 'kysely';

/**
 * Lifecycle workflows (issue 18, src/workflows). `workflows` is both the record and the queue: a
 * workflow is due when `run_after` has passed and its lease (`locked_until`) is free, so a dead
 * controller's workflows are claimed by a live one once the lease runs out. At most one lifecycle
 * workflow per tenant is open (Pending, Running, Waiting or Compensating): the partial unique index
 * is the guard, so two concurrent requests cannot both start one. `workflow_steps` is the
 * checkpoint: one row per completed (or compensated, or failed) step with its output; a resumed
 * workflow continues at the first step without a completed row. `tenant_suspensions` records what
 * a suspension took away (database logins, Kafka DENY ACLs, blob access policies) so that resume
 * gives back exactly that; its row also holds the tenant's non-lifecycle webhook deliveries.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table workflows (
  id uuid primary key,
  tenant_id uuid not null,
  type text not null,
  state text not null default 'Pending'
    check (state in ('Pending', 'Running', 'Waiting', 'Compensating', 'Succeeded', 'Failed', 'Cancelled')),
  input jsonb not null,
  actor jsonb not null,
  request_id text not null,
  correlation_id text not null,
  error text,
  attempts integer not null default 0,
  cancel_requested jsonb,
  run_after timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  finished_at timestamptz
);
create unique index workflows_one_open_per_tenant on workflows (tenant_id)
  where state in ('Pending', 'Running', 'Waiting', 'Compensating');
create index workflows_by_tenant on workflows (tenant_id, created_at desc);
create index workflows_due on workflows (run_after) where state in ('Pending', 'Running', 'Compensating');

create table workflow_steps (
  tenant_id uuid not null,
  workflow_id uuid not null references workflows (id) on delete cascade,
  position integer not null,
  name text not null,
  state text not null check (state in ('Completed', 'Failed', 'Compensated')),
  attempts integer not null,
  output jsonb,
  error text,
  started_at timestamptz not null,
  ended_at timestamptz not null default now(),
  primary key (tenant_id, workflow_id, position)
);

create table tenant_suspensions (
  tenant_id uuid primary key,
  workflow_id uuid not null,
  taken jsonb not null default '{}',
  webhooks_held boolean not null default false,
  created_at timestamptz not null default now()
);
`.execute(db);
  // Workflow progress events (one per step) go to the webhook endpoints that ask for them by type;
  // an endpoint without an `eventTypes` filter keeps receiving what it did before. The fan-out body
  // is `tenantry_event_appended_unchecked` since migration 0013, whose `tenantry_event_appended`
  // wrapper checks the caller's scope first: replace the body, keep the wrapper.
  await sql`
create or replace function tenantry_event_appended_unchecked(p_event uuid, p_tenant uuid, p_type text, p_subject text, p_seq bigint)
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
declare n integer;
begin
  insert into webhook_deliveries (tenant_id, endpoint_id, event_id, stream, seq)
  select e.tenant_id, e.id, p_event, coalesce(p_tenant::text, 'platform'), p_seq
  from webhook_endpoints e
  where e.deleted_at is null
    and coalesce((e.spec ->> 'enabled')::boolean, true)
    and (e.tenant_id is null or e.tenant_id = p_tenant)
    and (case when e.spec ? 'eventTypes' then e.spec -> 'eventTypes' ? p_type
              else p_type not like 'dev.tenantry.workflow.%' end)
    -- An endpoint is not sent the events about itself (its own creation, rotation, disabling).
    and p_subject <> 'webhookendpoints/' || e.id::text;
  get diagnostics n = row_count;
  perform pg_notify('tenantry_events', coalesce(p_tenant::text, 'platform'));
  if n > 0 then perform pg_notify('tenantry_webhooks', ''); end if;
  return n;
end $$;
`.execute(db);
  for (const table of ['workflows', 'workflow_steps', 'tenant_suspensions']) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy tenant_isolation on ${sql.table(table)}
        using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
        with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
      grant select, insert, update, delete on ${sql.table(table)} to tenantry_app;
    `.execute(db);
  }
}
