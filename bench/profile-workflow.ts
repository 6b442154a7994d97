/**
 * Where the time of one workflow step goes (issue 24, the workflows suite's overhead per step), not a
 * benchmark: the suite's step run (bench/suites/workflows.ts `stepOverhead`, one worker, no-op steps)
 * on a PostgreSQL with pg_stat_statements (every statement, nested ones too), printing per step: wall
 * time beside a raw INSERT's, statements and commits, CPU of this process and of PostgreSQL (/proc,
 * Linux), WAL bytes and records, the statements by execution time, and HOT updates by table.
 *   npx tsx bench/profile-workflow.ts            (BENCH_WORKFLOW_STEPS, default 2,000; ROUNDS, default 3)
 *   CPUPROF=1 npx tsx bench/profile-workflow.ts  also this process's CPU by area while the steps run
 *                                                (bench/lib/cpu-profile-summary.ts), profiles in /tmp/tenantry-profile
 */
import fs from 'node:fs';
import inspector from 'node:inspector/promises';
import path from 'node:path';
import pg from 'pg';
import { createRegistry } from '../src/app.js';
import { loadConfig } from '../src/config/config.js';
import { systemContext } from '../src/context/request-context.js';
import { createDb } from '../src/db/database.js';
import { summariseCpuProfile } from './lib/cpu-profile-summary.js';
import { BENCH_CUSTOMER, benchTenant } from './lib/manifests.js';
import { startBenchPostgres } from './lib/postgres.js';
import { postgresTicks, TICKS_PER_SECOND } from './lib/process-cpu.js';
import { stepOverhead } from './suites/workflows.js';

const STEPS = Number(process.env.BENCH_WORKFLOW_STEPS ?? 2000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const PROFILE = Boolean(process.env.CPUPROF);
const OUT = '/tmp/tenantry-profile';
fs.mkdirSync(OUT, { recursive: true });
const session = new inspector.Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: Number(process.env.CPUPROF_US ?? 1000) });

const server = await startBenchPostgres({
  shared_preload_libraries: 'pg_stat_statements',
  'pg_stat_statements.track': 'all',
  'pg_stat_statements.track_planning': 'on',
});
const pgTicks = postgresTicks(path.join(server.dir, 'pg'));

