import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import pino from 'pino';
import { defaultDataplaneUrl, type ProviderSet } from '../../src/controller/providers.js';
import { createDb, type Db } from '../../src/db/database.js';
import type { Clock } from '../../src/domain/clock.js';
import { workflowTypes } from '../../src/tenant-migrations/migration-workflows.js';
import type { WorkflowRegistry } from '../../src/workflows/workflow.js';
import { WorkflowEngine, type WorkflowEngineOptions } from '../../src/workflows/workflow-engine.js';
import { until } from './controller.js';
import type { TestDatabase } from './test-database.js';

/** Short leases, quick backoff: what workflow tests want unless they say otherwise. */
export const FAST_WORKFLOWS: WorkflowEngineOptions['config'] = {
  workers: 8,
  leaseMs: 1_000,
  backoffBaseMs: 20,
  backoffCapMs: 200,
  maxAttempts: 3,
  pollIntervalMs: 50,
  stepTimeoutMs: 20_000,
};

/** A workflow engine over the test database with its own pool (as another process would have). */
export function startWorkflowEngine(
  t: TestDatabase,
  opts: {
    providers?: ProviderSet;
    registry?: WorkflowRegistry;
    config?: Partial<WorkflowEngineOptions['config']>;
    workerId?: string;
    /** The clock retention is judged by (default: the system's). */
    clock?: Clock;
    dataplaneUrl?: string;
  } = {},
): { engine: WorkflowEngine; db: Db; stop(): Promise<void> } {
  const db = createDb(t.appUrl, 5, { platformUrl: t.platformUrl });
  const engine = new WorkflowEngine({
    db,
    registry:
      opts.registry ??
      workflowTypes(db, opts.providers, opts.dataplaneUrl ?? defaultDataplaneUrl(t.ownerUrl), opts.clock),
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    config: { ...FAST_WORKFLOWS, ...opts.config },
    ...(opts.workerId ? { workerId: opts.workerId } : {}),
  });
  engine.start();
  return {
    engine,
    db,
    async stop() {
      await engine.stop();
      await db.destroy();
    },
  };
}

export interface WorkflowSeen {
  id: string;
  state: string;
  error: string | null;
}

/** Waits until workflow `id` has ended (Succeeded, Failed or Cancelled), as seen by the owner. */
export function finished(t: TestDatabase, id: string, timeoutMs = 30_000): Promise<WorkflowSeen> {
  return until(
    `workflow ${id} to end`,
    async () => {
      const r = await t.owner.query<WorkflowSeen>('select id, state, error from workflows where id = $1', [
        id,
      ]);
      const w = r.rows[0];
      return w && ['Succeeded', 'Failed', 'Cancelled'].includes(w.state) ? w : undefined;
    },
    timeoutMs,
  );
}

/**
 * Waits until workflow `id` has ended, run by an engine of this process started for it with
 * `engine` (a dead engine's lease runs out first) and stopped afterwards.
 */
export async function finishedOnEngine(
  t: TestDatabase,
  id: string,
  engine: Parameters<typeof startWorkflowEngine>[1],
  timeoutMs?: number,
): Promise<WorkflowSeen> {
  const e = startWorkflowEngine(t, engine);
  try {
    return await finished(t, id, timeoutMs);
  } finally {
    await e.stop();
  }
}

/** The steps a workflow checkpointed, in order. */
export async function stepsOf(
  t: TestDatabase,
  id: string,
): Promise<{ name: string; state: string; attempts: number }[]> {
  const r = await t.owner.query(
    'select name, state, attempts from workflow_steps where workflow_id = $1 order by position',
    [id],
  );
  return r.rows;
}

export { logged, stepRuns } from '../fixtures/logged-steps.js';

/**
 * Runs the open workflows to their end (lifecycle types, no providers: their steps touch only the
 * database), as the engine of a running server would, so a test may ask for the next transition.
 */
export async function settleWorkflows(t: TestDatabase, timeoutMs = 20_000): Promise<void> {
  const e = startWorkflowEngine(t);
  try {
    await until(
      'open workflows to end',
      async () => {
        const r = await t.owner.query(
          `select count(*)::int as n from workflows where state in ('Pending', 'Running', 'Compensating')`,
        );
        return r.rows[0].n === 0;
      },
      timeoutMs,
    );
  } finally {
    await e.stop();
  }
}

const ROOT = path.resolve(import.meta.dirname, '../..');

/** A workflow engine in a process of its own (test/fixtures/workflow-process.ts), once it is up. */
export function spawnEngine(env: Record<string, string>): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/workflow-process.ts'], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    child.stdout?.once('data', () => resolve(child));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`engine process exited early (${code})`)));
  });
}

/** The signal a spawned process ended by (null: it exited). */
export const exited = (child: ChildProcess) =>
  new Promise<NodeJS.Signals | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.signalCode);
    else child.once('exit', (_code, signal) => resolve(signal));
  });
