/**
 * Cell agents (issue 22): 50 agents × 200 objects each (blob containers on each agent's own disk),
 * against one control plane in a process of its own (role api, bench/suites/agents-server.ts).
 *  - Time to converge after a change: one object changed in every cell in one transaction (with
 *    the NOTIFY per changed object, naming its tenant, that the change path's events send); from its commit until all 50 agents reported the new
 *    generation observed. Five rounds; the goal is on the slowest (all 50 converged ≤ 2 s).
 *  - Control-plane CPU per agent: the control plane's CPU time over a quiet interval with the 50
 *    agents connected (long polls, heartbeats), per agent, against the same process with none.
 *  - Bytes of a resync with nothing changed (the index request with the held hash, answered 304)
 *    vs. a full fetch (index and every object), on the wire (status line, headers and body).
 *    Goal: ≤ 1%.
 *   BENCH_AGENTS (default 50) and BENCH_AGENT_OBJECTS (default 200) change the size.
 */
import { fork } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { request } from 'undici';
import { CellAgent } from '../../src/agent/cell-agent.js';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { closeProviders, createProviders, type ProviderSet } from '../../src/controller/providers.js';
import { createDb } from '../../src/db/database.js';
import { BENCH_CUSTOMER, manifest } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Row, row } from '../lib/results.js';
import type { AgentsServerReady } from './agents-server.js';

const AGENTS = Number(process.env.BENCH_AGENTS ?? 50);
const OBJECTS = Number(process.env.BENCH_AGENT_OBJECTS ?? 200);
const ROUNDS = 5;
const QUIET_SECONDS = 10;
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'agents-server.ts');
const log = pino({ level: 'silent' });

