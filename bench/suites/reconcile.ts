/**
 * 5. Reconcile throughput and its cost per object against the registry's size (issue 24: 10k tenants
 * × 3 deployments × 2 topics = 100k objects Ready in <= 60 s, and the cost per object flat within ±20%
 * from 1k to 100k tenants).
 *
 * Throughput: objects brought to Ready per second by one controller process (`settings.connections`
 * reconciles at once), at two sizes, each in a database of its own, beside raw single-row INSERTs
 * with as many connections measured in the same run.
 *   BENCH_RECONCILE_TENANTS (default 100) and BENCH_RECONCILE_LARGE_TENANTS (default 10,000; 0 skips
 *   it): 10 objects per tenant, so 100 → 1,002 objects, 10,000 → 100,002.
 * One tenant's objects are created through the registry's apply (the change path) and cloned in SQL
 * with their reconcile jobs (cloneTenantTree): applying 100k objects one change at a time took half
 * an hour, their reconcile is what is measured here (the apply path has its own row, change-path.ts).
 *
 * Flat cost (flatCost): the same fresh batch (BENCH_RECONCILE_FLAT_BATCH tenants, default 250, ×10 =
 * 2,500 objects; 250 so that the warm-up and three windows fit in the registry of 1k) reconciled to Ready in a registry of each of BENCH_RECONCILE_FLAT_TENANTS tenants
 * (default 1000,100000; at 100k the registry holds 1M objects), the rest of the registry
 * bulk-inserted already Ready. The figures are CPU ms per object of the controller's process and of
 * the PostgreSQL server, and the wall rate; the smallest registry is the same-run baseline and each
 * is held to within ±20% of it. Reconciling all of 1M objects would take ten minutes; the batch
 * measures the per-object cost at that size in seconds.
 *
 * The resources are blob containers on their provider's embedded target (folders on the local disk),
 * so the figures are the control plane's own cost; topics are counted separately: a topic on a real
 * broker costs what the Kafka suite (`npm run bench -- kafka`) measures, and a single-node broker on
 * this machine holds nowhere near 60k topics. A blob container's name is its scope's (one per
 * deployment or tenant), so the issue's 3 deployments × 2 topics become 4 deployments with a container
 * each and one container of the tenant's own: the same 10 objects per tenant, the same
 * tenant → deployment → resource fan-out.
 * The controller claims, reads and settles in batches (TENANTRY_CONTROLLER_BATCH, default 256;
 * src/controller/settle-batch.ts); `settings.connections` is its number of provider calls at once.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import path from 'node:path';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import pg from 'pg';
import pino from 'pino';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { Controller } from '../../src/controller/controller.js';
import { closeProviders, createProviders, defaultDataplaneUrl } from '../../src/controller/providers.js';
import { createDb } from '../../src/db/database.js';
import { newObjectId } from '../../src/domain/identifiers.js';
import { closedLoop, measure } from '../lib/load.js';
import { BENCH_CUSTOMER, manifest } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

const SMALL = Number(process.env.BENCH_RECONCILE_TENANTS ?? 100);
const LARGE = Number(process.env.BENCH_RECONCILE_LARGE_TENANTS ?? 10_000);
/** Registry sizes (tenants) at which the cost per object is measured; the first is the baseline. */
const FLAT_SIZES = (process.env.BENCH_RECONCILE_FLAT_TENANTS ?? '1000,100000')
  .split(',')
  .map(Number)
  .filter((n) => n > 0);
/** Fresh tenants reconciled at each of FLAT_SIZES. */
const FLAT_BATCH = Number(process.env.BENCH_RECONCILE_FLAT_BATCH ?? 250);
/** Windows (of FLAT_BATCH fresh tenants each) at each size: each figure is their median. */
const FLAT_WINDOWS = Number(process.env.BENCH_RECONCILE_FLAT_WINDOWS ?? 3);
const DEPLOYMENTS = ['a', 'b', 'c', 'd'];
/** Objects of one tenant: itself, its deployments, their containers and its own container. */
const PER_TENANT = 1 + DEPLOYMENTS.length * 2 + 1;
const TEMPLATE = 'bench-eu-dev-t0';

export async function reconcileBenchmark(server: BenchPostgres): Promise<Row[]> {
  const small = await reconcileAll(server, 'bench_reconcile_small', SMALL);
  const large = LARGE > 0 ? await reconcileAll(server, 'bench_reconcile_large', LARGE) : undefined;
  const baseline = await rawInserts(server);
  const rows = [
    row(`Reconcile ${small.objects} objects to Ready vs raw INSERT`, small, baseline, null, 'report only'),
  ];
  if (large)
    rows.push(
      row(`Reconcile ${large.objects} objects to Ready vs raw INSERT`, large, baseline, {
        valueAtLeast: Math.ceil(large.objects / 60),
      }),
    );
  if (FLAT_SIZES.length >= 2) rows.push(...flatRows(await flatCost(server)));
  return rows;
}

