/**
 * 1. Change-path transactions per second against raw single-row INSERTs, on the same embedded
 * PostgreSQL, as the same application role, with the same number of connections.
 */

import pg from 'pg';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { createDb } from '../../src/db/database.js';
import { RegistryService } from '../../src/registry/registry.service.js';
import { closedLoop, compare } from '../lib/load.js';
import { BENCH_CUSTOMER } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

export interface ChangePathResult {
  rows: Row[];
  rawInsert: Measurement;
}

export async function changePathBenchmark(server: BenchPostgres): Promise<ChangePathResult> {
  const { ownerUrl, appUrl } = await server.createDatabase('bench_change_path');
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  try {
    await owner.query(
      `create table bench_raw_insert (
         id bigint generated always as identity primary key,
         tenant_id uuid not null,
         data jsonb not null,
         created_at timestamptz not null default now())`,
    );
    await owner.query('grant select, insert on bench_raw_insert to tenantry_app');
  } finally {
    await owner.end();
  }

  // (a) Raw: one autocommit single-row INSERT per transaction, straight through the driver.
  const pool = new pg.Pool({ connectionString: appUrl, max: settings.connections });
  pool.on('error', () => undefined);
  let seq = 0;
  const raw = closedLoop('raw single-row INSERT (autocommit)', async (w) => {
    await pool.query('insert into bench_raw_insert (tenant_id, data) values (gen_random_uuid(), $1)', [
      JSON.stringify({ worker: w, n: seq++ }),
    ]);
  });

  // (b) The change path: RegistryService.apply of one Tenant manifest per transaction. Every worker
  // owns a tenant and sets a new label value each time, so every apply is a real change (generation
  // + 1, lineage, hash-chained audit record, outbox event, reconcile job) and workers never wait on
  // each other's row or audit-chain locks.
  const db = createDb(appUrl, settings.connections);
  const registry = createRegistry(db, loadConfig({}, {}));
  const ctx = systemContext('bench');
  const tenant = (w: number, labels: Record<string, string> = {}) => ({
    apiVersion: 'tenantry.dev/v1',
    kind: 'Tenant',
    metadata: { labels },
    spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `w${w}` },
  });
  let n = 0;
  let notChanged = 0;
  const change = closedLoop('change path (RegistryService.apply, one tenant change)', async (w) => {
    const [outcome] = await registry.apply(ctx, [tenant(w, { n: String(n++) })]);
    if (outcome?.action !== 'configured') notChanged++;
  });

  try {
    await registry.apply(ctx, [
      BENCH_CUSTOMER,
      ...Array.from({ length: settings.connections }, (_, w) => tenant(w)),
    ]);
    const [changeTps, rawTps] = await compare(change, raw);
    if (notChanged > 0) throw new Error(`${notChanged} applies were not real changes`);
    return {
      rawInsert: rawTps,
      rows: [
        row(
          'Change path (RegistryService.apply) vs raw INSERT',
          changeTps,
          rawTps,
          null,
          'report only (HTTP goal >= 40%)',
        ),
      ],
    };
  } finally {
    await db.destroy();
    await pool.end();
  }
}
