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
 * deployment or tenant), so the issue's 3 deployments × 2 topics become 4 deployments with a container
 * each and one container of the tenant's own: the same 10 objects per tenant, the same
 * tenant → deployment → resource fan-out.
 * The controller claims, reads and settles in batches (TENANTRY_CONTROLLER_BATCH, default 256;
 * src/controller/settle-batch.ts); `settings.connections` is its number of provider calls at once.
 * Cost per object is the wall time per object Ready (one controller process, the machine shared with
 * PostgreSQL); the flat-cost row compares it at the two sizes. One tenant's objects are created
 * through the registry's apply (the change path) and cloned in SQL with their reconcile jobs
 * (cloneTenantTree): applying 100k objects one change at a time took half an hour, their reconcile
 * is what is measured here (the apply path has its own row, change-path.ts).
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
    // One tenant (with its deployments and their containers) through the registry's apply, the
    // change path; the others cloned from it in SQL (cloneTenantTree).
    const t0 = performance.now();
    await registry.apply(ctx, tenantDocs(0));
    await cloneTenantTree(owner, 'bench-eu-dev-t0', tenants - 1);
    const objects = tenants * PER_TENANT + 2;
    console.log(
      `  ${objects} objects created in ${((performance.now() - t0) / 1000).toFixed(1)}s; reconciling with ${settings.connections} workers`,
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

/**
 * `count` copies of tenant `slug` and its objects (deployments, resources), each with its reconcile
 * job as the change path queued the template's (same generation and ticket; due as if each copy had
 * been applied by a change of its own, a microsecond after the one before), in one
 * statement per table and one transaction; the copy of tenant `…-t0` is `…-t<i>` (slugs, physical
 * names and specs rewritten; new ids). Every other column is copied as it is, so the clones stay
 * valid whatever columns later migrations add. The change path's history of each change (object
 * versions, audit records, events) is not copied: the reconcile reads none of it.
 */
async function cloneTenantTree(owner: pg.Pool, slug: string, count: number): Promise<void> {
  if (count <= 0) return;
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
    // The template's objects, and a new id for each in every copy.
    await client.query(
      `create temporary table clone_ids on commit drop as
         select o.kind, o.id as old_id, gen_random_uuid() as id, c.i
         from (select 'Tenant' as kind, id from tenants where slug = $1
               union all select 'Deployment', d.id from deployments d join tenants t on t.id = d.tenant_id where t.slug = $1
               union all select 'IntegrationResource', r.id from integration_resources r join tenants t on t.id = r.tenant_id where t.slug = $1) o
         cross join generate_series(1, $2::int) c(i)`,
      [slug, count],
    );
    await client.query('create index on clone_ids (old_id, i)');
    const copy = async (table: string, kind: string, set: Record<string, string>) => {
      const rest = await columns(table, Object.keys(set));
      await client.query(
        `insert into ${table} (${[...Object.keys(set), ...rest].map((c) => `"${c}"`).join(', ')})
         select ${[...Object.values(set), ...rest.map((c) => `o."${c}"`)].join(', ')}
         from ${table} o join clone_ids c on c.old_id = o.id and c.kind = '${kind}'
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
    const jobColumns = await columns('reconcile_jobs', ['object_id', 'tenant_id', 'run_after']);
    await client.query(
      `insert into reconcile_jobs (object_id, tenant_id, run_after, ${jobColumns.map((c) => `"${c}"`).join(', ')})
       select c.id, ct.id, now() - make_interval(secs => ($1::int - c.i) / 1e6),
         ${jobColumns.map((c) => `j."${c}"`).join(', ')}
       from reconcile_jobs j join clone_ids c on c.old_id = j.object_id and c.kind = j.object_kind
       join clone_ids ct on ct.old_id = j.tenant_id and ct.i = c.i`,
      [count],
    );
    await client.query('commit');
    for (const table of ['tenants', 'deployments', 'integration_resources', 'reconcile_jobs'])
      await client.query(`vacuum analyze ${table}`);
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
