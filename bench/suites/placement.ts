/**
 * 3. Cost of placement and quota policy on the apply path (issue 8), same run, same connections:
 *   - Deployment creates on tenants whose plan has quotas (usage-row lock + counts + usage history)
 *     vs Deployment creates on tenants without a plan (no quota work), in one database;
 *   - Tenant creates placed into cells (cell row locks + allocation) vs Tenant creates in a database
 *     that declares no cells (unplaced).
 * Every worker owns its tenants, so the figures measure the checks, not waiting on one another.
 */

import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { createDb } from '../../src/db/database.js';
import { closedLoop, compare } from '../lib/load.js';
import { manifest as doc } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

const base = [
  doc('Customer', 'bench', { displayName: 'Bench', shortCode: 'bench' }),
  doc('System', 'app', { displayName: 'App', serviceId: '1' }),
];
const topology = [
  doc('Region', 'eu', { displayName: 'EU' }),
  doc('Cell', 'eu-dev-1', {
    region: 'eu',
    stage: 'dev',
    environmentTypes: ['dev', 'qa'],
    tenancy: 'shared',
    capacity: { tenants: 1_000_000 },
  }),
  doc('Plan', 'metered', {
    displayName: 'Metered',
    isolationModels: ['shared', 'pool'],
    quotas: { deployments: 1_000_000_000, integrationResources: 1_000_000_000 },
  }),
];
const tenant = (qualifier: string, env: string, plan?: string) =>
  doc('Tenant', undefined, {
    customer: 'bench',
    region: 'eu',
    environmentType: env,
    qualifier,
    ...(plan ? { plan } : {}),
  });

export async function placementBenchmark(server: BenchPostgres): Promise<Row[]> {
  const on = await server.createDatabase('bench_placement_on');
  const off = await server.createDatabase('bench_placement_off');
  const dbOn = createDb(on.appUrl, settings.connections);
  const dbOff = createDb(off.appUrl, settings.connections);
  const config = loadConfig({}, {});
  const rOn = createRegistry(dbOn, config);
  const rOff = createRegistry(dbOff, config);
  const ctx = systemContext('bench');
  try {
    await rOn.apply(ctx, [
      ...base,
      ...topology,
      ...Array.from({ length: settings.connections }, (_, w) => tenant(`q${w}`, 'dev', 'metered')),
      ...Array.from({ length: settings.connections }, (_, w) => tenant(`f${w}`, 'dev')),
    ]);
    await rOff.apply(ctx, base);

    let n = 0;
    const deploy = (plan: 'q' | 'f') => async (w: number) => {
      const [o] = await rOn.apply(ctx, [
        doc('Deployment', undefined, {
          tenant: `bench-eu-dev-${plan}${w}`,
          system: 'app',
          qualifier: `d${n++}`,
        }),
      ]);
      if (o?.action !== 'created') throw new Error('not created');
    };
    const [withQuota, withoutQuota] = await compare(
      closedLoop('Deployment create, plan quotas checked', deploy('q')),
      closedLoop('Deployment create, no plan', deploy('f')),
    );

    let m = 0;
    const [placed, unplaced] = await compare(
      closedLoop('Tenant create, placed in a cell', async () => {
        const [o] = await rOn.apply(ctx, [tenant(`p${m++}`, 'qa', 'metered')]);
        if (!o?.placement) throw new Error('not placed');
      }),
      closedLoop('Tenant create, no cells declared', async () => {
        const [o] = await rOff.apply(ctx, [tenant(`p${m++}`, 'qa')]);
        if (o?.placement !== null) throw new Error('placed');
      }),
    );
    return [
      row(
        'Apply: Deployment create with quota check vs without',
        withQuota,
        withoutQuota,
        null,
        'report only',
      ),
      row('Apply: Tenant create with placement vs unplaced', placed, unplaced, null, 'report only'),
    ];
  } finally {
    await dbOn.destroy();
    await dbOff.destroy();
  }
}
