import { randomUUID } from 'node:crypto';
import { type RawBuilder, sql } from 'kysely';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { ProviderError } from '../providers/provider.js';
import type { AgentOp, AgentOpInput, AgentOpOutput } from './agent-ops.js';

/** A command as its agent pulls it. */
export interface AgentCommand {
  id: string;
  op: AgentOp;
  input: unknown;
  attempts: number;
}

/** How a command ended, as the agent reports it. */
export type CommandOutcome =
  | { ok: true; output: unknown }
  | { ok: false; error: { message: string; reason: string; retryable: boolean } };

interface CommandRow {
  id: string;
  state: 'Pending' | 'Running' | 'Succeeded' | 'Failed';
  result: unknown;
  error: { message: string; reason: string; retryable: boolean } | null;
}

/**
 * The cell whose agent holds `tenantId`'s data plane, or null when the control plane does (no agent
 * joined that cell). A revoked agent still holds it: its work waits for the next agent, the control
 * plane does not take it over.
 */
export async function agentCellOfTenant(trx: Trx, tenantId: string): Promise<string | null> {
  const r = await sql<{ cell_id: string }>`
    select a.cell_id from tenants t join cell_agents a on a.cell_id = t.cell_id
    where t.id = ${tenantId}`.execute(trx);
  return r.rows[0]?.cell_id ?? null;
}

/**
 * Asks the agent of `cellId` to run `op` and waits (at most `waitMs`) for its result. The same `key`
 * finds the same command, so a workflow step that runs again does not ask twice; a command that
 * failed is asked again (its attempts counted). No result in time: a retryable `AgentPending`
 * (the step is retried later and finds its command); a failure: the agent's own, as it said.
 *
 * Concurrency contract: `insert … on conflict (cell_id, key) do nothing`, then a conditional update
 * `state = 'Failed' → 'Pending'`; two racing callers share one command.
 */
