/**
 * 9. Memory: the resident set size of one Tenantry server as users run it (`npm start`: the
 * compiled build, `node bin/tenantry.js serve`, API and controller) whose registry holds
 * BENCH_MEMORY_TENANTS (default 100,000) Ready tenants, against the same server on a registry of
 * one tenant, both under the same load in the same run:
 *   - a full listing, page by page (GET /v1/tenants?limit=500 and its cursors);
 *   - 5 seconds of GET /v1/tenants/{slug} spread over every tenant (autocannon);
 * while the controller runs with every tenant's job waiting for its next resync.
 * The RSS is sampled every 100 ms; the figure is the peak (the peak by the end of the listing is printed too). Memory that grows with the registry
 * (an unbounded cache, a listing held whole) shows as a ratio well above 1; the issue's ceiling is
 * 300 MB (286 MiB) with 100k tenants. Not under tsx: its loader thread alone is ~110 MiB.
 *
 * The tenants are cloned in SQL from one created through the API and reconciled to Ready (the
 * change path would take minutes for 100k), with the template's status, so the registry looks as
 * it would after they were all applied and reconciled.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../../src/config/config.js';
import { BuiltinIssuer, defaultTokenKeyFile } from '../../src/identity/builtin-issuer.js';
import { httpLoad } from '../lib/load.js';
import { BENCH_CUSTOMER, benchTenant } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';
import { post } from './http.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** 300 MB, the issue's ceiling, in MiB (the unit of the figures). */
const CEILING_MIB = 300e6 / 1024 / 1024;

const TENANTS = Number(process.env.BENCH_MEMORY_TENANTS ?? 100_000);

export async function memoryBenchmark(server: BenchPostgres): Promise<Row[]> {
  // The build users run (`npm start` builds it too).
  await promisify(execFile)('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT });
  const small = await rssUnderLoad(server, 'bench_memory_one', 1);
  const large = await rssUnderLoad(server, 'bench_memory_many', TENANTS);
  const label = `Server RSS with ${TENANTS.toLocaleString('en-US')} tenants`;
  return [
    row(`${label} vs 1 tenant`, large, small, { ratioAtMost: 1.5 }),
    row(`${label} (ceiling 300 MB = 286 MiB)`, large, small, { valueAtMost: CEILING_MIB }),
  ];
}

/** `node bin/tenantry.js serve` on a free loopback port over `ownerUrl`; resolves once /readyz answers 200. */
async function startServer(ownerUrl: string, dataDir: string): Promise<{ child: ChildProcess; url: string }> {
  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const a = probe.address();
      probe.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
  await fs.mkdir(dataDir, { recursive: true });
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'tenantry.js'), 'serve'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DATABASE_URL: ownerUrl,
      TENANTRY_PORT: String(port),
      TENANTRY_HOST: '127.0.0.1',
      TENANTRY_DATA_DIR: dataDir,
      TENANTRY_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}`);
    const ok = await fetch(`${url}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { child, url };
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('the server did not become ready in 120 s');
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

