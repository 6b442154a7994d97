/**
 * 5. Reconcile throughput (issue 24: 10k tenants × 3 deployments × 2 topics = 100k objects Ready in
 * <= 60 s, and the cost per object flat within ±20% from 1k to 100k objects): objects brought to
 * Ready per second by one controller process (`settings.connections` reconciles at once), at two
 * sizes, each in a database of its own, beside raw single-row INSERTs with as many connections
 * measured in the same run.
 *   BENCH_RECONCILE_TENANTS (default 100) and BENCH_RECONCILE_LARGE_TENANTS (default 10,000; 0 skips
 *   it): 10 objects per tenant, so 100 → 1,002 objects, 10,000 → 100,002.
 * The resources are blob containers on their provider's embedded target (folders on the local disk),
 * so the figure is the control plane's own cost; topics are counted separately: a topic on a real
 * broker costs what the Kafka suite (`npm run bench -- kafka`) measures, and a single-node broker on
 * this machine holds nowhere near 60k topics. A blob container's name is its scope's (one per
 * deployment or tenant), so the 3 deployments × 2 topics become 4 deployments with a container
 * each and one container of the tenant's own: the same 10 objects per tenant, the same
 * tenant → deployment → resource fan-out.
 * The controller claims, reads and settles in batches (TENANTRY_CONTROLLER_BATCH, default 256;
 * src/controller/settle-batch.ts); `settings.connections` is its number of provider calls at once.
 * Cost per object is the wall time per object Ready (one controller process, the machine shared with
 * PostgreSQL); the flat-cost row compares it at the two sizes. The objects are created through the
 * registry's apply (the change path), which at 100k objects takes far longer than their reconcile.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { Controller } from '../../src/controller/controller.js';
import { closeProviders, createProviders, defaultDataplaneUrl } from '../../src/controller/providers.js';
import { createDb } from '../../src/db/database.js';
import { closedLoop, measure } from '../lib/load.js';
import { BENCH_CUSTOMER } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

const SMALL = Number(process.env.BENCH_RECONCILE_TENANTS ?? 100);
const LARGE = Number(process.env.BENCH_RECONCILE_LARGE_TENANTS ?? 10_000);
const DEPLOYMENTS = ['a', 'b', 'c', 'd'];
/** Objects of one tenant: itself, its deployments, their containers and its own container. */
const PER_TENANT = 1 + DEPLOYMENTS.length * 2 + 1;

export async function reconcileBenchmark(server: BenchPostgres): Promise<Row[]> {
  const small = await reconcileAll(server, 'bench_reconcile_small', SMALL);
  const large = LARGE > 0 ? await reconcileAll(server, 'bench_reconcile_large', LARGE) : undefined;
  const baseline = await rawInserts(server);
  const rows = [
    row(`Reconcile ${small.objects} objects to Ready vs raw INSERT`, small, baseline, null, 'report only'),
  ];
  if (large) {
    rows.push(
      row(`Reconcile ${large.objects} objects to Ready vs raw INSERT`, large, baseline, {
        valueAtLeast: Math.ceil(large.objects / 60),
      }),
      row(`Reconcile rate at ${large.objects} vs ${small.objects} objects (flat cost)`, large, small, {
        ratioAtLeast: 0.8,
      }),
    );
  }
  return rows;
}

async function reconcileAll(
  server: BenchPostgres,
  database: string,
  tenants: number,
): Promise<Measurement & { objects: number }> {
  const { ownerUrl, appUrl } = await server.createDatabase(database);
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-blobs-'));
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dataDir });
  const db = createDb(appUrl, settings.connections + 4);
  const owner = new pg.Pool({ connectionString: ownerUrl, max: 2 });
  const registry = createRegistry(db, config);
  const ctx = systemContext('bench');
  const providers = createProviders({ config, db, dataplaneUrl: defaultDataplaneUrl(ownerUrl) });
  try {
    await registry.apply(ctx, [
      BENCH_CUSTOMER,
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'System',
        metadata: { name: 'svc' },
        spec: { displayName: 'S', serviceId: 'svc' },
      },
    ]);
    // Ten tenants (each with its deployments and their containers) per apply, on as many connections.
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: settings.connections }, async () => {
        for (let i = next; i < tenants; i = next) {
          next += 10;
          const docs: unknown[] = [];
          for (let j = i; j < Math.min(i + 10, tenants); j++) docs.push(...tenantDocs(j));
          await registry.apply(ctx, docs);
        }
      }),
    );
    const objects = tenants * PER_TENANT + 2;
    console.log(
      `  ${objects} objects applied in ${((performance.now() - t0) / 1000).toFixed(0)}s; reconciling with ${settings.connections} workers`,
    );

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
    await closeProviders(providers);
    await db.destroy();
    await owner.end();
    await fs.rm(dataDir, { recursive: true, force: true });
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
