/**
 * 12. Pool → silo migration (issue 19) of a tenant with BENCH_MIGRATION_ROWS rows (default 1M,
 * over three tables with keys and an index), run by the workflow engine on real PostgreSQL: the
 * copy rate (rows/s of the initial copy by logical replication: start-replication + wait-synced)
 * and the write freeze (freeze-writes → cut-over), each as the migration records them; then the
 * rollback after 1% of the rows changed on the silo, and its write freeze (freeze-writes → restore).
 * Baseline in the same run: `pg_dump | pg_restore` of the same schema when a pg_dump of the
 * server's major version (or newer) is found (TENANTRY_PG_DUMP, else on the PATH, else fetched by
 * scripts/pg-dump.sh); without one, the COPY TO | COPY FROM stream that pg_dump's data section is, into the same tables (said in the row).
 * Goals: copy ≥ 50% of the baseline rate; freeze (of the migration and of its rollback) ≤ 2 s whatever the size.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { Controller } from '../../src/controller/controller.js';
import { closeProviders, createProviders, defaultDataplaneUrl } from '../../src/controller/providers.js';
import { createDb } from '../../src/db/database.js';
import { workflowTypes } from '../../src/tenant-migrations/migration-workflows.js';
import { type Migration, MigrationsService } from '../../src/tenant-migrations/migrations.service.js';
import {
  copyTables,
  createSchema,
  databaseUrl,
  schemaDdl,
  withClient,
} from '../../src/tenant-migrations/pg-copy.js';
import { WorkflowEngine } from '../../src/workflows/workflow-engine.js';
import { BENCH_CUSTOMER, manifest } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';

const ROWS = Number(process.env.BENCH_MIGRATION_ROWS ?? 1_000_000);
const run = promisify(execFile);

export async function migrationBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { ownerUrl, appUrl } = await server.createDatabase('bench_migration');
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-mg-'));
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dataDir });
  const db = createDb(appUrl, 8);
  const registry = createRegistry(db, config);
  const ctx = systemContext('bench');
  const dataplane = defaultDataplaneUrl(ownerUrl);
  const providers = createProviders({ config, db, dataplaneUrl: dataplane });
  const owner = new pg.Pool({ connectionString: ownerUrl, max: 2 });
  const tenant = 'bench-eu-dev-mig';
  try {
    const cell = (name: string, tenancy: string) =>
      manifest('Cell', name, {
        region: 'eu',
        stage: 'nonprod',
        environmentTypes: ['dev'],
        tenancy,
        capacity: { tenants: 5 },
      });
    await registry.apply(ctx, [
      BENCH_CUSTOMER,
      cell('bench-pool', 'shared'),
      cell('bench-silo', 'dedicated'),
      manifest('Tenant', undefined, {
        customer: 'bench',
        region: 'eu',
        environmentType: 'dev',
        qualifier: 'mig',
        isolation: 'pool',
      }),
      manifest('IntegrationResource', undefined, {
        scope: { tenant },
        type: 'database',
        database: { isolation: 'pool' },
      }),
    ]);
    const controller = new Controller({
      db,
      providers,
      logger: pino({ level: 'warn' }),
      config: { ...config.controller, pollIntervalMs: 20 },
    });
    controller.start();
    for (;;) {
      const r = await owner.query(
        `select count(*)::int as n from integration_resources where phase <> 'Ready'`,
      );
      if (r.rows[0].n === 0) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    // The tenant's data (not timed), made as its own role: 60% orders, 30% items, 10% events.
    const schema = 't_bench_eu_dev_mig';
    const [o, i, e] = [
      Math.round(ROWS * 0.6),
      Math.round(ROWS * 0.3),
      ROWS - Math.round(ROWS * 0.6) - Math.round(ROWS * 0.3),
    ];
    const l0 = performance.now();
    await withClient(dataplane, async (c) => {
      await c.query(`set role ${schema}; set search_path = ${schema}`);
      await c.query(`
        create table orders (id bigserial primary key, n integer not null unique, payload text, at timestamptz default now());
        create table items (id integer generated always as identity primary key,
                            order_id bigint not null references orders (id), note text);
        create index items_by_order on items (order_id);
        create table events (k text primary key, v jsonb not null default '{}');
        insert into orders (n, payload) select g, md5(g::text) from generate_series(1, ${o}) g;
        insert into items (order_id, note) select 1 + (g % ${o}), 'note ' || g from generate_series(1, ${i}) g;
        insert into events (k, v) select 'e' || g, jsonb_build_object('g', g) from generate_series(1, ${e}) g;
        analyze;`);
    });
    console.log(`  ${ROWS} rows loaded in ${((performance.now() - l0) / 1000).toFixed(0)}s`);

    // Timed: the migration, by the workflow engine.
    const engine = new WorkflowEngine({
      db,
      registry: workflowTypes(db, providers, dataplane),
      logger: pino({ level: 'warn' }),
      config: {
        workers: 2,
        leaseMs: 30_000,
        backoffBaseMs: 200,
        backoffCapMs: 2_000,
        maxAttempts: 3,
        pollIntervalMs: 20,
        stepTimeoutMs: 60_000,
      },
    });
    engine.start();
    const service = new MigrationsService(db);
    const m = (await service.start(ctx, tenant, { isolation: 'silo' }, { dryRun: false })) as Migration;
    for (;;) {
      const r = await owner.query<{ state: string; error: string | null }>(
        'select state, error from workflows where id = $1',
        [m.id],
      );
      if (r.rows[0]?.state === 'Succeeded') break;
      if (r.rows[0] && ['Failed', 'Cancelled', 'Waiting'].includes(r.rows[0].state))
        throw new Error(`the migration ended ${r.rows[0].state}: ${r.rows[0].error}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const steps = await owner.query<{ name: string; ms: number }>(
      `select name, extract(epoch from ended_at - started_at) * 1000 as ms from workflow_steps where workflow_id = $1`,
      [m.id],
    );
    const ms = (name: string) => Number(steps.rows.find((s) => s.name === name)?.ms ?? 0);
    const copyMs = ms('start-replication') + ms('wait-synced');
    const freezeMs = Number(
      (await owner.query('select freeze_ms from tenant_migrations where id = $1', [m.id])).rows[0].freeze_ms,
    );
    const copy: Measurement = {
      label: `initial copy by logical replication, ${ROWS} rows (${(copyMs / 1000).toFixed(1)} s)`,
      value: ROWS / (copyMs / 1000),
      unit: 'rows/s',
    };
    console.log(
      `  copy ${copy.value.toFixed(0)} rows/s; freeze ${freezeMs} ms (sync-and-verify ${ms('sync-and-verify').toFixed(0)} ms); every row hashed before the freeze in ${ms('checksum-bulk').toFixed(0)} ms`,
    );

    // Timed: the rollback, after writes on the silo (1% of the rows inserted, updated or deleted),
    // by the same engine: every table copied back before its freeze, the changed rows inside it.
    const changed = Math.max(1, Math.round(ROWS / 100));
    await withClient(databaseUrl(dataplane, 'tenantry_bench_eu_dev_mig'), (c) =>
      c.query(`
        insert into public.orders (n, payload) select -g, 'after' from generate_series(1, ${Math.round(changed / 2)}) g;
        update public.items set note = note || '!' where id <= ${Math.round(changed / 4)};
        delete from public.events where k in (select 'e' || g from generate_series(1, ${Math.round(changed / 4)}) g);`),
    );
    const rb = await service.rollback(ctx, tenant, m.id);
    for (;;) {
      const r = await owner.query<{ state: string; error: string | null }>(
        'select state, error from workflows where id = $1',
        [rb.rollbackWorkflowId],
      );
      if (r.rows[0]?.state === 'Succeeded') break;
      if (r.rows[0] && ['Failed', 'Cancelled', 'Waiting'].includes(r.rows[0].state))
        throw new Error(`the rollback ended ${r.rows[0].state}: ${r.rows[0].error}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    await engine.stop();
    await controller.stop();
    const rbSteps = await owner.query<{ name: string; ms: number }>(
      `select name, extract(epoch from ended_at - started_at) * 1000 as ms from workflow_steps where workflow_id = $1`,
      [rb.rollbackWorkflowId],
    );
    const rbMs = (name: string) => Number(rbSteps.rows.find((s) => s.name === name)?.ms ?? 0);
    const rbFreezeMs = Number(
      (
        await owner.query(
          `select rollback_verification->>'freezeMs' as ms from tenant_migrations where id = $1`,
          [m.id],
        )
      ).rows[0].ms,
    );
    console.log(
      `  rollback: freeze ${rbFreezeMs} ms (copy-back ${rbMs('copy-back').toFixed(0)} ms, ${changed} rows changed on the silo); every table copied back and hashed before the freeze in ${rbMs('copy-back-bulk').toFixed(0)} ms`,
    );

    // Baseline: the same schema copied into a database of its own on the same server.
    const baseline = await dumpRestore(server.serverUrl, dataplane, schema, ROWS);
    console.log(`  baseline: ${baseline.label} ${baseline.value.toFixed(0)} rows/s`);
    const freeze: Measurement = {
      label: `write freeze of the migration at ${ROWS} rows: ${freezeMs} ms`,
      value: 1000 / Math.max(freezeMs, 1),
      unit: 'freezes/s',
      latencyMs: { p50: freezeMs, p99: freezeMs },
    };
    const rbFreeze: Measurement = {
      label: `write freeze of the rollback at ${ROWS} rows (${changed} changed on the silo): ${rbFreezeMs} ms`,
      value: 1000 / Math.max(rbFreezeMs, 1),
      unit: 'freezes/s',
      latencyMs: { p50: rbFreezeMs, p99: rbFreezeMs },
    };
    return [
      row(`Pool → silo copy of ${ROWS} rows vs ${baseline.label}`, copy, baseline, { ratioAtLeast: 0.5 }),
      row(`Pool → silo write freeze at ${ROWS} rows`, freeze, baseline, { p99AtMostMs: 2000 }),
      row(`Silo → pool rollback write freeze at ${ROWS} rows`, rbFreeze, baseline, { p99AtMostMs: 2000 }),
    ];
  } finally {
    await closeProviders(providers);
    await db.destroy();
    await owner.end();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * A pg_dump whose major version is at least the server's, or why there is none: TENANTRY_PG_DUMP,
 * else the PATH's, else the one scripts/pg-dump.sh fetches (pg_dump 17 from PyPI, cached).
 */