export async function runOnAgent<O extends AgentOp>(
  db: Db,
  req: { cellId: string; key: string; op: O; input: AgentOpInput<O>; waitMs?: number; signal?: AbortSignal },
): Promise<AgentOpOutput<O>> {
  const row = await asPlatform(db, async (trx) => {
    await sql`
      insert into cell_agent_commands (id, cell_id, key, op, input)
      values (${randomUUID()}, ${req.cellId}, ${req.key}, ${req.op}, ${JSON.stringify(req.input)})
      on conflict (cell_id, key) do nothing`.execute(trx);
    await sql`
      update cell_agent_commands set state = 'Pending', attempts = attempts + 1, error = null,
        claimed_at = null, completed_at = null
      where cell_id = ${req.cellId} and key = ${req.key} and state = 'Failed'`.execute(trx);
    // Wakes the agent's waiting command request (at commit) instead of its next poll.
    await sql`select pg_notify('tenantry_agent_commands', ${req.cellId})`.execute(trx);
    const r = await sql<{ id: string }>`
      select id from cell_agent_commands where cell_id = ${req.cellId} and key = ${req.key}`.execute(trx);
    return r.rows[0]!;
  });
  const deadline = Date.now() + (req.waitMs ?? 15_000);
  for (;;) {
    const r = await asPlatform(db, async (trx) => {
      const r = await sql<CommandRow>`
        select id, state, result, error from cell_agent_commands where id = ${row.id}`.execute(trx);
      // Read once done: a credential one side sealed for the other goes from the row.
      if (r.rows[0]?.state === 'Succeeded' || r.rows[0]?.state === 'Failed')
        await clearSealed(trx, sql`id = ${row.id}`);
      return r;
    });
    const c = r.rows[0];
    if (c?.state === 'Succeeded') return c.result as AgentOpOutput<O>;
    if (c?.state === 'Failed') {
      const e = c.error ?? {
        message: 'the agent failed the command',
        reason: 'AgentFailed',
        retryable: true,
      };
      throw new ProviderError(`cell agent: ${e.message}`, e.reason, e.retryable);
    }
    if (Date.now() > deadline || req.signal?.aborted)
      throw new ProviderError(
        `the cell's agent has not done ${req.op} yet (command ${row.id}, ${c?.state ?? 'gone'}); the data plane is the agent's to touch`,
        'AgentPending',
        true,
      );
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * The open commands of a cell for its agent: Pending ones become Running; Running ones come again
 * (an agent that restarted runs them again: every op is safe to run twice).
 *
 * Concurrency contract: one statement; of two pulls of one cell both may get a Running command, and
 * its first reported result wins (see completeCommand).
 */
export async function pullCommands(trx: Trx, cellId: string, limit = 50): Promise<AgentCommand[]> {
  const r = await sql<AgentCommand>`
    update cell_agent_commands set state = 'Running', claimed_at = coalesce(claimed_at, now())
    where id in (
      select id from cell_agent_commands where cell_id = ${cellId} and state in ('Pending', 'Running')
      order by created_at limit ${limit})
    returning id, op, input, attempts`.execute(trx);
  return r.rows;
}

/** Whether the cell has an open command (the agent's long poll waits for one). */
export async function hasOpenCommands(trx: Trx, cellId: string): Promise<boolean> {
  const r = await sql`
    select 1 from cell_agent_commands where cell_id = ${cellId} and state in ('Pending', 'Running') limit 1`.execute(
    trx,
  );
  return r.rows.length > 0;
}

/**
 * The agent's result of its own cell's command. Concurrency contract: `where state = 'Running'`, so
 * the first result counts and a late duplicate changes nothing (accepted: false).
 */
export async function completeCommand(
  trx: Trx,
  cellId: string,
  id: string,
  attempts: number,
  outcome: CommandOutcome,
): Promise<boolean> {
  const r = await sql`
    update cell_agent_commands set state = ${outcome.ok ? 'Succeeded' : 'Failed'},
      result = ${outcome.ok ? JSON.stringify(outcome.output ?? null) : null}::jsonb,
      error = ${outcome.ok ? null : JSON.stringify(outcome.error)}::jsonb, completed_at = now(),
      input = ${clearedSealed(sql.ref('input'))}
    where id = ${id} and cell_id = ${cellId} and state = 'Running' and attempts = ${attempts}`.execute(trx);
  return Number(r.numAffectedRows ?? 0) > 0;
}

/** `value` (jsonb) with every sealed credential (`"sealed:<JWE>"`, src/tenant-migrations/region-dataplane.ts) cleared. */
const clearedSealed = (value: RawBuilder<unknown> | ReturnType<typeof sql.ref>) =>
  sql`regexp_replace(${value}::text, '"sealed:[^"]+"', '"sealed:cleared"', 'g')::jsonb`;

/**
 * The sealed credentials (a region migration's readers, ciphertext for one agent's key) cleared
 * from the inputs and results of the commands `where` selects, done ones only: the receiving agent
 * has used its input when it reports, the control plane has read a result once it is done; a
 * migration's end clears whatever a crash between the two left (src/tenant-migrations).
 */
export async function clearSealed(trx: Trx, where: RawBuilder<unknown>): Promise<void> {
  await sql`
    update cell_agent_commands set input = ${clearedSealed(sql.ref('input'))},
      result = ${clearedSealed(sql.ref('result'))}
    where (${where}) and state in ('Succeeded', 'Failed')
      and (input::text like '%"sealed:ey%' or result::text like '%"sealed:ey%')`.execute(trx);
}

/**
 * Of `cellIds`, the slugs of those held by an agent of another process (not the embedded one):
 * their data plane is not this process's, so work that would reach into it directly is refused.
 */
export async function remoteAgentCells(
  trx: Trx,
  cellIds: readonly (string | null | undefined)[],
): Promise<string[]> {
  const ids = cellIds.filter((x): x is string => typeof x === 'string');
  if (ids.length === 0) return [];
  const r = await sql<{ slug: string }>`
    select c.slug from cell_agents a join cells c on c.id = a.cell_id
    where a.cell_id = any(${ids}::uuid[]) and not a.embedded order by c.slug`.execute(trx);
  return r.rows.map((x) => x.slug);
}

/** What a workflow's commands (keys `<workflowId>:…`) still hold sealed, cleared: at the end of a region migration or its rollback. */
export const clearSealedOf = (trx: Trx, workflowId: string) =>
  clearSealed(trx, sql`starts_with(key, ${`${workflowId}:`})`);
