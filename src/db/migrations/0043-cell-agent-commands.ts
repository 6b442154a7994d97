import { type Kysely, sql } from 'kysely';

/**
 * Commands for cell agents (issue 22): data-plane work that a workflow of the control plane needs
 * done in a cell held by an agent (a purge's deletes, checks that they are gone), which the control
 * plane may not do itself. The agent pulls its cell's open commands, runs them on its own providers
 * and reports the result; the workflow step waits for that result.
 *
 * - `key` makes a request idempotent: a step that runs twice finds its command (unique per cell).
 * - state: Pending → Running (pulled) → Succeeded | Failed; a step run again after a retryable
 *   failure puts a Failed command back to Pending (attempts + 1).
 * Platform objects: only the platform scope reads or writes them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table cell_agent_commands (
  id uuid primary key,
  cell_id uuid not null references cells (id),
  key text not null,
  op text not null,
  input jsonb not null,
  state text not null default 'Pending' check (state in ('Pending', 'Running', 'Succeeded', 'Failed')),
  attempts integer not null default 1,
  result jsonb,
  error jsonb,
  created_at timestamptz not null default now(),
  claimed_at timestamptz,
  completed_at timestamptz,
  unique (cell_id, key)
);
create index cell_agent_commands_open on cell_agent_commands (cell_id, created_at)
  where state in ('Pending', 'Running');
alter table cell_agent_commands enable row level security;
create policy platform_only on cell_agent_commands
  using (tenantry_is_platform()) with check (tenantry_is_platform());
grant select, insert, update, delete on cell_agent_commands to tenantry_app;
`.execute(db);
}
