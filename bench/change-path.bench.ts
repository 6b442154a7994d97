/**
 * Change-path transactions per second against a raw single-row INSERT loop, on the same embedded
 * PostgreSQL, with the same number of connections, in the same run. Prints the ratio.
 *   npm run bench
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import { systemContext } from '../src/changes/request-context.js';
import { loadConfig } from '../src/config/config.js';
import { createDb, ensureAppRole, migrate } from '../src/db/database.js';
import { EmbeddedDatabase } from '../src/db/embedded-postgres.js';
import { RegistryService } from '../src/registry/registry.service.js';

const WORKERS = 8;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);

async function measure(label: string, op: (worker: number, i: number) => Promise<void>): Promise<number> {
  const warmEnd = Date.now() + 2000;
  await Promise.all(
    Array.from({ length: WORKERS }, async (_, w) => {
      for (let i = 0; Date.now() < warmEnd; i++) await op(w, -i - 1);
    }),
  );
  let done = 0;
  const end = Date.now() + SECONDS * 1000;
  const start = Date.now();
  await Promise.all(
    Array.from({ length: WORKERS }, async (_, w) => {
      for (let i = 0; Date.now() < end; i++) {
        await op(w, i);
        done++;
      }
    }),
  );
  const tps = done / ((Date.now() - start) / 1000);
  console.log(`${label.padEnd(44)} ${tps.toFixed(0).padStart(8)} tx/s`);
  return tps;
}

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-'));
await fs.chmod(dir, 0o755);
const embedded = new EmbeddedDatabase({
  clusterDir: path.join(dir, 'pg'),
  credentialsFile: path.join(dir, 'pw'),
});
await embedded.start();
try {
  const admin = new pg.Client({ connectionString: embedded.url });
  await admin.connect();
  await admin.query('create database bench');
  await admin.end();
  const url = new URL(embedded.url);
  url.pathname = '/bench';
  await migrate(url.toString());
  const owner = new pg.Client({ connectionString: url.toString() });
  await owner.connect();
  await owner.query(
    'create table raw_insert (id bigint generated always as identity primary key, tenant_id uuid not null, data jsonb not null)',
  );
  await owner.query('grant insert, select on raw_insert to tenantry_app');
  await owner.end();
  const appUrl = await ensureAppRole(url.toString());
  const db = createDb(appUrl, WORKERS);
  const config = loadConfig({}, {});
  const registry = new RegistryService(db, config);
  const ctx = systemContext('bench');
  await registry.apply(ctx, [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Customer',
      metadata: { name: 'bench' },
      spec: { displayName: 'Bench', shortCode: 'bench' },
    },
  ]);
  for (let w = 0; w < WORKERS; w++) {
    await registry.apply(ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: {},
        spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `w${w}` },
      },
    ]);
  }

  console.log(`${WORKERS} connections, ${SECONDS}s each after a 2s warm-up, fsync on (durable commits)`);
  const raw = await measure('raw single-row INSERT (autocommit)', async (w, i) => {
    await sql`insert into raw_insert (tenant_id, data) values (gen_random_uuid(), ${JSON.stringify({ w, i })})`.execute(
      db,
    );
  });
  // Each apply is a real change: a new label value → generation + 1, lineage, audit, outbox, job.
  const change = await measure('change path (apply one tenant change)', async (w, i) => {
    await registry.apply(ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: { labels: { n: String(i) } },
        spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `w${w}` },
      },
    ]);
  });
  console.log(
    `ratio change path / raw INSERT: ${((change / raw) * 100).toFixed(1)}%  (goal for the full HTTP path later: >= 40%)`,
  );
  await db.destroy();
} finally {
  await embedded.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