async function findPgDump(serverMajor: number): Promise<{ dump: string; restore: string } | string> {
  const usable = async (dump: string) => {
    try {
      const major = Number(/(\d+)\./.exec((await run(dump, ['--version'])).stdout)?.[1] ?? 0);
      return major >= serverMajor ? null : `${dump} is ${major}, older than the server's ${serverMajor}`;
    } catch {
      return `no ${dump}`;
    }
  };
  const pair = (dump: string) => ({
    dump,
    restore: dump.includes('/') ? path.join(path.dirname(dump), 'pg_restore') : 'pg_restore',
  });
  const named = process.env.TENANTRY_PG_DUMP ?? 'pg_dump';
  const why = await usable(named);
  if (!why) return pair(named);
  if (process.env.TENANTRY_PG_DUMP) return why;
  try {
    const fetched = (await run('bash', ['scripts/pg-dump.sh'])).stdout.trim();
    return (await usable(fetched)) ?? pair(fetched);
  } catch (e) {
    return `${why}; scripts/pg-dump.sh could not fetch one (${(e as Error).message.split('\n')[0]})`;
  }
}

/**
 * `pg_dump -Fc -n schema | pg_restore -d fresh` when a usable pg_dump is there; else the same
 * schema's DDL and a COPY TO | COPY FROM stream per table into a fresh database (the data path of
 * pg_dump | pg_restore, without its process and archive overhead).
 */