const { ownerUrl, appUrl } = await server.createDatabase('profile_workflows');
const owner = new pg.Pool({ connectionString: ownerUrl, max: 2 });
const db = createDb(appUrl, 4);
try {
  const registry = createRegistry(db, loadConfig({}, { TENANTRY_DATA_DIR: server.dir }));
  await registry.apply(systemContext('bench'), [BENCH_CUSTOMER, benchTenant('p0')]);
  const tenantId = (await owner.query(`select id from tenants where slug = 'bench-eu-dev-p0'`)).rows[0]
    .id as string;
  await owner.query('create extension if not exists pg_stat_statements');
  await stepOverhead(db, appUrl, owner, tenantId, 200); // warm
  for (let round = 1; round <= ROUNDS; round++) {
    let t0 = { node: process.cpuUsage(), pg: 0, commits: 0, hot: new Map<string, [number, number]>() };
    const probe = async (phase: 'engine' | 'raw', at: 'start' | 'end') => {
      if (at === 'start') {
        t0.hot = await hotUpdates(owner);
        await owner.query('select pg_stat_statements_reset(), pg_stat_reset_shared($1)', ['wal']);
        t0 = { ...t0, commits: await commits(owner), pg: pgTicks(), node: process.cpuUsage() };
        if (PROFILE && phase === 'engine') await session.post('Profiler.start');
        return;
      }
      const node = process.cpuUsage(t0.node);
      const pgMs = ((pgTicks() - t0.pg) * 1000) / TICKS_PER_SECOND;
      // Backends flush their statistics (commits, WAL) within a second of their last transaction.
      const hot = await hotUpdates(owner);
      const xacts = (await commits(owner)) - t0.commits;
      const wal = (await owner.query('select wal_records, wal_bytes, wal_fpi from pg_stat_wal')).rows[0];
      console.log(`--- ${phase}: per step (the probe's own statements included)`);
      console.log(
        `commits ${(xacts / STEPS).toFixed(2)}, CPU: this process ${((node.user + node.system) / 1000 / STEPS).toFixed(3)} ms, ` +
          `PostgreSQL ${(pgMs / STEPS).toFixed(3)} ms; WAL ${(Number(wal.wal_records) / STEPS).toFixed(1)} records, ` +
          `${(Number(wal.wal_bytes) / STEPS).toFixed(0)} B, ${(Number(wal.wal_fpi) / STEPS).toFixed(2)} full-page images`,
      );
      const s = await owner.query<{
        calls: string;
        total_ms: string;
        plan_ms: string;
        toplevel: boolean;
        q: string;
      }>(
        `select calls, total_exec_time total_ms, total_plan_time plan_ms, toplevel,
           left(regexp_replace(query, '\\s+', ' ', 'g'), 140) q
         from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())
         order by total_exec_time + total_plan_time desc limit 16`,
      );
      console.log('per step\texec ms\tplan ms\ttop\tstatement');
      for (const x of s.rows)
        console.log(
          `${(Number(x.calls) / STEPS).toFixed(2)}\t${(Number(x.total_ms) / STEPS).toFixed(4)}\t${(Number(x.plan_ms) / STEPS).toFixed(4)}\t${x.toplevel ? 'y' : 'n'}\t${x.q}`,
        );
      console.log(
        `updates (HOT): ${[...hot]
          .map(([t, [u, h]]) => [t, u - (t0.hot.get(t)?.[0] ?? 0), h - (t0.hot.get(t)?.[1] ?? 0)] as const)
          .filter(([, u]) => u > 0)
          .map(([t, u, h]) => `${t} ${(u / STEPS).toFixed(2)} (${(h / STEPS).toFixed(2)})`)
          .join(', ')}`,
      );
      if (PROFILE && phase === 'engine') {
        const { profile } = await session.post('Profiler.stop');
        const file = path.join(OUT, `workflow-steps-${round}.cpuprofile`);
        fs.writeFileSync(file, JSON.stringify(profile));
        const areas = summariseCpuProfile(file);
        const busy = areas.reduce((a, b) => a + b.ms, 0);
        console.log(`this process's CPU by area (${file}; idle left out):`);
        for (const a of areas)
          console.log(
            `  ${(a.ms / STEPS).toFixed(4)} ms/step  ${((100 * a.ms) / busy).toFixed(1).padStart(5)}%  ${a.area}`,
          );
      }
    };
    const r = await stepOverhead(db, appUrl, owner, tenantId, STEPS, probe);
    const rawMs = 1000 / r.raw.value;
    console.log(
      `=== round ${round}: ${STEPS} steps, ${(1000 / r.engineSteps.value).toFixed(3)} ms per step ` +
        `(overhead ${r.overheadMs.toFixed(3)} ms) vs raw INSERT ${rawMs.toFixed(3)} ms: ${((100 * rawMs) / r.overheadMs).toFixed(1)}%\n`,
    );
  }
} finally {
  session.disconnect();
  await db.destroy();
  await owner.end();
  await server.stop();
}

async function commits(owner: pg.Pool): Promise<number> {
  await owner.query('select pg_stat_clear_snapshot()');
  const r = await owner.query(
    'select xact_commit c from pg_stat_database where datname = current_database()',
  );
  return Number(r.rows[0].c);
}

/** Updates and HOT updates by table (pg_stat_user_tables; flushed by each backend within a second). */
async function hotUpdates(owner: pg.Pool): Promise<Map<string, [number, number]>> {
  await new Promise((r) => setTimeout(r, 1100));
  await owner.query('select pg_stat_clear_snapshot()');
  const r = await owner.query<{ relname: string; u: string; h: string }>(
    'select relname, n_tup_upd u, n_tup_hot_upd h from pg_stat_user_tables',
  );
  return new Map(r.rows.map((x) => [x.relname, [Number(x.u), Number(x.h)]]));
}
