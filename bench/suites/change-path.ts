/**
 * 1. Change-path transactions per second against raw single-row INSERTs, on the same embedded
 * PostgreSQL, as the same application role, with the same number of connections. Then (issue 17)
 * the same number of writers, each changing its own Deployment, all in one tenant against one tenant
 * each: the change path must not serialise one tenant's changes.
 */

import pg from 'pg';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { createDb } from '../../src/db/database.js';
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

  // (c) Issue 17: every worker changes its own Deployment (a new label value each time), all of them
  // in one tenant (`bench-eu-dev-one`) against each in a tenant of its own (the tenants of (b)).
  const deployment = (tenantSlug: string, d: number, labels: Record<string, string> = {}) => ({
    apiVersion: 'tenantry.dev/v1',
    kind: 'Deployment',
    metadata: { labels },
    spec: { tenant: tenantSlug, system: 'svc', qualifier: `d${d}` },
  });
  const deploymentLoad = (label: string, target: (w: number) => [string, number]) =>
    closedLoop(label, async (w) => {
      const [slug, d] = target(w);
      const [outcome] = await registry.apply(ctx, [deployment(slug, d, { n: String(n++) })]);
      if (outcome?.action !== 'configured') notChanged++;
    });
  const oneTenant = deploymentLoad(
    `change path, ${settings.connections} writers on one tenant (a Deployment each)`,
    (w) => ['bench-eu-dev-one', w],
  );
  const ownTenants = deploymentLoad(
    `change path, ${settings.connections} writers on ${settings.connections} tenants (a Deployment each)`,
    (w) => [`bench-eu-dev-w${w}`, 0],
  );

  try {
    await registry.apply(ctx, [
      BENCH_CUSTOMER,
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'System',
        metadata: { name: 'svc' },
        spec: { displayName: 'Svc', serviceId: 'svc' },
      },
      ...Array.from({ length: settings.connections }, (_, w) => tenant(w)),
      { ...tenant(0), spec: { ...tenant(0).spec, qualifier: 'one' } },
    ]);
    await registry.apply(ctx, [
      ...Array.from({ length: settings.connections }, (_, w) => deployment(`bench-eu-dev-w${w}`, 0)),
      ...Array.from({ length: settings.connections }, (_, w) => deployment('bench-eu-dev-one', w)),
    ]);
    const [changeTps, rawTps] = await compare(change, raw);
    const [oneTps, ownTps] = await compare(oneTenant, ownTenants);
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
        row(
          `Change path: ${settings.connections} writers on one tenant vs on ${settings.connections} tenants`,
          oneTps,
          ownTps,
          { ratioAtLeast: 0.8 },
        ),
      ],
    };
  } finally {
    await db.destroy();
    await pool.end();
  }
}
