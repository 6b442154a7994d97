import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type TestController, until } from '../../test/helpers/controller.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { createDb } from '../db/database.js';
import type { RegistryService } from '../registry/registry.service.js';

/**
 * Issue 15: a `deadlock detected` while reconciling a Deployment under two controllers. Two
 * controllers on one database reconcile tenants, deployments and their resources while the same
 * tenants are applied (changes through the change path); PostgreSQL must detect no deadlock.
 * Status writes take their tenant's write lock exclusive, then lock a child's row, the parents'
 * reconcile jobs (tenant before deployment) and its own job; the change path takes the same lock
 * shared before each object's row and job; both number their events at commit (the stream's
 * counter is the last lock taken); so no two orders cross (src/changes/tenant-write-lock.ts).
 */
let t: TestDatabase;
let registry: RegistryService;
const ctx = systemContext('test-operator');

beforeAll(async () => {
  t = await createTestDatabase();
  registry = createRegistry(t.db, t.config);
  await registry.apply(ctx, [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Customer',
      metadata: { name: 'dl' },
      spec: { displayName: 'D', shortCode: 'dl' },
    },
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'System',
      metadata: { name: 'svc' },
      spec: { displayName: 'S', serviceId: 'svc' },
    },
  ]);
});
afterAll(async () => t?.destroy());

/** One tenant, `deployments` deployments, each with a blob container, and one of the tenant's; `label` changes every doc. */
function tenantDocs(i: number, deployments: number, label: string): unknown[] {
  const tenant = `dl-eu-dev-t${i}`;
  const labels = { round: label };
  const docs: unknown[] = [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Tenant',
      metadata: { labels },
      spec: { customer: 'dl', region: 'eu', environmentType: 'dev', qualifier: `t${i}` },
    },
  ];
  for (let d = 0; d < deployments; d++) {
    const deployment = `${tenant}-svc-d${d}`;
    docs.push({
      apiVersion: 'tenantry.dev/v1',
      kind: 'Deployment',
      metadata: { labels },
      spec: { tenant, system: 'svc', qualifier: `d${d}` },
    });
    docs.push({
      apiVersion: 'tenantry.dev/v1',
      kind: 'IntegrationResource',
      metadata: { labels },
      spec: { scope: { deployment }, type: 'blob-container' },
    });
  }
  docs.push({
    apiVersion: 'tenantry.dev/v1',
    kind: 'IntegrationResource',
    metadata: { labels },
    spec: { scope: { tenant }, type: 'blob-container' },
  });
  return docs;
}

const deadlocks = async () => {
  const r = await t.owner.query<{ n: string }>(
    `select deadlocks::text as n from pg_stat_database where datname = current_database()`,
  );
  return Number(r.rows[0]?.n ?? 0);
};

describe('two controllers and concurrent applies', () => {
  it('reconcile many deployments without a deadlock', { timeout: 180_000 }, async () => {
    const logged: string[] = [];
    const logger = pino(
      { level: 'info' },
      { write: (line: string) => void (/deadlock/i.test(line) && logged.push(line)) },
    );
    const before = await deadlocks();
    // The applies run over a pool of their own, closed at the end: a backend's statistics (its
    // deadlocks) reach pg_stat_database at the latest when it exits.
    const applyDb = createDb(t.appUrl, 10, { platformUrl: t.platformUrl });
    const applier = createRegistry(applyDb, t.config);
    const TENANTS = 8;
    const DEPLOYMENTS = 4;
    for (let i = 0; i < TENANTS; i++) await applier.apply(ctx, tenantDocs(i, DEPLOYMENTS, 'r0'));
    const controllers: TestController[] = [];
    for (let c = 0; c < 2; c++)
      controllers.push(await startController(t, { controller: { workers: 4, leaseMs: 5_000 }, logger }));
    try {
      // Changes keep arriving while the controllers write status: every object changes 3 times.
      for (let round = 1; round <= 3; round++)
        await Promise.all(
          Array.from({ length: TENANTS }, (_, i) =>
            applier.apply(ctx, tenantDocs(i, DEPLOYMENTS, `r${round}`)),
          ),
        );
      await until(
        'all Ready at the last generation',
        async () => {
          const r = await t.owner.query<{ n: number }>(
            `select (select count(*)::int from tenants where slug like 'dl-eu-dev-%' and (phase <> 'Ready' or observed_generation <> generation))
                  + (select count(*)::int from deployments where slug like 'dl-eu-dev-%' and (phase <> 'Ready' or observed_generation <> generation))
                  + (select count(*)::int from integration_resources where slug like 'dl-eu-dev-%' and (phase <> 'Ready' or observed_generation <> generation)) as n`,
          );
          return r.rows[0]?.n === 0;
        },
        150_000,
      );
    } finally {
      for (const c of controllers) await c.stop();
      await applyDb.destroy();
    }
    await new Promise((r) => setTimeout(r, 1_500));
    expect(logged, logged.join('\n')).toEqual([]);
    expect(await deadlocks()).toBe(before);
  });
});
