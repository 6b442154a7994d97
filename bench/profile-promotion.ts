/**
 * Where the time of a promotion goes beside the bare updates (issue 21's bench, suite `promotion`),
 * not a benchmark: the suite's 'none' run (BENCH_PROMOTION_TENANTS, default 1,000) on a PostgreSQL
 * with pg_stat_statements, printing for each timed phase (bare updates, promotion): statements and
 * commits per tenant, CPU of this process and of PostgreSQL (/proc, Linux), the statements by calls
 * and time, this process's CPU by area (a V8 CPU profile of the phase, bench/lib/cpu-profile-summary.ts),
 * and for the promotion the statements of each wave (sampled every 20 ms).
 *   npx tsx bench/profile-promotion.ts
 */
import fs from 'node:fs';
import inspector from 'node:inspector/promises';
import path from 'node:path';
import { summariseCpuProfile } from './lib/cpu-profile-summary.js';
import { startBenchPostgres } from './lib/postgres.js';
import { postgresTicks, TICKS_PER_SECOND } from './lib/process-cpu.js';
import { type PhaseProbe, promoteAcross } from './suites/promotion.js';

const TENANTS = Number(process.env.BENCH_PROMOTION_TENANTS ?? 1000);
const OUT = '/tmp/tenantry-profile';
fs.mkdirSync(OUT, { recursive: true });

const server = await startBenchPostgres({
  shared_preload_libraries: 'pg_stat_statements',
  'pg_stat_statements.track': 'top',
});
const pgTicks = postgresTicks(path.join(server.dir, 'pg'));

const session = new inspector.Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 500 });

let started = { t: 0, node: process.cpuUsage(), pg: 0, commits: 0 };
let sampling: Promise<void> | undefined;
let samplingOn = false;
const waveMarks: { what: string; calls: number }[] = [];

const statements = async (owner: Parameters<PhaseProbe>[2]['owner']) =>
  Number(
    (await owner.query<{ c: string }>('select coalesce(sum(calls), 0) c from pg_stat_statements')).rows[0]!.c,
  );
const commits = async (owner: Parameters<PhaseProbe>[2]['owner']) =>
  Number(
    (
      await owner.query<{ c: string }>(
        'select xact_commit c from pg_stat_database where datname = current_database()',
      )
    ).rows[0]!.c,
  );

const probe: PhaseProbe = async (phase, at, { owner, promotionId }) => {
  if (at === 'start') {
    await owner.query('create extension if not exists pg_stat_statements');
    await owner.query('select pg_stat_statements_reset()');
    await owner.query('select pg_stat_clear_snapshot()');
    if (phase === 'promotion') {
      samplingOn = true;
      const seen = new Set<string>();
      sampling = (async () => {
        while (samplingOn) {
          const r = await owner.query<{ progress: { waves?: Record<string, Record<string, string>> } }>(
            `select progress from promotions order by created_at desc limit 1`,
          );
          const waves = r.rows[0]?.progress.waves ?? {};
          for (const [w, v] of Object.entries(waves))
            for (const k of Object.keys(v))
              if (!seen.has(`${w}.${k}`)) {
                seen.add(`${w}.${k}`);
                waveMarks.push({ what: `wave ${w} ${k}`, calls: await statements(owner) });
              }
          await new Promise((res) => setTimeout(res, 20));
        }
      })();
    }
    started = {
      t: performance.now(),
      node: process.cpuUsage(),
      pg: pgTicks(),
      commits: await commits(owner),
    };
    await session.post('Profiler.start');
    return;
  }
  const { profile } = await session.post('Profiler.stop');
  const seconds = (performance.now() - started.t) / 1000;
  const node = process.cpuUsage(started.node);
  const pgMs = ((pgTicks() - started.pg) * 1000) / TICKS_PER_SECOND;
  samplingOn = false;
  await sampling;
  await owner.query('select pg_stat_clear_snapshot()');
  const xacts = (await commits(owner)) - started.commits;
  const file = path.join(OUT, `promotion-${phase}.cpuprofile`);
  fs.writeFileSync(file, JSON.stringify(profile));
  const total = await statements(owner);
  console.log(`\n=== ${phase}: ${TENANTS} tenants in ${seconds.toFixed(1)} s`);
  console.log(
    `statements ${total} (${(total / TENANTS).toFixed(2)} per tenant), commits ${xacts} (${(xacts / TENANTS).toFixed(2)} per tenant; the probe's own included)`,
  );
  console.log(
    `CPU per tenant: this process ${((node.user + node.system) / 1000 / TENANTS).toFixed(2)} ms, PostgreSQL ${(pgMs / TENANTS).toFixed(2)} ms`,
  );
  const r = await owner.query<{ calls: string; total_ms: string; mean_ms: string; q: string }>(
    `select calls, round(total_exec_time::numeric, 1) total_ms, round(mean_exec_time::numeric, 3) mean_ms,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 160) q
     from pg_stat_statements order by total_exec_time desc limit 25`,
  );
  console.log('calls\tper tenant\ttotal ms\tmean ms\tstatement');
  for (const x of r.rows)
    console.log(`${x.calls}\t${(Number(x.calls) / TENANTS).toFixed(2)}\t${x.total_ms}\t${x.mean_ms}\t${x.q}`);
  if (promotionId) {
    const waves = await owner.query<{ wave: number; n: number }>(
      'select wave, count(*)::int n from promotion_targets where promotion_id = $1 group by wave order by wave',
      [promotionId],
    );
    console.log(`waves: ${waves.rows.map((w) => `${w.wave}: ${w.n} tenants`).join(', ')}`);
    let prev = 0;
    for (const m of waveMarks) {
      console.log(`  ${m.what}: ${m.calls - prev} statements since the last mark`);
      prev = m.calls;
    }
    console.log(`  end: ${total - prev} statements since the last mark`);
  }
  const areas = summariseCpuProfile(file);
  const busy = areas.reduce((s, a) => s + a.ms, 0);
  console.log(`this process's CPU by area (${file}; idle left out):`);
  for (const a of areas)
    console.log(
      `  ${(a.ms / TENANTS).toFixed(3)} ms/tenant  ${((100 * a.ms) / busy).toFixed(1).padStart(5)}%  ${a.area}`,
    );
};

try {
  const { bare, promoted } = await promoteAcross(server, 'profile_promotion', TENANTS, 'none', probe);
  console.log(
    `\npromotion at ${((100 * promoted.value) / bare.value).toFixed(1)}% of the bare updates' rate`,
  );
} finally {
  session.disconnect();
  await server.stop();
}
