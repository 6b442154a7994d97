import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { runOnAgent } from '../agent/agent-commands.js';
import type { AgentOp } from '../agent/agent-ops.js';
import { asPlatform, type Db } from '../db/database.js';
import { ProviderError } from '../providers/provider.js';
import type { Executor } from './dataplane-steps.js';
import {
  ISOLATION_DATAPLANE_STEPS,
  type IsolationDataPlane,
  type IsolationStep,
} from './isolation-dataplane.js';

/** The data-plane steps of a tenancy-mode migration, wherever they run. */
export type IsolationExecutor = Executor<IsolationDataPlane, IsolationStep>;

/**
 * Asked afresh each time (a new command), never found again: reads whose answer changes over time,
 * and a region migration's hand-over of a reader (sealed for the receiving agent's key of the
 * moment, cleared from the rows once used: a step run again hands over a new one).
 */
const FRESH: ReadonlySet<string> = new Set([
  'openReader',
  'blobReader',
  'subscribe',
  'pull',
  'pullBlobs',
  'identity',
  'inspect',
  'waitSynced',
  'syncing',
  'walPosition',
  'measure',
  'readerLacks',
  'checks',
  'observeTopics',
  'observeAccess',
  'observeArrived',
]);

/** The steps run here, on a data plane this process reaches (a cell no remote agent holds). */
export function localExecutor<T extends object, S extends keyof T>(
  dp: T,
  steps: readonly S[],
): Executor<T, S> {
  return Object.fromEntries(
    steps.map((s) => [s, (input: never) => (dp[s] as (i: never) => Promise<unknown>).call(dp, input)]),
  ) as Executor<T, S>;
}

export const localIsolationExecutor = (dp: IsolationDataPlane): IsolationExecutor =>
  localExecutor(dp, ISOLATION_DATAPLANE_STEPS);

/**
 * The steps run by the agent of `cellId` as its commands (op `<prefix>.<step>`): the control
 * plane connects to nothing of that data plane, it waits for the agent's reported result (up to the
 * step's own timeout, `signal`). The command's key is the workflow step's (`key`) and the data-plane
 * step's name, so a workflow step that runs again (after its worker died) finds the command it
 * asked for and its result instead of asking twice; reads (FRESH) are asked anew. A step that asks
 * one data-plane step twice (once per resource) gives each its own `key`.
 */
export function agentExecutor<T, S extends keyof T & string>(
  steps: readonly S[],
  prefix: 'migration' | 'region',
  db: Db,
  cellId: string,
  key: string,
  signal: AbortSignal,
): Executor<T, S> {
  return Object.fromEntries(
    steps.map((s) => [
      s,
      (input: unknown) =>
        runOnAgent(db, {
          cellId,
          key: FRESH.has(s) ? `${key}:${s}:${randomUUID()}` : `${key}:${s}`,
          op: `${prefix}.${s}` as AgentOp,
          input: input as never,
          waitMs: 24 * 3600_000,
          signal,
        }),
    ]),
  ) as Executor<T, S>;
}

export const agentIsolationExecutor = (db: Db, cellId: string, key: string, signal: AbortSignal) =>
  agentExecutor<IsolationDataPlane, IsolationStep>(
    ISOLATION_DATAPLANE_STEPS,
    'migration',
    db,
    cellId,
    key,
    signal,
  );

/** The cells of `cellIds` (in that order) held by an agent of another process, with their slugs. */
export async function remoteAgentCellsOf(
  db: Db,
  cellIds: readonly string[],
): Promise<({ id: string; slug: string } | null)[]> {
  const r = await asPlatform(db, (trx) =>
    sql<{ id: string; slug: string }>`
      select c.id, c.slug from cell_agents a join cells c on c.id = a.cell_id
      where a.cell_id = any(${cellIds as string[]}::uuid[]) and not a.embedded`.execute(trx),
  );
  return cellIds.map((id) => r.rows.find((x) => x.id === id) ?? null);
}

/**
 * Which agent runs a tenancy-mode migration between `source` and `target` cells: none when no
 * remote agent holds either (null); the source cell's agent when both are held by agents of one
 * data plane (each agent says which data plane it runs on). Anything else would need the control
 * plane, or one agent, to reach into a data plane it does not hold: refused (not retryable).
 */
export async function migrationAgentCell(
  db: Db,
  source: string,
  target: string,
  signal: AbortSignal,
  key: string,
): Promise<string | null> {
  const [s, t] = await remoteAgentCellsOf(db, [source, target]);
  if (!s && !t) return null;
  if (!s || !t)
    throw new ProviderError(
      `cell ${(s ?? t)!.slug} is run by its own agent and cell ${s ? 'of the target' : 'of the source'} is not: the control plane does not reach into an agent's data plane`,
      'AgentCell',
      false,
    );
  if (s.id === t.id) return s.id;
  const [a, b] = await Promise.all(
    [s, t].map((c) => agentIsolationExecutor(db, c.id, `${key}:${c.id}`, signal).identity({})),
  );
  if (a!.dataplane !== b!.dataplane)
    throw new ProviderError(
      `the agents of cells ${s.slug} and ${t.slug} run different data planes (${a!.dataplane}, ${b!.dataplane}); moving a tenant between data planes is not built`,
      'AgentDataPlanes',
      false,
    );
  return s.id;
}
