/**
 * 3. Reconcile throughput: objects brought to Ready per second by one controller process
 * (`settings.connections` reconciles at once, embedded providers: blob containers on the local
 * disk), against raw single-row INSERTs with as many connections, in the same run.
 *   BENCH_RECONCILE_TENANTS (default 200): tenants × 2 deployments × 1 blob container each, so
 *   200 → 1,000 objects.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { systemContext } from '../../src/changes/request-context.js';
import { loadConfig } from '../../src/config/config.js';
import { Controller } from '../../src/controller/controller.js';
import { closeProviders, createProviders, defaultDataplaneUrl } from '../../src/controller/providers.js';
import { createDb } from '../../src/db/database.js';
import { RegistryService } from '../../src/registry/registry.service.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

const TENANTS = Number(process.env.BENCH_RECONCILE_TENANTS ?? 200);

export async function reconcileBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { ownerUrl, appUrl } = await server.createDatabase('bench_reconcile');
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-blobs-'));
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dataDir });
  const db = createDb(appUrl, settings.connections + 4);
  const owner = new pg.Pool({ connectionString: ownerUrl, max: settings.connections });
  const registry = new RegistryService(db, config);
  const ctx = systemContext('bench');
  const providers = createProviders({ config, db, dataplaneUrl: defaultDataplaneUrl(ownerUrl) });
  try {
    await registry.apply(ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Customer',
        metadata: { name: 'bench' },
        spec: { displayName: 'B', shortCode: 'bench' },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'System',
        metadata: { name: 'svc' },
        spec: { displayName: 'S', serviceId: 'svc' },
      },
    ]);
    for (let i = 0; i < TENANTS; i++) {
      const tenant = `bench-eu-dev-t${i}`;
      const docs: unknown[] = [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Tenant',
          metadata: {},
          spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `t${i}` },
        },
      ];
      for (const d of ['a', 'b']) {
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
      await registry.apply(ctx, docs);
    }
    const objects = TENANTS * 5 + 2;
    console.log(`  ${objects} objects applied; reconciling with ${settings.connections} workers`);

    const controller = new Controller({
      db,
      providers,
      logger: pino({ level: 'warn' }),
      config: { ...config.controller, workers: settings.connections, pollIntervalMs: 20 },
    });
    const started = performance.now();
    controller.start();
    const notReady = async () =>
      (
        await owner.query(`
          select (select count(*) from customers where phase <> 'Ready') + (select count(*) from systems where phase <> 'Ready')
               + (select count(*) from tenants where phase <> 'Ready') + (select count(*) from deployments where phase <> 'Ready')
               + (select count(*) from integration_resources where phase <> 'Ready') as n`)
      ).rows[0].n;
    while (Number(await notReady()) > 0) await new Promise((r) => setTimeout(r, 100));
    const seconds = (performance.now() - started) / 1000;
    await controller.stop();
    const figure: Measurement = {
      label: `all ${objects} objects Ready (${controller.processed} reconciles)`,
      value: objects / seconds,
      unit: 'objects/s',
    };
    console.log(
      `  ${objects} objects Ready in ${seconds.toFixed(1)}s: ${figure.value.toFixed(0)} objects/s, ${controller.processed} reconciles`,
    );

    // Baseline: as many raw single-row INSERTs, autocommit, with as many connections.
    await owner.query(
      'create table bench_reconcile_raw (id bigint generated always as identity primary key, data jsonb not null)',
    );
    await owner.query('grant select, insert on bench_reconcile_raw to tenantry_app');
    const pool = new pg.Pool({ connectionString: appUrl, max: settings.connections });
    let left = objects;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: settings.connections }, async () => {
        while (left-- > 0)
          await pool.query('insert into bench_reconcile_raw (data) values ($1)', ['{"n":1}']);
      }),
    );
    const baseline: Measurement = {
      label: 'raw single-row INSERT',
      value: objects / ((performance.now() - t0) / 1000),
      unit: 'rows/s',
    };
    await pool.end();
    return [
      row(`Reconcile ${objects} objects to Ready vs raw INSERT`, figure, baseline, null, 'report only'),
    ];
  } finally {
    await closeProviders(providers);
    await db.destroy();
    await owner.end();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}
