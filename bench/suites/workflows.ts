/**
 * 10. Lifecycle workflows (issue 18): 1,000 tenants, each with a PostgreSQL database of its own
 * (pool isolation on the data plane: a real login role), suspended and then resumed by the
 * workflow engine on the real provider (NOLOGIN + sessions ended, LOGIN given back) — workflows/s
 * and p50/p99 duration from request to end (goal: all 2,000 done in ≤ 60 s). And the engine's
 * overhead per step: one workflow of no-op steps run by one engine worker against a bare call of
 * the same step function and a raw single-row INSERT on one connection, in the same run (goal:
 * overhead per step ≤ 2× one raw INSERT).
 *   BENCH_WORKFLOW_TENANTS (default 1,000), BENCH_WORKFLOW_STEPS (default 500).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { Controller } from '../../src/controller/controller.js';
import { closeProviders, createProviders, defaultDataplaneUrl } from '../../src/controller/providers.js';
import { asPlatform, createDb, type Db } from '../../src/db/database.js';
import { EventNotifier } from '../../src/events/event-notifier.js';
import { lifecycleWorkflowTypes } from '../../src/workflows/lifecycle-workflows.js';
import { startWorkflow } from '../../src/workflows/start-workflow.js';
import type { WorkflowDefinition } from '../../src/workflows/workflow.js';
import { WorkflowEngine, type WorkflowEngineOptions } from '../../src/workflows/workflow-engine.js';
import { BENCH_CUSTOMER, manifest } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

const TENANTS = Number(process.env.BENCH_WORKFLOW_TENANTS ?? 1000);
const STEPS = Number(process.env.BENCH_WORKFLOW_STEPS ?? 500);

/** The engine's settings in the benchmarks (workers aside; also the promotion suite's). */
export const ENGINE_CONFIG: WorkflowEngineOptions['config'] = {
  workers: 1,
  leaseMs: 30_000,
  backoffBaseMs: 200,
  backoffCapMs: 2_000,
  maxAttempts: 8,
  // The server's default poll (TENANTRY_POLL_MS); NOTIFY wakes the engine sooner.
  pollIntervalMs: 500,
  stepTimeoutMs: 60_000,
};