async function rssUnderLoad(server: BenchPostgres, database: string, tenants: number): Promise<Measurement> {
  const { ownerUrl } = await server.createDatabase(database);
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  const dataDir = path.join(server.dir, database);
  const { child, url: tenantryUrl } = await startServer(ownerUrl, dataDir);
  // A platform-admin token of the server's built-in issuer (its key is in the data folder).
  const { identity } = loadConfig({ dataDir }, {});
  const issuer = await BuiltinIssuer.load(
    identity.issuer ?? 'urn:tenantry:local',
    identity.audience,
    defaultTokenKeyFile(dataDir),
  );
  const token = await issuer.mint({ subject: 'bench', roles: ['platform-admin'], sessionId: null });
  const authorization = `Bearer ${token}`;
  let peak = 0;
  const sample = async () => {
    peak = Math.max(peak, await rssOf(child));
  };
  // One sample at a time: a server too busy to answer at once is not asked again meanwhile.
  let sampling = false;
  const sampler = setInterval(() => {
    if (sampling) return;
    sampling = true;
    void sample()
      .catch(() => undefined)
      .finally(() => {
        sampling = false;
      });
  }, 100);
  try {
    await post(`${tenantryUrl}/v1/apply`, token, [BENCH_CUSTOMER, benchTenant('m0')]);
    const deadline = Date.now() + 60_000;
    const phase = async () =>
      (await owner.query<{ phase: string }>(`select phase from tenants where slug = 'bench-eu-dev-m0'`))
        .rows[0]?.phase;
    while ((await phase()) !== 'Ready') {
      if (Date.now() > deadline) throw new Error('the template tenant did not become Ready in 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    if (tenants > 1) await cloneTenants(owner, 'bench-eu-dev-m0', tenants - 1);
    const baseline = await rssOf(child);

    // A full listing, page by page.
    let cursor: string | null = null;
    let listed = 0;
    do {
      const res = await fetch(`${tenantryUrl}/v1/tenants?limit=500${cursor ? `&cursor=${cursor}` : ''}`, {
        headers: { authorization },
      });
      if (!res.ok) throw new Error(`GET /v1/tenants: ${res.status} ${await res.text()}`);
      const page = (await res.json()) as { items: unknown[]; nextCursor: string | null };
      listed += page.items.length;
      cursor = page.nextCursor;
    } while (cursor);
    if (listed !== tenants) throw new Error(`listed ${listed} tenants, expected ${tenants}`);
    await sample();
    const afterListing = peak;

    // Reads spread over every tenant.
    let n = 0;
    await httpLoad('GET /v1/tenants/{slug}, every tenant in turn', tenantryUrl, {
      requests: [
        {
          method: 'GET',
          headers: { authorization },
          setupRequest: (req) => ({ ...req, path: `/v1/tenants/bench-eu-dev-m${n++ % tenants}` }),
        },
      ],
    }).run(Math.min(settings.seconds, 5));
    await sample();
    const mib = (b: number) => b / 1024 / 1024;
    const m: Measurement = {
      label: `peak RSS, ${tenants.toLocaleString('en-US')} tenant${tenants === 1 ? '' : 's'}`,
      value: mib(peak),
      unit: 'MiB',
    };
    console.log(
      `  ${m.label}: ${m.value.toFixed(0)} MiB (${mib(baseline).toFixed(0)} MiB before the load, ${mib(afterListing).toFixed(0)} MiB peak by the end of the listing; ${n} reads)`,
    );
    return m;
  } finally {
    clearInterval(sampler);
    await stopServer(child);
    await owner.end();
  }
}

/** The resident set size of a process, in bytes (Linux: /proc; elsewhere: ps). */
async function rssOf(child: ChildProcess): Promise<number> {
  if (!child.pid) throw new Error('the server process is gone');
  const status = await fs.readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => null);
  const kb = status
    ? Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1])
    : Number((await promisify(execFile)('ps', ['-o', 'rss=', '-p', String(child.pid)])).stdout.trim());
  if (!Number.isFinite(kb)) throw new Error('could not read the server RSS');
  return kb * 1024;
}

/**
 * `count` copies of tenant `slug` (qualifiers m1..m<count>), with its status and its reconcile job
 * (whose next run is the template's next resync), in one statement per table. Every other column is
 * copied as it is, so the clones stay valid whatever columns later migrations add.
 */
export async function cloneTenants(owner: pg.Client, slug: string, count: number): Promise<void> {
  const { rows } = await owner.query<{ column_name: string }>(
    `select column_name from information_schema.columns
     where table_schema = 'public' and table_name = 'tenants'
       and column_name not in ('id', 'slug', 'qualifier', 'spec') order by ordinal_position`,
  );
  const cols = rows.map((r) => `"${r.column_name}"`).join(', ');
  const t0 = performance.now();
  await owner.query('begin');
  await owner.query(
    `create temporary table clones on commit drop as
       select gen_random_uuid() as id, i from generate_series(1, $1::int) i`,
    [count],
  );
  await owner.query(
    `insert into tenants (id, slug, qualifier, spec, ${cols})
     select c.id, 'bench-eu-dev-m' || c.i, 'm' || c.i, t.spec || jsonb_build_object('qualifier', 'm' || c.i), ${cols
       .split(', ')
       .map((c) => `t.${c}`)
       .join(', ')}
     from tenants t cross join clones c where t.slug = $1`,
    [slug],
  );
  await owner.query(
    `insert into reconcile_jobs (object_kind, object_id, tenant_id, generation, run_after)
     select 'Tenant', c.id, c.id, j.generation, j.run_after
     from reconcile_jobs j join tenants t on j.object_kind = 'Tenant' and j.object_id = t.id
     cross join clones c where t.slug = $1`,
    [slug],
  );
  await owner.query('commit');
  await owner.query('vacuum analyze tenants');
  await owner.query('vacuum analyze reconcile_jobs');
  console.log(
    `  cloned ${count.toLocaleString('en-US')} tenants in ${((performance.now() - t0) / 1000).toFixed(1)}s`,
  );
}