export async function agentsBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { ownerUrl, appUrl } = await server.createDatabase('bench_agents');
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-agents-'));
  const owner = new pg.Pool({ connectionString: ownerUrl, max: 4 });
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dataDir });
  const db = createDb(appUrl, 4);
  const registry = createRegistry(db, config);
  const ctx = systemContext('bench');
  const cells = Array.from({ length: AGENTS }, (_, i) => `agents-c${i}`);

  // 50 cells, a tenant pinned to each with one blob container; 199 more cloned in SQL.
  await registry.apply(ctx, [
    BENCH_CUSTOMER,
    ...cells.map((c) =>
      manifest('Cell', c, {
        region: 'eu',
        stage: 'nonprod',
        environmentTypes: ['dev'],
        tenancy: 'shared',
        capacity: { tenants: 1 },
      }),
    ),
  ]);
  for (let i = 0; i < AGENTS; i += 10)
    await registry.apply(
      ctx,
      cells.slice(i, i + 10).flatMap((c, j) => [
        manifest('Tenant', undefined, {
          customer: 'bench',
          region: 'eu',
          environmentType: 'dev',
          qualifier: `a${i + j}`,
          cell: c,
        }),
        manifest('IntegrationResource', undefined, {
          scope: { tenant: `bench-eu-dev-a${i + j}` },
          type: 'blob-container',
        }),
      ]),
    );
  const cols = (
    await owner.query<{ column_name: string }>(
      `select column_name from information_schema.columns where table_name = 'integration_resources'
       order by ordinal_position`,
    )
  ).rows.map((r) => r.column_name);
  const select = cols.map((c) =>
    c === 'id'
      ? 'gen_random_uuid()'
      : c === 'slug'
        ? `r.slug || '-' || n`
        : c === 'physical_name'
          ? `r.physical_name || '-' || n`
          : `r.${c}`,
  );
  await owner.query(
    `insert into integration_resources (${cols.join(', ')})
     select ${select.join(', ')} from integration_resources r, generate_series(1, ${OBJECTS - 1}) n`,
  );
  const total = Number((await owner.query('select count(*)::int as n from integration_resources')).rows[0].n);
  console.log(`  ${AGENTS} cells, ${total} objects`);

  const child = fork(CHILD, [ownerUrl, path.join(dataDir, 'cp')], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const cpu = () =>
    new Promise<number>((resolve) => {
      child.once('message', (m) => resolve((m as { micros: number }).micros));
      child.send('cpu');
    });
  const agents: CellAgent[] = [];
  const providerSets: ProviderSet[] = [];
  try {
    const ready = await new Promise<AgentsServerReady>((resolve, reject) => {
      child.once('message', (m) => resolve(m as AgentsServerReady));
      child.once('exit', (code) => reject(new Error(`the control plane exited with ${code}`)));
    });
    // Baseline: the control plane's CPU with no agent connected (once its start-up has settled).
    await sleep(3_000);
    const idle0 = await cpu();
    await sleep(QUIET_SECONDS * 1000);
    const idleMicros = (await cpu()) - idle0;

    const t0 = performance.now();
    for (const [i, cell] of cells.entries()) {
      const res = await fetch(`${ready.url}/v1/cells/${cell}/join-tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ready.token}`, 'content-type': 'application/json' },
        body: '{}',
      });
      if (res.status !== 201) throw new Error(`join token: ${res.status} ${await res.text()}`);
      const dir = path.join(dataDir, `agent-${i}`);
      const providers = createProviders({
        config: loadConfig({}, { TENANTRY_DATA_DIR: dir }),
        db: { secrets: undefined as never },
        dataplaneUrl: undefined,
      });
      providerSets.push(providers);
      const agent = new CellAgent({
        server: ready.url,
        cell,
        joinToken: ((await res.json()) as { token: string }).token,
        stateDir: dir,
        providers,
        logger: log,
        resyncMs: 600_000,
        waitSeconds: 25,
      });
      agents.push(agent);
    }
    await Promise.all(agents.map((a) => a.start()));
    await waitFor(
      owner,
      `select count(*)::int as n from integration_resources where phase = 'Ready' and observed_generation = generation`,
      total,
      600_000,
    );
    const initialS = (performance.now() - t0) / 1000;
    console.log(`  all ${total} objects Ready in ${initialS.toFixed(1)} s`);

    // Control-plane CPU with the agents connected and nothing changing.
    await sleep(2_000);
    const busy0 = await cpu();
    await sleep(QUIET_SECONDS * 1000);
    const busyMicros = (await cpu()) - busy0;

    // A change in every cell, then until all 50 reported it observed.
    const rounds: number[] = [];
    /** Per round, when the last agent had fetched the changed object (the feed's part of the time). */
    const fetched: number[] = [];
    const changeCpu0 = await cpu();
    for (let round = 0; round < ROUNDS; round++) {
      const c = await owner.connect();
      let t = performance.now();
      const pulled = agents.map((a) => a.itemsPulled);
      const got = new Map<number, number>();
      const watch = setInterval(() => {
        for (const [i, a] of agents.entries())
          if (!got.has(i) && a.itemsPulled > pulled[i]!) got.set(i, performance.now() - t);
      }, 5);
      try {
        await c.query('begin');
        // The change path appends an event per changed object, whose NOTIFY names its tenant.
        await c.query(
          `with changed as (
             update integration_resources r set generation = generation + 1
             where r.id in (select distinct on (t.cell_id) r2.id from integration_resources r2
               join tenants t on t.id = r2.tenant_id order by t.cell_id, r2.id)
             returning r.tenant_id)
           select pg_notify('tenantry_events', tenant_id::text) from changed`,
        );
        t = performance.now();
        await c.query('commit');
      } finally {
        c.release();
      }
      await waitFor(
        owner,
        `select count(*)::int as n from integration_resources where observed_generation = generation`,
        total,
        60_000,
        10,
      );
      rounds.push(performance.now() - t);
      clearInterval(watch);
      fetched.push(Math.max(...got.values()));
    }
    const changeCpuMicros = (await cpu()) - changeCpu0;
    rounds.sort((a, b) => a - b);
    console.log(`  converged after a change: ${rounds.map((r) => r.toFixed(0)).join(', ')} ms`);
    console.log(
      `  of which all 50 had fetched the change after: ${fetched.map((r) => r.toFixed(0)).join(', ')} ms`,
    );
    console.log(
      `  control-plane CPU over the ${ROUNDS} change rounds: ${(changeCpuMicros / 1000 / ROUNDS / AGENTS).toFixed(1)} ms per agent per change`,
    );

    // Resync bytes: the first agent's credential and held hash.
    const state = JSON.parse(await fs.readFile(path.join(dataDir, 'agent-0', 'agent-state.json'), 'utf8'));
    const auth = { authorization: `Bearer ${state.credential}` };
    const base = `${ready.url}/v1/agent/${state.cell.id}`;
    const resync = await wire(`${base}/desired-state?wait=0`, {
      headers: { ...auth, 'if-none-match': `"${state.feed.hash}"` },
    });
    if (resync.status !== 304) throw new Error(`resync answered ${resync.status}, not 304`);
    const index = await wire(`${base}/desired-state?wait=0`, { headers: auth });
    const ids = (JSON.parse(index.body) as { items: { id: string }[] }).items.map((x) => x.id);
    let full = index.bytes;
    for (let i = 0; i < ids.length; i += 500) {
      const items = await wire(`${base}/desired-state/items`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ ids: ids.slice(i, i + 500) }),
      });
      full += items.bytes;
    }

    const perAgentMsPerS = busyMicros / 1000 / QUIET_SECONDS / AGENTS;
    return [
      row(
        `All ${AGENTS} agents converged after a change (${AGENTS} × ${OBJECTS} objects)`,
        {
          label: `slowest of ${ROUNDS} rounds`,
          value: rounds.at(-1)! / 1000,
          unit: 's',
          latencyMs: { p50: Math.round(rounds[Math.floor(ROUNDS / 2)]!), p99: Math.round(rounds.at(-1)!) },
        },
        { label: `initial convergence of ${total} objects`, value: initialS, unit: 's' },
        { p99AtMostMs: 2_000 },
        'all 50 converged <= 2 s after a change',
      ),
      row(
        `Control-plane CPU per connected agent (${AGENTS} agents, quiet)`,
        { label: 'CPU per agent', value: perAgentMsPerS, unit: 'ms CPU/s' },
        { label: 'no agent (whole process)', value: idleMicros / 1000 / QUIET_SECONDS, unit: 'ms CPU/s' },
        null,
        `whole process with ${AGENTS} agents: ${(busyMicros / 1000 / QUIET_SECONDS).toFixed(1)} ms CPU/s`,
      ),
      row(
        `Resync with nothing changed vs full fetch (${OBJECTS} objects)`,
        { label: 'resync (304)', value: resync.bytes, unit: 'bytes' },
        { label: 'full fetch', value: full, unit: 'bytes' },
        { ratioAtMost: 0.01 },
      ),
    ];
  } finally {
    await Promise.allSettled(agents.map((a) => a.stop()));
    for (const p of providerSets) await closeProviders(p).catch(() => undefined);
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.send('stop');
      await exited;
    }
    await db.destroy();
    await owner.end();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(owner: pg.Pool, query: string, n: number, timeoutMs: number, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let said = Date.now();
  for (;;) {
    const got = Number((await owner.query(query)).rows[0].n);
    if (got >= n) return;
    if (Date.now() - said > 30_000) {
      said = Date.now();
      console.log(`  … ${got} of ${n}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out: ${got} of ${n} (${query})`);
    await sleep(everyMs);
  }
}

/** A response and its size on the wire: status line, headers and body. */
async function wire(
  url: string,
  opts: { method?: 'GET' | 'POST'; headers: Record<string, string>; body?: string },
): Promise<{ status: number; body: string; bytes: number }> {
  const res = await request(url, { method: opts.method ?? 'GET', headers: opts.headers, body: opts.body });
  const body = await res.body.text();
  let head = `HTTP/1.1 ${res.statusCode} \r\n`.length + 2;
  for (const [k, v] of Object.entries(res.headers))
    for (const x of Array.isArray(v) ? v : [v]) head += `${k}: ${x}\r\n`.length;
  return { status: res.statusCode, body, bytes: head + Buffer.byteLength(body) };
}