export async function workflowBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { ownerUrl, appUrl } = await server.createDatabase('bench_workflows');
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-wf-'));
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dataDir });
  const db = createDb(appUrl, settings.connections + 6);
  const owner = new pg.Pool({ connectionString: ownerUrl, max: 2 });
  const registry = createRegistry(db, config);
  const ctx = systemContext('bench');
  const providers = createProviders({ config, db, dataplaneUrl: defaultDataplaneUrl(ownerUrl) });
  const engineConfig = { ...ENGINE_CONFIG, workers: settings.connections };
  try {
    // Setup (not timed): the tenants and their databases, reconciled to Ready.
    await registry.apply(ctx, [BENCH_CUSTOMER]);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: settings.connections }, async () => {
        for (let i = next; i < TENANTS; i = next) {
          next += 10;
          const docs: unknown[] = [];
          for (let j = i; j < Math.min(i + 10, TENANTS); j++) {
            const tenant = `bench-eu-dev-w${j}`;
            docs.push(
              manifest('Tenant', undefined, {
                customer: 'bench',
                region: 'eu',
                environmentType: 'dev',
                qualifier: `w${j}`,
              }),
              manifest('IntegrationResource', undefined, {
                scope: { tenant },
                type: 'database',
                database: { isolation: 'pool' },
              }),
            );
          }
          await registry.apply(ctx, docs);
        }
      }),
    );
    const controller = new Controller({
      db,
      providers,
      logger: pino({ level: 'warn' }),
      config: { ...config.controller, workers: settings.connections, pollIntervalMs: 20 },
    });
    controller.start();
    for (;;) {
      const r = await owner.query(
        `select count(*)::int as n from integration_resources where phase <> 'Ready'`,
      );
      if (r.rows[0].n === 0) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    await controller.stop();
    console.log(
      `  ${TENANTS} tenants with a database each Ready in ${((performance.now() - t0) / 1000).toFixed(0)}s`,
    );

    // Timed: suspend every tenant, then resume every tenant, through the lifecycle workflows.
    const engine = new WorkflowEngine({
      db,
      registry: lifecycleWorkflowTypes(db, providers),
      logger: pino({ level: 'warn' }),
      config: engineConfig,
    });
    engine.start();
    // As in the server (src/app.ts): a started workflow wakes the engine through LISTEN/NOTIFY.
    const notifier = new EventNotifier(appUrl, pino({ level: 'warn' }));
    await notifier.start();
    const unsubscribe = notifier.subscribe('tenantry_workflows', () => engine.wake());
    const started = performance.now();
    const phase = async (action: 'suspend' | 'resume') => {
      let i = 0;
      await Promise.all(
        Array.from({ length: settings.connections }, async () => {
          while (i < TENANTS) {
            const n = i++;
            await registry.transition(ctx, `bench-eu-dev-w${n}`, action);
          }
        }),
      );
      for (;;) {
        const r = await owner.query(
          `select count(*) filter (where state = 'Succeeded')::int as ok,
                  count(*) filter (where state in ('Failed', 'Cancelled', 'Waiting'))::int as bad
           from workflows where type = $1`,
          [`lifecycle.${action}`],
        );
        if (r.rows[0].bad > 0) throw new Error(`${r.rows[0].bad} ${action} workflows did not succeed`);
        if (r.rows[0].ok === TENANTS) break;
        await new Promise((res) => setTimeout(res, 50));
      }
    };
    await phase('suspend');
    const suspended = performance.now();
    await phase('resume');
    const seconds = (performance.now() - started) / 1000;
    unsubscribe();
    await notifier.stop();
    await engine.stop();
    const d = await owner.query<{ p50: number; p99: number }>(
      `select percentile_cont(0.5) within group (order by ms) as p50, percentile_cont(0.99) within group (order by ms) as p99
       from (select extract(epoch from finished_at - created_at) * 1000 as ms from workflows) x`,
    );
    const lifecycle: Measurement = {
      label: `${TENANTS} suspend + ${TENANTS} resume workflows (${seconds.toFixed(1)} s)`,
      value: (2 * TENANTS) / seconds,
      unit: 'workflows/s',
      latencyMs: { p50: Number(d.rows[0]!.p50), p99: Number(d.rows[0]!.p99) },
    };
    console.log(
      `  suspend ${((suspended - started) / 1000).toFixed(1)}s + resume ${((performance.now() - suspended) / 1000).toFixed(1)}s: ` +
        `${lifecycle.value.toFixed(0)} workflows/s, p50 ${lifecycle.latencyMs!.p50.toFixed(0)} ms, p99 ${lifecycle.latencyMs!.p99.toFixed(0)} ms`,
    );

    const tenantId = (await owner.query(`select id from tenants where slug = 'bench-eu-dev-w0'`)).rows[0]
      .id as string;
    const { engineSteps, bare, raw, overheadMs } = await stepOverhead(db, appUrl, owner, tenantId);
    const overhead: Measurement = {
      label: `engine overhead per step: ${overheadMs.toFixed(2)} ms vs raw INSERT ${(1000 / raw.value).toFixed(2)} ms`,
      value: 1000 / overheadMs,
      unit: 'steps/s (overhead only)',
    };
    console.log(`  ${overhead.label}; bare call ${(1000 / bare.value).toFixed(4)} ms`);
    return [
      row(`Suspend + resume ${TENANTS} tenants on real providers vs raw INSERT`, lifecycle, raw, {
        valueAtLeast: (2 * TENANTS) / 60,
      }),
      row('Workflow engine overhead per step vs raw single-row INSERT (1 connection)', overhead, raw, {
        ratioAtLeast: 0.5,
      }),
      row('Workflow step through the engine vs the bare step function', engineSteps, bare, null),
    ];
  } finally {
    await closeProviders(providers);
    await db.destroy();
    await owner.end();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * The engine's overhead per step: one workflow of `steps` no-op steps run by one engine worker (as the
 * server runs it: its own session, prepared checkpoints), against the same step function called bare
 * and raw single-row INSERTs on one connection. Also run by bench/profile-workflow.ts.
 */
