import { type Kysely, sql } from 'kysely';

/**
 * Cell agents (issue 22): the data plane of a cell pulls its desired state and reports status.
 *
 * - cell_join_tokens: one-time, short-lived join tokens, kept as their SHA-256 only. A token is
 *   spent by setting `used_at` in the statement that checks it is unused and unexpired.
 * - cell_agents: the agent of a cell (one at a time): its session (the `sessions` row its
 *   credential names, revoked with it), its heartbeat lease and its connection state, and the
 *   desired-state feed's generation and content hash. A cell with a row here is handed to its
 *   agent: the control plane calls no provider for it.
 * Platform objects: only the platform scope reads or writes them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table cell_join_tokens (
  id uuid primary key,
  cell_id uuid not null references cells (id),
  token_hash text not null unique,
  created_by text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz,
  -- Minted by the process itself for its in-process agent (src/agent/embedded-agents.ts).
  embedded boolean not null default false,
  check (expires_at > created_at)
);
create index cell_join_tokens_cell on cell_join_tokens (cell_id, created_at);

create table cell_agents (
  cell_id uuid primary key references cells (id),
  session_id text not null,
  name text not null,
  embedded boolean not null default false,
  joined_at timestamptz not null default now(),
  credential_expires_at timestamptz not null,
  heartbeat_interval_ms integer not null check (heartbeat_interval_ms > 0),
  last_heartbeat_at timestamptz not null default now(),
  connection text not null default 'Connected' check (connection in ('Connected', 'Unknown')),
  connection_since timestamptz not null default now(),
  feed_generation bigint not null default 0,
  feed_hash text not null default '',
  revoked_at timestamptz,
  revoked_by text
);

alter table cell_join_tokens enable row level security;
create policy platform_only on cell_join_tokens
  using (tenantry_is_platform()) with check (tenantry_is_platform());
alter table cell_agents enable row level security;
create policy platform_only on cell_agents
  using (tenantry_is_platform()) with check (tenantry_is_platform());
grant select, insert, update, delete on cell_join_tokens, cell_agents to tenantry_app;
`.execute(db);
}
