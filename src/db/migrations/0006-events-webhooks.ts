import { type Kysely, sql } from 'kysely';

/**
 * Events and webhooks (issue 7).
 * - `event_sequences`: one counter row per stream (a tenant's UUID, or 'platform'), bumped in the
 *   change's transaction; its row lock serialises a stream's writers, so sequences are gap-free.
 * - `outbox_events` gains `seq` (per stream) and a global cursor `(txid, position)` for reading
 *   every stream at once: rows are only read once every transaction with a smaller txid has ended.
 * - `webhook_endpoints` (a registry kind), `webhook_deliveries` (one row per endpoint × event, the
 *   durable per-endpoint queue), `webhook_attempts` (every attempt, for operators).
 * - `tenantry_event_appended`: fans an event out to matching enabled endpoints (not to the endpoint
 *   the event is about) and wakes listeners. It is
 *   SECURITY DEFINER because a tenant's change must reach platform-wide endpoints its row-level
 *   security hides.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table event_sequences (
  stream text primary key,
  seq bigint not null
);

alter table outbox_events add column stream text generated always as (coalesce(tenant_id::text, 'platform')) stored;
alter table outbox_events add column seq bigint;
update outbox_events o set seq = n.seq
  from (select id, row_number() over (partition by coalesce(tenant_id::text, 'platform') order by time, id) as seq
        from outbox_events) n
  where o.id = n.id;
insert into event_sequences (stream, seq)
  select coalesce(tenant_id::text, 'platform'), max(seq) from outbox_events group by 1;
alter table outbox_events alter column seq set not null;
alter table outbox_events add column txid xid8 not null default pg_current_xact_id();
alter table outbox_events add column position bigint generated always as identity;
create unique index outbox_events_stream_seq on outbox_events (stream, seq);
create index outbox_events_global on outbox_events (txid, position);

create table webhook_endpoints (
  id uuid primary key,
  tenant_id uuid references tenants (id),
  name text not null,
  slug text not null,
  spec jsonb not null,
  labels jsonb not null default '{}',
  secrets jsonb not null default '[]',
  generation bigint not null default 1,
  lifecycle text not null default 'Active',
  phase text not null default 'Pending',
  observed_generation bigint not null default 0,
  conditions jsonb not null default '[]',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
create unique index webhook_endpoints_slug_live on webhook_endpoints (slug) where deleted_at is null;
create index webhook_endpoints_tenant on webhook_endpoints (tenant_id, id);

create table webhook_deliveries (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid,
  endpoint_id uuid not null references webhook_endpoints (id),
  event_id uuid not null,
  stream text not null,
  seq bigint not null,
  status text not null default 'pending' check (status in ('pending', 'delivered', 'dead')),
  attempts integer not null default 0,
  trigger text not null default 'scheduled' check (trigger in ('scheduled', 'manual')),
  next_attempt_at timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  last_status integer,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (endpoint_id, stream, seq)
);
create index webhook_deliveries_pending on webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_tenant on webhook_deliveries (tenant_id, endpoint_id, status);

create table webhook_attempts (
  id bigint generated always as identity primary key,
  tenant_id uuid,
  delivery_id uuid not null references webhook_deliveries (id),
  endpoint_id uuid not null,
  event_id uuid not null,
  attempt integer not null,
  trigger text not null check (trigger in ('scheduled', 'manual')),
  status_code integer,
  latency_ms integer not null,
  response_excerpt text,
  error text,
  started_at timestamptz not null
);
create index webhook_attempts_delivery on webhook_attempts (tenant_id, delivery_id, id);
create index webhook_attempts_endpoint on webhook_attempts (tenant_id, endpoint_id, id);
create index webhook_attempts_endpoint_only on webhook_attempts (endpoint_id, id);

create function tenantry_event_appended(p_event uuid, p_tenant uuid, p_type text, p_subject text, p_seq bigint)
returns integer language plpgsql security definer set search_path = public, pg_temp as $$
declare n integer;
begin
  insert into webhook_deliveries (tenant_id, endpoint_id, event_id, stream, seq)
  select e.tenant_id, e.id, p_event, coalesce(p_tenant::text, 'platform'), p_seq
  from webhook_endpoints e
  where e.deleted_at is null
    and coalesce((e.spec ->> 'enabled')::boolean, true)
    and (e.tenant_id is null or e.tenant_id = p_tenant)
    and (not (e.spec ? 'eventTypes') or e.spec -> 'eventTypes' ? p_type)
    -- An endpoint is not sent the events about itself (its own creation, rotation, disabling).
    and p_subject <> 'webhookendpoints/' || e.id::text;
  get diagnostics n = row_count;
  perform pg_notify('tenantry_events', coalesce(p_tenant::text, 'platform'));
  if n > 0 then perform pg_notify('tenantry_webhooks', ''); end if;
  return n;
end $$;
revoke all on function tenantry_event_appended(uuid, uuid, text, text, bigint) from public;
grant execute on function tenantry_event_appended(uuid, uuid, text, text, bigint) to tenantry_app;
`.execute(db);

  for (const table of ['webhook_endpoints', 'webhook_deliveries', 'webhook_attempts']) {
    await sql`
      alter table ${sql.table(table)} enable row level security;
      create policy tenant_isolation on ${sql.table(table)}
        using (tenantry_is_platform() or tenant_id = tenantry_current_tenant())
        with check (tenantry_is_platform() or tenant_id = tenantry_current_tenant());
      grant select, insert, update on ${sql.table(table)} to tenantry_app;
    `.execute(db);
  }
  await sql`
alter table event_sequences enable row level security;
create policy tenant_isolation on event_sequences
  using (tenantry_is_platform() or stream = tenantry_current_tenant()::text)
  with check (tenantry_is_platform() or stream = tenantry_current_tenant()::text);
grant select, insert, update on event_sequences to tenantry_app;
`.execute(db);
}