export async function stepOverhead(
  db: Db,
  appUrl: string,
  owner: pg.Pool,
  tenantId: string,
  steps = STEPS,
  probe?: (phase: 'engine' | 'raw', at: 'start' | 'end') => Promise<void>,
): Promise<{ engineSteps: Measurement; bare: Measurement; raw: Measurement; overheadMs: number }> {
  const ctx = systemContext('bench');
  const noop = async () => ({ ok: true });
  // The last step tells this process it ran (no statement of the bench's own while the steps run).
  let lastRan = () => {};
  let ran = Promise.resolve();
  const last = async () => {
    lastRan();
    return { ok: true };
  };
  const def = (type: string, n: number): WorkflowDefinition<unknown> => ({
    type,
    steps: Array.from({ length: n }, (_, k) => ({ name: `step-${k}`, run: k < n - 1 ? noop : last })),
  });
  const stepEngine = new WorkflowEngine({
    db,
    registry: new Map(
      [def('bench.warm', 10), def('bench.noop', steps)].map((d) => [d.type, d as WorkflowDefinition<never>]),
    ),
    logger: pino({ level: 'warn' }),
    config: ENGINE_CONFIG,
  });
  /** Starts a workflow of `type` and waits for its end; the time from its start to its end, ms. */
  const run = async (type: string) => {
    const id = randomUUID();
    ran = new Promise<void>((res) => {
      lastRan = res;
    });
    await asPlatform(db, (trx) =>
      startWorkflow(trx, {
        id,
        tenantId,
        type,
        input: {},
        actor: ctx.actor,
        requestId: ctx.requestId,
        correlationId: ctx.correlationId,
      }),
    );
    const t0 = performance.now();
    // Waits without a statement or a timer of its own while the steps run (the product has no
    // poller), then for the workflow's end to be committed.
    await ran;
    for (;;) {
      const r = await asPlatform(db, (trx) =>
        sql<{ state: string }>`select state from workflows where id = ${id}`.execute(trx),
      );
      if (r.rows[0]?.state === 'Succeeded') return performance.now() - t0;
      await new Promise((res) => setTimeout(res, 1));
    }
  };
  // A running engine (its connections made, its statements prepared), woken by the start's NOTIFY
  // and listening as in the server (src/app.ts), where every step's event is also a NOTIFY.
  const notifier = new EventNotifier(appUrl, pino({ level: 'warn' }));
  await notifier.start();
  const unsubscribe = notifier.subscribe('tenantry_workflows', () => stepEngine.wake());
  stepEngine.start();
  let stepMs: number;
  try {
    await run('bench.warm');
    await probe?.('engine', 'start');
    stepMs = await run('bench.noop');
    await probe?.('engine', 'end');
  } finally {
    unsubscribe();
    await notifier.stop();
    await stepEngine.stop();
  }
  const stepSeconds = stepMs / 1000;
  const engineSteps: Measurement = {
    label: `${steps} no-op steps through the engine (1 worker)`,
    value: steps / stepSeconds,
    unit: 'steps/s',
  };
  const b0 = performance.now();
  for (let k = 0; k < steps * 100; k++) await noop();
  const bare: Measurement = {
    label: 'the same step function called bare',
    value: (steps * 100) / ((performance.now() - b0) / 1000),
    unit: 'calls/s',
  };
  await rawInserts(owner, 10); // warm, as the engine was
  await probe?.('raw', 'start');
  const raw = await rawInserts(owner, steps);
  await probe?.('raw', 'end');
  // Overhead per step = engine time per step − bare call time; as a rate, so the ratio to the raw
  // INSERT rate is ≥ 0.5 exactly when the overhead is ≤ 2 raw INSERTs.
  const overheadMs = 1000 / engineSteps.value - 1000 / bare.value;
  return { engineSteps, bare, raw, overheadMs };
}

/** Raw single-row INSERTs (autocommit), one after another on one connection. */
async function rawInserts(owner: pg.Pool, count: number): Promise<Measurement> {
  await owner.query(
    'create table if not exists bench_workflow_raw (id bigint generated always as identity primary key, data jsonb not null)',
  );
  const t0 = performance.now();
  for (let k = 0; k < count; k++)
    await owner.query('insert into bench_workflow_raw (data) values ($1)', ['{"n":1}']);
  return {
    label: 'raw single-row INSERT (1 connection)',
    value: count / ((performance.now() - t0) / 1000),
    unit: 'rows/s',
  };
}