async function dumpRestore(
  serverUrl: string,
  dataplane: string,
  schema: string,
  rows: number,
): Promise<Measurement> {
  const major = await withClient(serverUrl, async (c) =>
    Number(
      (await c.query<{ v: string }>("select current_setting('server_version_num') as v")).rows[0]!.v.slice(
        0,
        -4,
      ),
    ),
  );
  const target = 'bench_migration_baseline';
  await withClient(serverUrl, (c) => c.query(`create database ${target}`));
  const targetUrl = databaseUrl(serverUrl, target);
  const tool = await findPgDump(major);
  if (typeof tool !== 'string') {
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const d = spawn(tool.dump, ['-Fc', '-n', schema, '--no-owner', '-d', dataplane], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const r = spawn(tool.restore, ['--no-owner', '-d', targetUrl], {
        stdio: ['pipe', 'inherit', 'inherit'],
      });
      d.stdout.pipe(r.stdin);
      r.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pg_restore exited ${code}`))));
      d.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`pg_dump exited ${code}`))));
    });
    const s = (performance.now() - t0) / 1000;
    return { label: 'pg_dump | pg_restore', value: rows / s, unit: 'rows/s' };
  }
  console.log(`  pg_dump | pg_restore blocked: ${tool}`);
  const t0 = performance.now();
  const tables = await withClient(dataplane, async (c) => {
    const ddl = await schemaDdl(c, schema);
    await withClient(targetUrl, (t) => createSchema(t, schema, 'postgres', ddl));
    const r = await c.query<{ t: string }>('select tablename as t from pg_tables where schemaname = $1', [
      schema,
    ]);
    return r.rows.map((x) => x.t);
  });
  await withClient(dataplane, (s) =>
    withClient(targetUrl, (t) => copyTables(s, t, { fromSchema: schema, toSchema: schema, tables })),
  );
  const s = (performance.now() - t0) / 1000;
  return { label: 'COPY TO | COPY FROM (no pg_dump 17 here)', value: rows / s, unit: 'rows/s' };
}