/** A migrated database with the bench's customer and system, the registry, the providers and a controller. */
async function benchDatabase(server: BenchPostgres, database: string) {
  const { ownerUrl, appUrl } = await server.createDatabase(database);
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-blobs-'));
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dataDir });
  const db = createDb(appUrl, settings.connections + 4);
  const owner = new pg.Pool({ connectionString: ownerUrl, max: 2 });
  const registry = createRegistry(db, config);
  const ctx = systemContext('bench');
  const providers = createProviders({ config, db, dataplaneUrl: defaultDataplaneUrl(ownerUrl) });
  await registry.apply(ctx, [
    BENCH_CUSTOMER,
    manifest('System', 'svc', { displayName: 'S', serviceId: 'svc' }),
  ]);
  return {
    owner,
    /** One tenant (with its deployments and their containers) through the registry's apply, the change path. */
    applyTemplate: () => registry.apply(ctx, tenantDocs(0)),
    controller: (resyncIntervalMs = config.controller.resyncIntervalMs, pollIntervalMs = 20) =>
      new Controller({
        db,
        providers,
        logger: pino({ level: 'warn' }),
        config: { ...config.controller, workers: settings.connections, pollIntervalMs, resyncIntervalMs },
      }),
    async close() {
      await closeProviders(providers);
      await db.destroy();
      await owner.end();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

async function reconcileAll(
  server: BenchPostgres,
  database: string,
  tenants: number,
): Promise<Measurement & { objects: number }> {
  const bench = await benchDatabase(server, database);
  const { owner } = bench;
  try {
    // The other tenants cloned from the template in SQL (cloneTenantTree).
    const t0 = performance.now();
    await bench.applyTemplate();
    await cloneTenantTree(owner, TEMPLATE, { first: 1, count: tenants - 1, due: 'now' });
    const objects = tenants * PER_TENANT + 2;
    console.log(
      `  ${objects} objects created in ${((performance.now() - t0) / 1000).toFixed(1)}s; reconciling with ${settings.connections} workers`,
    );

    const controller = bench.controller();
    const started = performance.now();
    controller.start();
    const notReady = async () =>
      (
        await owner.query(`
          select (select count(*) from customers where phase <> 'Ready') + (select count(*) from systems where phase <> 'Ready')
               + (select count(*) from tenants where phase <> 'Ready') + (select count(*) from deployments where phase <> 'Ready')
               + (select count(*) from integration_resources where phase <> 'Ready') as n`)
      ).rows[0].n;
    // The count scans every table: at 100k objects it is polled once a second (at most 1 s late in a
    // run of a minute or more), so that the poll does not take the controller's share of the machine.
    const pollMs = Math.min(1000, Math.max(100, objects / 100));
    while (Number(await notReady()) > 0) await new Promise((r) => setTimeout(r, pollMs));
    const seconds = (performance.now() - started) / 1000;
    await controller.stop();
    const perObject = controller.processed / objects;
    const m = {
      label: `${objects} objects Ready (${perObject.toFixed(2)} reconciles, ${((1000 * seconds) / objects).toFixed(2)} ms per object)`,
      value: objects / seconds,
      unit: 'objects/s',
      objects,
    };
    console.log(
      `  ${objects} objects Ready in ${seconds.toFixed(1)}s: ${m.value.toFixed(0)} objects/s, ${controller.processed} reconciles (${perObject.toFixed(2)} per object)`,
    );
    return m;
  } finally {
    await bench.close();
  }
}

/** What reconciling one fresh batch cost, in a registry of `tenants` tenants. */
interface BatchCost {
  tenants: number;
  objects: number;
  reconciles: number;
  seconds: number;
  /** CPU of this process (the controller; nothing else runs in it meanwhile), ms. */
  controllerMs: number;
  /** CPU of the PostgreSQL server (every backend and background process), ms. */
  postgresMs: number;
}

/**
 * The cost per object of reconciling the same batch (FLAT_BATCH fresh tenants × 10 objects) in a
 * registry of each of FLAT_SIZES tenants, in one database that grows from one size to the next: the
 * tenants up to the size less the batch are copies of a Ready template, bulk-inserted in SQL with
 * their jobs waiting for their next resync, as a registry looks after they were applied and
 * reconciled; the batch is copies of the template as it was applied (Pending, its jobs queued as the
 * change path queued them). Each batch is inserted with its jobs held back; then another fresh batch
 * of the same size is reconciled, not measured, so that every window finds the process as busy and
 * its heap as grown as the one before (after the minutes of SQL that add 100k tenants, V8 had shrunk
 * the young generation to 1 MiB and the window paid twice the collections: the controller's CPU per
 * object at 100k was ~146% of that at 1k for this alone; at 2k tenants after 100 s idle, 130%);
 * then the tables are vacuumed and analysed, a checkpoint taken and the heap collected (young
 * generation kept), so the window measures the batch alone (FLAT_WINDOWS batches, default 3, one
 * after another at each size, each figure their median: a window lasts ~2 s, and one alone moves by
 * ±30% on a shared machine): from the
 * statement that makes its jobs due until all its tenants are Ready (a tenant is Ready only when its
 * deployments and resources are), one controller running all along (its start-up backfill and
 * reschedule are behind it), autovacuum off meanwhile (see autovacuum()). CPU is counted by the
 * kernel: this process's, and the PostgreSQL server's (postmaster, live children, and the children
 * that ended in the window), the controller's polls for due jobs included (every 100 ms when it
 * has room for a batch and found less than a full one: a cost per second of the window, ~1% here).
 * The rows read by sequential scans in each window are printed: a statement that scans a
 * table whole shows there in proportion to the registry; and so are the GC pauses and the young
 * generation's size. BENCH_CPU_PROF=<folder> writes a CPU profile of each window. BENCH_PG_STATEMENTS=1
 * prints, per window, the server's top statements per object (pg_stat_statements: time, buffers,
 * WAL) and its WAL, I/O and row-write counters (how many updates were HOT), then each statement at
 * the largest size against the smallest: what grows with the registry, and why.
 */
async function flatCost(server: BenchPostgres): Promise<BatchCost[]> {
  const bench = await benchDatabase(server, 'bench_reconcile_flat');
  const { owner } = bench;
  // No resync falls into the run (the batches' own come an hour later).
  const resyncMs = 3_600_000;
  const controller = bench.controller(resyncMs, 100);
  const postgresPid = Number(
    (await fs.readFile(path.join(server.dir, 'pg', 'postmaster.pid'), 'utf8')).split('\n')[0],
  );
  const cpuNow = async (): Promise<Cpu> => {
    const { user, system } = process.cpuUsage();
    return {
      at: performance.now(),
      controllerMs: (user + system) / 1000,
      postgresMs: await postgresCpuMs(postgresPid),
    };
  };
  const out: BatchCost[] = [];
  const statements = process.env.BENCH_PG_STATEMENTS ? await statementStats(owner) : undefined;
  /** The statements' figures summed over the windows at each size (BENCH_PG_STATEMENTS). */
  const statementsBySize: { tenants: number; objects: number; stats: Map<string, StatementStat> }[] = [];
  try {
    await bench.applyTemplate();
    await snapshotTemplate(owner, TEMPLATE);
    controller.start();
    const template = await owner.query<{ id: string }>('select id from tenants where slug = $1', [TEMPLATE]);
    await untilReady(owner, [template.rows[0]!.id]);
    let tenants = 1;
    // Fresh copies of the template as applied, the next FLAT_BATCH tenants.
    const fresh = async (due: 'now' | 'held', vacuum: boolean) => {
      const first = tenants;
      tenants += FLAT_BATCH;
      return cloneTenantTree(owner, TEMPLATE, {
        first,
        count: FLAT_BATCH,
        from: 'bench_fresh_',
        due,
        vacuum,
      });
    };
    for (const size of FLAT_SIZES) {
      const t0 = performance.now();
      const ready = Math.max(0, size - (FLAT_WINDOWS + 1) * FLAT_BATCH - tenants);
      // Vacuumed and analysed with the batch's copy, next.
      await cloneTenantTree(owner, TEMPLATE, {
        first: tenants,
        count: ready,
        due: { resyncMs },
        vacuum: false,
      });
      tenants += ready;
      const batches = [];
      for (let w = 0; w < FLAT_WINDOWS; w++) batches.push(await fresh('held', true));
      const prepared = performance.now();
      // A batch just before the window, not measured, so that each window finds the process as a
      // busy controller is: adding 100k tenants in SQL leaves it idle for minutes, and V8 then
      // shrinks its young generation (to 1 MiB from 32; its GCs doubled in the window after) and
      // lets cold code go; its own writes vacuumed after it. The first one also warms the server.
      const warmUp = await fresh('now', false);
      await untilReady(
        owner,
        warmUp.filter((o) => o.kind === 'Tenant').map((o) => o.id),
      );
      const warmed = performance.now();
      const windows: BatchCost[] = [];
      const sizeStatements = { tenants, objects: 0, stats: new Map<string, StatementStat>() };
      for (const batch of batches) {
        await vacuumAnalyze(owner);
        await owner.query('checkpoint');
        await autovacuum(owner, false);
        // And its heap collected: a major GC then falls in a window for the window's own garbage,
        // not for what the clones and the warm-up (or the window before) left.
        collectGarbage();
        if (windows.length === 0)
          console.log(
            `  ${tenants.toLocaleString('en-US')} tenants (${ready.toLocaleString('en-US')} Ready added, ${FLAT_WINDOWS} × ${batch.length.toLocaleString('en-US')} objects to reconcile) in ${((prepared - t0) / 1000).toFixed(1)}s; warm-up batch ${((warmed - prepared) / 1000).toFixed(1)}s, then ${((performance.now() - warmed) / 1000).toFixed(1)}s to the window; young generation ${(youngGenerationBytes() / 2 ** 20).toFixed(0)} MiB`,
          );
        const scans0 = await seqScans(owner);
        const profile = await windowProfile();
        await statements?.reset();
        const counters0 = await statements?.counters();
        const cpu0 = await cpuNow();
        const reconciles0 = controller.processed;
        await makeDue(owner, batch);
        await untilReady(
          owner,
          batch.filter((o) => o.kind === 'Tenant').map((o) => o.id),
        );
        const cpu = since(cpu0, await cpuNow());
        const windowStatements = await statements?.read();
        const gc = await profile.stop(`reconcile-${tenants}-${windows.length + 1}`);
        // The counters after the processes' next flush of their statistics (a second at most).
        if (statements) await new Promise((r) => setTimeout(r, 1100));
        const counters = await statements?.counters();
        await autovacuum(owner, true);
        const seconds = cpu.seconds;
        const cost: BatchCost = {
          tenants,
          objects: batch.length,
          reconciles: controller.processed - reconciles0,
          seconds,
          controllerMs: cpu.controllerMs,
          postgresMs: cpu.postgresMs,
        };
        windows.push(cost);
        if (windowStatements && counters0 && counters) {
          const changed = [...counters]
            .map(([k, v]) => [k, v - (counters0.get(k) ?? 0)] as const)
            .filter(([, v]) => v !== 0)
            .map(([k, v]) => `${k} ${(v / cost.objects).toFixed(2)}`);
          console.log(`    server counters per object: ${changed.join(', ')}`);
          printStatements(windowStatements, cost.objects, 10);
          sizeStatements.objects += cost.objects;
          addStatements(sizeStatements.stats, windowStatements);
        }
        const scanned = [...(await seqScans(owner))]
          .map(([table, rows]) => [table, rows - (scans0.get(table) ?? 0)] as const)
          .filter(([, rows]) => rows > 0)
          .map(([table, rows]) => `${table} ${rows.toLocaleString('en-US')}`);
        console.log(`    rows read by sequential scans meanwhile: ${scanned.join(', ') || 'none'}`);
        console.log(
          `  at ${tenants.toLocaleString('en-US')} tenants, window ${windows.length}: ${cost.objects} objects Ready in ${seconds.toFixed(1)}s (${(cost.objects / seconds).toFixed(0)} objects/s, ${(cost.reconciles / cost.objects).toFixed(2)} reconciles per object); CPU per object: controller ${(cost.controllerMs / cost.objects).toFixed(3)} ms (GC pauses ${(gc.ms / cost.objects).toFixed(3)} ms: ${gc.minor} young, ${gc.major} other), PostgreSQL ${(cost.postgresMs / cost.objects).toFixed(3)} ms; this process's heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB; load ${os
            .loadavg()
            .map((l) => l.toFixed(2))
            .join(' ')}`,
        );
      }
      // Each figure the median of the windows' (a window is ~2 s: one alone moves ±30% on a shared machine).
      const median = (f: (c: BatchCost) => number) =>
        windows.map(f).sort((a, b) => a - b)[Math.floor(windows.length / 2)]!;
      if (statements) statementsBySize.push(sizeStatements);
      out.push({
        tenants,
        objects: windows[0]!.objects,
        reconciles: median((c) => c.reconciles),
        seconds: median((c) => c.seconds),
        controllerMs: median((c) => c.controllerMs),
        postgresMs: median((c) => c.postgresMs),
      });
    }
    if (statementsBySize.length >= 2) compareStatements(statementsBySize[0]!, statementsBySize.at(-1)!);
    return out;
  } finally {
    await controller.stop();
    await bench.close();
  }
}

/**
 * The garbage collector's pauses during a window (count and ms, from perf_hooks), and with
 * BENCH_CPU_PROF=<folder> a CPU profile of this process over it (`<folder>/<name>.cpuprofile`, the
 * format of `node --cpu-prof`, summarised by area with bench/lib/cpu-profile-summary.ts or opened in
 * Chrome DevTools). Its samples are on a wall clock: on a loaded machine compare the GC counts and
 * the CPU from the kernel, not the profiles' milliseconds.
 */
async function windowProfile() {
  const gc = { ms: 0, minor: 0, major: 0 };
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.ms += e.duration;
      const { kind } = (e as { detail?: { kind?: number } }).detail ?? {};
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
      else gc.major++;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  const dir = process.env.BENCH_CPU_PROF;
  const session = dir ? new Session() : undefined;
  if (session) {
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
  }
  return {
    async stop(name: string) {
      observer.disconnect();
      if (session && dir) {
        const { profile } = await session.post('Profiler.stop');
        session.disconnect();
        await fs.mkdir(dir, { recursive: true });
        await fs.writeFile(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
      }
      return gc;
    },
  };
}

/** CPU used so far (ms) by this process and by the PostgreSQL server, at `at` (performance.now()). */
interface Cpu {
  at: number;
  controllerMs: number;
  postgresMs: number;
}
const since = (a: Cpu, b: Cpu) => ({
  seconds: (b.at - a.at) / 1000,
  controllerMs: b.controllerMs - a.controllerMs,
  postgresMs: b.postgresMs - a.postgresMs,
});

/** The flat-cost rows: each figure at the largest registry against the smallest (the middle one named). */
function flatRows(costs: BatchCost[]): Row[] {
  const first = costs[0]!;
  const last = costs[costs.length - 1]!;
  const size = (c: BatchCost) =>
    c.tenants >= 1000 && c.tenants % 1000 === 0 ? `${c.tenants / 1000}k` : String(c.tenants);
  const what = `${first.objects.toLocaleString('en-US')} objects (${FLAT_BATCH.toLocaleString('en-US')} fresh tenants)`;
  const metrics: [string, string, (c: BatchCost) => number][] = [
    ['controller CPU', 'ms CPU/object', (c) => c.controllerMs / c.objects],
    ['PostgreSQL CPU', 'ms CPU/object', (c) => c.postgresMs / c.objects],
    ['wall rate', 'objects/s', (c) => c.objects / c.seconds],
  ];
  return metrics.map(([name, unit, f]) => {
    const m = (c: BatchCost): Measurement => ({ label: `at ${size(c)} tenants`, value: f(c), unit });
    const middle = costs
      .slice(1, -1)
      .map((c) => `${size(c)}: ${(100 * (f(c) / f(first))).toFixed(0)}%`)
      .join(', ');
    return row(
      `Reconcile ${what}, ${name}, in ${size(last)} vs ${size(first)} tenants${middle ? ` (${middle})` : ''}`,
      m(last),
      m(first),
      { ratioWithin: 0.2 },
      'flat cost',
    );
  });
}

/** Keeps the template's rows as they are before its first reconcile (tables `bench_fresh_*`), for fresh copies. */
async function snapshotTemplate(owner: pg.Pool, slug: string): Promise<void> {
  const tenant = 'select id from tenants where slug = $1';
  await owner.query(`create table bench_fresh_tenants as select * from tenants where slug = $1`, [slug]);
  for (const table of ['deployments', 'integration_resources', 'reconcile_jobs'])
    await owner.query(
      `create table bench_fresh_${table} as select * from ${table} where tenant_id = (${tenant})`,
      [slug],
    );
}

/**
 * Autovacuum of every table on or off. Off during each window: a batch changes half of a registry
 * of 1k tenants, whose tables autovacuum then vacuums during the window, and a thousandth of one of
 * 100k, whose vacuum comes long after; either way a cost in proportion to the rows changed, paid
 * outside the reconcile's statements, which are what is compared.
 */
async function autovacuum(owner: pg.Pool, on: boolean): Promise<void> {
  const tables = await owner.query<{ t: string }>(
    `select format('%I', tablename) as t from pg_tables where schemaname = 'public'`,
  );
  for (const { t } of tables.rows) await owner.query(`alter table ${t} set (autovacuum_enabled = ${on})`);
}

/** Makes 'held' copies' jobs due now, in their order (one statement, by primary key at any size). */
async function makeDue(owner: pg.Pool, objects: { kind: string; id: string }[]): Promise<void> {
  await owner.query(
    `update reconcile_jobs j set run_after = now() - (${HELD} - j.run_after)
     from unnest($1::text[], $2::uuid[]) v(kind, id) where j.object_kind = v.kind and j.object_id = v.id
       and j.object_kind = any($3::text[]) and j.object_id = any($2::uuid[])`,
    [objects.map((o) => o.kind), objects.map((o) => o.id), [...new Set(objects.map((o) => o.kind))]],
  );
}

/** Waits until every tenant of `ids` is Ready (polled by primary key, a cost that does not grow with the registry). */
async function untilReady(owner: pg.Pool, ids: string[]): Promise<void> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const r = await owner.query<{ n: number }>(
      `select count(*)::int as n from tenants where id = any($1::uuid[]) and phase <> 'Ready'`,
      [ids],
    );
    if (r.rows[0]!.n === 0) return;
    if (Date.now() > deadline) throw new Error(`${r.rows[0]!.n} tenants not Ready after 10 minutes`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Rows read by sequential scans so far, by table: a statement of the reconcile that scans a table
 * whole shows here as rows in proportion to the registry (the server's statistics, flushed by each
 * backend within a second; so the count after a window may miss its last second).
 */
async function seqScans(owner: pg.Pool): Promise<Map<string, number>> {
  const r = await owner.query<{ relname: string; n: string }>(
    'select relname, seq_tup_read as n from pg_stat_user_tables',
  );
  return new Map(r.rows.map((x) => [x.relname, Number(x.n)]));
}

/** One statement's figures in pg_stat_statements (BENCH_PG_STATEMENTS), over a window or summed over several. */
interface StatementStat {
  query: string;
  toplevel: boolean;
  calls: number;
  /** Execution and planning time, ms. */
  execMs: number;
  planMs: number;
  plans: number;
  rows: number;
  /** Shared buffers found in PostgreSQL's cache and read from outside it (the OS or the disk). */
  hit: number;
  read: number;
  /** Shared buffers this statement dirtied first; full-page images and bytes it wrote to the WAL. */
  dirtied: number;
  fpi: number;
  walBytes: number;
}

/**
 * The server's statement statistics in the bench's database (pg_stat_statements; the server loads
 * it with BENCH_PG_STATEMENTS=1, bench/lib/postgres.ts): reset before a window, read after it. Every
 * statement of the database is counted, the bench's own polls (a count of the batch's tenants by
 * primary key, ten a second) too, and nested ones (in functions and triggers; `toplevel` false)
 * beside the statements that ran them, so the nested ones' time is also in their callers'.
 */
async function statementStats(owner: pg.Pool) {
  await owner.query('create extension if not exists pg_stat_statements');
  return {
    reset: async () => {
      await owner.query('select pg_stat_statements_reset()');
    },
    /**
     * The server's counters that a statement's figures leave out: WAL (records, full-page images,
     * bytes), buffers by kind of process (pg_stat_io: reads, writes, evictions), and row writes by
     * table (updates and how many were HOT, i.e. wrote no index entry). Flushed by each process
     * within a second, as the sequential scans are.
     */
    async counters(): Promise<Map<string, number>> {
      const r = await owner.query<{ k: string; v: string }>(
        `select 'wal ' || k as k, v from pg_stat_wal,
           lateral (values ('records', wal_records), ('full-page images', wal_fpi), ('KiB', wal_bytes / 1024)) x(k, v)
         union all
         select backend_type || ' ' || k, sum(v) from pg_stat_io,
           lateral (values ('reads', reads), ('writes', writes), ('extends', extends), ('evictions', evictions)) x(k, v)
         where object = 'relation' group by backend_type, k
         union all
         select relname || ' ' || k, v from pg_stat_user_tables,
           lateral (values ('inserts', n_tup_ins), ('updates', n_tup_upd), ('HOT updates', n_tup_hot_upd), ('deletes', n_tup_del)) x(k, v)
         where relname in ('tenants', 'deployments', 'integration_resources', 'reconcile_jobs')`,
      );
      return new Map(r.rows.map((x) => [x.k, Number(x.v ?? 0)]));
    },
    async read(): Promise<Map<string, StatementStat>> {
      const r = await owner.query<Record<string, string | number | boolean>>(
        `select queryid::text || '/' || toplevel as key, toplevel, query, calls, total_exec_time, total_plan_time,
                plans, rows, shared_blks_hit, shared_blks_read, shared_blks_dirtied, wal_fpi, wal_bytes
         from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())`,
      );
      return new Map(
        r.rows.map((x) => [
          String(x.key),
          {
            query: String(x.query).replace(/\s+/g, ' '),
            toplevel: Boolean(x.toplevel),
            calls: Number(x.calls),
            execMs: Number(x.total_exec_time),
            planMs: Number(x.total_plan_time),
            plans: Number(x.plans),
            rows: Number(x.rows),
            hit: Number(x.shared_blks_hit),
            read: Number(x.shared_blks_read),
            dirtied: Number(x.shared_blks_dirtied),
            fpi: Number(x.wal_fpi),
            walBytes: Number(x.wal_bytes),
          },
        ]),
      );
    },
  };
}

function addStatements(into: Map<string, StatementStat>, from: Map<string, StatementStat>): void {
  for (const [key, s] of from) {
    const t = into.get(key);
    if (!t) into.set(key, { ...s });
    else
      for (const f of [
        'calls',
        'execMs',
        'planMs',
        'plans',
        'rows',
        'hit',
        'read',
        'dirtied',
        'fpi',
        'walBytes',
      ] as const)
        t[f] += s[f];
  }
}

/** A statement's figures per object of the window (ms, calls) and per call (buffers, rows, plan share). */
function statementLine(s: StatementStat, objects: number): string {
  const calls = Math.max(1, s.calls);
  return `${((s.execMs + s.planMs) / objects).toFixed(4)} ms/object (plan ${(s.planMs / objects).toFixed(4)}, ${s.plans}/${s.calls} planned), ${(s.calls / objects).toFixed(3)} calls/object, per call ${((s.execMs + s.planMs) / calls).toFixed(3)} ms, ${(s.rows / calls).toFixed(1)} rows, ${(s.hit / calls).toFixed(1)} blocks hit, ${(s.read / calls).toFixed(1)} read, ${(s.dirtied / calls).toFixed(1)} dirtied, ${(s.fpi / calls).toFixed(1)} full-page images, ${(s.walBytes / calls / 1024).toFixed(1)} KiB WAL${s.toplevel ? '' : ' [nested]'}`;
}

const queryText = (s: StatementStat, n = 160) => (s.query.length > n ? `${s.query.slice(0, n)}…` : s.query);

/** The window's top statements by time (execution and planning) per object, and the top-level statements' total. */
function printStatements(stats: Map<string, StatementStat>, objects: number, top: number): void {
  const all = [...stats.values()];
  const total = all.filter((s) => s.toplevel).reduce((t, s) => t + s.execMs + s.planMs, 0);
  const calls = all.filter((s) => s.toplevel).reduce((t, s) => t + s.calls, 0);
  console.log(
    `    statements (pg_stat_statements): top-level ${(total / objects).toFixed(4)} ms/object in ${(calls / objects).toFixed(2)} calls/object; the top ${top}:`,
  );
  for (const s of all.sort((a, b) => b.execMs + b.planMs - (a.execMs + a.planMs)).slice(0, top))
    console.log(`      ${statementLine(s, objects)}
        ${queryText(s)}`);
}

/** Each statement at the largest registry against the smallest, those whose time per object grew most first. */
function compareStatements(
  small: { tenants: number; objects: number; stats: Map<string, StatementStat> },
  large: { tenants: number; objects: number; stats: Map<string, StatementStat> },
): void {
  const perObject = (s: StatementStat | undefined, objects: number) =>
    s ? (s.execMs + s.planMs) / objects : 0;
  const keys = new Set([...small.stats.keys(), ...large.stats.keys()]);
  const rows = [...keys]
    .map((key) => {
      const a = small.stats.get(key);
      const b = large.stats.get(key);
      return { a, b, growth: perObject(b, large.objects) - perObject(a, small.objects) };
    })
    .sort((x, y) => Math.abs(y.growth) - Math.abs(x.growth))
    .slice(0, 15);
  const total = (x: typeof small) =>
    [...x.stats.values()].filter((s) => s.toplevel).reduce((t, s) => t + s.execMs + s.planMs, 0) / x.objects;
  console.log(
    `  statements at ${large.tenants.toLocaleString('en-US')} vs ${small.tenants.toLocaleString('en-US')} tenants (all windows): top-level ${total(large).toFixed(4)} vs ${total(small).toFixed(4)} ms/object; the largest changes per object:`,
  );
  for (const { a, b, growth } of rows) {
    const s = (b ?? a)!;
    console.log(`    ${growth >= 0 ? '+' : ''}${growth.toFixed(4)} ms/object: ${queryText(s)}`);
    console.log(`      small: ${a ? statementLine(a, small.objects) : 'not run'}`);
    console.log(`      large: ${b ? statementLine(b, large.objects) : 'not run'}`);
  }
}

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/**
 * CPU time of a PostgreSQL server so far, ms: its postmaster's own and that of the children it has
 * reaped (cutime, cstime), plus each live child's (/proc; Linux).
 */
async function postgresCpuMs(postmaster: number): Promise<number> {
  // Fields after the command name: state ppid … utime (14th of the line) stime cutime cstime.
  const fields = async (pid: string) => {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  };
  let ticks = 0;
  const own = await fields(String(postmaster));
  for (const i of [11, 12, 13, 14]) ticks += Number(own[i] ?? 0);
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const f = await fields(pid);
    if (Number(f[1]) === postmaster) ticks += Number(f[11] ?? 0) + Number(f[12] ?? 0);
  }
  return (ticks * 1000) / CLOCK_TICKS;
}

/** The registry's tables vacuumed and analysed. */
async function vacuumAnalyze(db: pg.Pool | pg.PoolClient): Promise<void> {
  for (const table of ['tenants', 'deployments', 'integration_resources', 'reconcile_jobs'])
    await db.query(`vacuum analyze ${table}`);
}

/** A full garbage collection of this process (its young generation kept as it is). */
function collectGarbage(): void {
  // `gc`, exposed when first needed (not for the other suites of the run).
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

/** This process's young generation (V8's new space), bytes. */
const youngGenerationBytes = () =>
  v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;

/** Which copies cloneTenantTree makes, from which rows, and when their jobs are due. */
interface Copies {
  /** The copies are tenants `…-t<first>` to `…-t<first + count - 1>`. */
  first: number;
  count: number;
  /** The template's rows: the live tables (`''`), or a snapshot taken while it was fresh (`'bench_fresh_'`: snapshotTemplate). */
  from?: '' | 'bench_fresh_';
  /**
   * When the copies' jobs are due: 'now' (as the change path queued the template's, each copy a
   * microsecond after the one before); 'held' (the same order, but not before makeDue); or, for
   * copies of a Ready template, in `resyncMs` ±10% (the resync after their reconcile).
   */
  due: 'now' | 'held' | { resyncMs: number };
  /** Vacuum and analyse the tables after (default true). */
  vacuum?: boolean;
}

/** Where a 'held' copy's job waits, shifted by its order (makeDue moves it to now, in the same order). */
const HELD = `timestamptz '3000-01-01'`;

/**
 * Copies of tenant `slug`'s tree (the tenant, its deployments, its resources), each with its
 * reconcile job, in one statement per table and one transaction; the copy `…-t<i>` of tenant `…-t0`
 * has new ids and its slugs, physical names and specs rewritten. Every other column is copied as it
 * is (phase and conditions too: copies of a Ready template are Ready), so the clones stay valid
 * whatever columns later migrations add. The change path's history of each change (object versions,
 * audit records, events) is not copied: the reconcile reads none of it. Returns the copies' objects (none for Ready copies).
 */
async function cloneTenantTree(
  owner: pg.Pool,
  slug: string,
  { first, count, from = '', due, vacuum = true }: Copies,
): Promise<{ kind: string; id: string }[]> {
  if (count <= 0) return [];
  const client = await owner.connect();
  const columns = async (table: string, except: string[]) =>
    (
      await client.query<{ column_name: string }>(
        `select column_name from information_schema.columns
         where table_schema = 'public' and table_name = $1 order by ordinal_position`,
        [table],
      )
    ).rows
      .map((r) => r.column_name)
      .filter((c) => !except.includes(c));
  const stem = slug.slice(0, -1); // 'bench-eu-dev-t'
  const rename = (col: string) => `replace(${col}, $1, ${`'${stem}' || c.i`})`;
  const renameJson = (col: string) => `replace(${col}::text, '"' || $1 || '', ${`'"${stem}' || c.i`})::jsonb`;
  try {
    await client.query('begin');
    // The template's objects (in the order apply created them), and a new id for each in every copy,
    // from the product's generator (newObjectId, time-ordered): the copies' keys land in the indexes
    // as the keys of tenants applied one after another do, not at random places.
    const template = (
      await client.query<{ kind: string; id: string }>(
        `select kind, id from (select 'Tenant' as kind, id from ${from}tenants where slug = $1
           union all select 'Deployment', d.id from ${from}deployments d join ${from}tenants t on t.id = d.tenant_id where t.slug = $1
           union all select 'IntegrationResource', r.id from ${from}integration_resources r join ${from}tenants t on t.id = r.tenant_id where t.slug = $1) o
         order by id`,
        [slug],
      )
    ).rows;
    await client.query(
      'create temporary table clone_ids (kind text, old_id uuid, id uuid, i int) on commit drop',
    );
    // In statements of 10k copies (100k ids), not one array of a million.
    for (let at = first; at < first + count; at += 10_000) {
      const copies = Array.from({ length: Math.min(10_000, first + count - at) }, (_, k) => at + k);
      const rows = copies.flatMap((i) => template.map((o) => ({ ...o, i })));
      await client.query(
        'insert into clone_ids select * from unnest($1::text[], $2::uuid[], $3::uuid[], $4::int[])',
        [rows.map((o) => o.kind), rows.map((o) => o.id), rows.map(() => newObjectId()), rows.map((o) => o.i)],
      );
    }
    await client.query('create index on clone_ids (old_id, i)');
    const copy = async (table: string, kind: string, set: Record<string, string>) => {
      const rest = await columns(table, Object.keys(set));
      await client.query(
        `insert into ${table} (${[...Object.keys(set), ...rest].map((c) => `"${c}"`).join(', ')})
         select ${[...Object.values(set), ...rest.map((c) => `o."${c}"`)].join(', ')}
         from ${from}${table} o join clone_ids c on c.old_id = o.id and c.kind = '${kind}'
         ${table === 'tenants' ? '' : 'join clone_ids ct on ct.old_id = o.tenant_id and ct.i = c.i'}
         ${table === 'integration_resources' ? 'left join clone_ids cd on cd.old_id = o.deployment_id and cd.i = c.i' : ''}`,
        [slug],
      );
    };
    await copy('tenants', 'Tenant', {
      id: 'c.id',
      slug: rename('o.slug'),
      qualifier: `'t' || c.i`,
      spec: `o.spec || jsonb_build_object('qualifier', 't' || c.i)`,
    });
    await copy('deployments', 'Deployment', {
      id: 'c.id',
      tenant_id: 'ct.id',
      slug: rename('o.slug'),
      spec: renameJson('o.spec'),
    });
    await copy('integration_resources', 'IntegrationResource', {
      id: 'c.id',
      tenant_id: 'ct.id',
      deployment_id: 'cd.id',
      slug: rename('o.slug'),
      physical_name: rename('o.physical_name'),
      spec: renameJson('o.spec'),
    });
    const last = first + count - 1;
    const runAfter =
      due === 'now'
        ? `now() - make_interval(secs => (${last} - c.i) / 1e6)`
        : due === 'held'
          ? `${HELD} - make_interval(secs => (${last} - c.i) / 1e6)`
          : `now() + make_interval(secs => ${due.resyncMs / 1000} * s.spread)`;
    const jobColumns = await columns('reconcile_jobs', ['object_id', 'tenant_id', 'run_after']);
    // A Ready copy's resync, as completeJobs spreads it: drawn once per batch of jobs ended together
    // (8 copies, ~80 jobs, what one completion ended in the windows here).
    await client.query(
      `with s as materialized (select g, 0.9 + 0.2 * random() as spread from generate_series($1::int / 8, $2::int / 8) g)
       insert into reconcile_jobs (object_id, tenant_id, run_after, ${jobColumns.map((c) => `"${c}"`).join(', ')})
       select c.id, ct.id, ${runAfter}, ${jobColumns.map((c) => `j."${c}"`).join(', ')}
       from ${from}reconcile_jobs j join clone_ids c on c.old_id = j.object_id and c.kind = j.object_kind
       join clone_ids ct on ct.old_id = j.tenant_id and ct.i = c.i
       join s on s.g = c.i / 8`,
      [first, last],
    );
    // The objects of copies to be reconciled; not those of Ready copies (at 100k tenants, 900k rows
    // that this process would read only to collect them as garbage during the window that follows).
    const copies =
      typeof due === 'string'
        ? (await client.query<{ kind: string; id: string }>('select kind, id from clone_ids')).rows
        : [];
    await client.query('commit');
    if (vacuum) await vacuumAnalyze(client);
    return copies;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

function tenantDocs(i: number): unknown[] {
  const tenant = `bench-eu-dev-t${i}`;
  const docs: unknown[] = [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Tenant',
      metadata: {},
      spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `t${i}` },
    },
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'IntegrationResource',
      metadata: {},
      spec: { scope: { tenant }, type: 'blob-container' },
    },
  ];
  for (const d of DEPLOYMENTS) {
    docs.push(
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Deployment',
        metadata: {},
        spec: { tenant, system: 'svc', qualifier: d },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'IntegrationResource',
        metadata: {},
        spec: { scope: { deployment: `${tenant}-svc-${d}` }, type: 'blob-container' },
      },
    );
  }
  return docs;
}

/** Raw single-row INSERTs (autocommit) for `settings.seconds`, with as many connections. */
async function rawInserts(server: BenchPostgres): Promise<Measurement> {
  const { ownerUrl, appUrl } = await server.createDatabase('bench_reconcile_raw');
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  await owner.query(
    'create table bench_reconcile_raw (id bigint generated always as identity primary key, data jsonb not null)',
  );
  await owner.query('grant select, insert on bench_reconcile_raw to tenantry_app');
  await owner.end();
  const pool = new pg.Pool({ connectionString: appUrl, max: settings.connections });
  pool.on('error', () => undefined);
  try {
    return await measure(
      closedLoop('raw single-row INSERT (autocommit)', async () => {
        await pool.query('insert into bench_reconcile_raw (data) values ($1)', ['{"n":1}']);
      }),
    );
  } finally {
    await pool.end();
  }
}
