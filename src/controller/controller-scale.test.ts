import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countingProvider, readCalls } from '../../test/fixtures/counting-provider.js';
import { startController, type TestController, tempDataDir, until } from '../../test/helpers/controller.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import type { RegistryService } from '../registry/registry.service.js';

let t: TestDatabase;
let registry: RegistryService;
const ctx = systemContext('test-operator');
const ROOT = path.resolve(import.meta.dirname, '../..');

beforeAll(async () => {
  t = await createTestDatabase();
  registry = createRegistry(t.db, t.config);
  await registry.apply(ctx, [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Customer',
      metadata: { name: 'scale' },
      spec: { displayName: 'S', shortCode: 'scale' },
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

/** `tenants` tenants × `deployments` deployments, each with a blob container. */
async function applyMany(prefix: string, tenants: number, deployments: number): Promise<number> {
  for (let i = 0; i < tenants; i++) {
    const tenant = `scale-eu-dev-${prefix}${i}`;
    const docs: unknown[] = [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: {},
        spec: { customer: 'scale', region: 'eu', environmentType: 'dev', qualifier: `${prefix}${i}` },
      },
    ];
    for (let d = 0; d < deployments; d++) {
      docs.push(
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Deployment',
          metadata: {},
          spec: { tenant, system: 'svc', qualifier: `d${d}` },
        },
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'IntegrationResource',
          metadata: {},
          spec: { scope: { deployment: `${tenant}-svc-d${d}` }, type: 'blob-container' },
        },
      );
    }
    await registry.apply(ctx, docs);
  }
  return tenants * deployments;
}

const notReady = async (prefix: string) => {
  const r = await t.owner.query(
    `select (select count(*)::int from tenants where slug like $1 and phase <> 'Ready')
          + (select count(*)::int from deployments where slug like $1 and phase <> 'Ready')
          + (select count(*)::int from integration_resources where slug like $1 and phase <> 'Ready') as n`,
    [`scale-eu-dev-${prefix}%`],
  );
  return r.rows[0].n as number;
};

describe('horizontal scale', () => {
  it('three controllers on one database: every container ensured exactly once, never two at a time', async () => {
    const n = await applyMany('a', 6, 10);
    const dataDir = await tempDataDir();
    const log = path.join(dataDir, 'calls.log');
    const controllers: TestController[] = [];
    for (let i = 0; i < 3; i++) {
      controllers.push(
        await startController(t, {
          dataDir,
          // Batches of 8: the 126 objects are claimed by all three, not by the first in one batch.
          controller: { workers: 4, leaseMs: 2_000, batchSize: 8 },
          providers: (p) => {
            const slot = p['blob-container'];
            if (!('provider' in slot)) throw new Error('no blob provider');
            return { 'blob-container': { provider: countingProvider(slot.provider, log, 20) } };
          },
        }),
      );
    }
    try {
      await until('all Ready', async () => (await notReady('a')) === 0, 60_000);
      const calls = readCalls(log);
      const starts = calls.filter((c) => c.event === 'ensure-start');
      expect(starts.length).toBe(n);
      expect(new Set(starts.map((c) => c.id)).size).toBe(n);
      expect(controllers.every((c) => c.controller.processed > 0)).toBe(true);
      expect(
        fs.readdirSync(path.join(dataDir, 'blobs')).filter((d) => d.startsWith('scale-eu-dev-a')),
      ).toHaveLength(n);
    } finally {
      for (const c of controllers) await c.stop();
    }
  });

  it('SIGKILL of worker processes mid-flight: every object ends Ready, nothing provisioned twice, no job lost', {
    timeout: 120_000,
  }, async () => {
    const n = await applyMany('k', 6, 10);
    const dataDir = await tempDataDir();
    const log = path.join(dataDir, 'calls.log');
    const spawnWorker = () =>
      new Promise<ChildProcess>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/controller-process.ts'], {
          cwd: ROOT,
          env: {
            ...process.env,
            APP_URL: t.appUrl,
            PLATFORM_URL: t.platformUrl,
            DATA_DIR: dataDir,
            CALL_LOG: log,
            ENSURE_DELAY_MS: '200',
          },
          stdio: ['pipe', 'pipe', 'ignore'],
        });
        child.stdout?.once('data', () => resolve(child));
        child.once('error', reject);
        child.once('exit', (code) => reject(new Error(`worker exited early (${code})`)));
      });
    const workers = await Promise.all([spawnWorker(), spawnWorker(), spawnWorker()]);
    const killed: number[] = [];
    try {
      // Kill a worker as soon as it is inside an ensure, twice, replacing it each time.
      for (let round = 0; round < 2; round++) {
        const victim = await until(
          'a worker mid-ensure',
          async () => {
            const calls = readCalls(log);
            const open = calls.filter(
              (c) =>
                c.event === 'ensure-start' &&
                !calls.some((e) => e.event === 'ensure-end' && e.id === c.id && e.pid === c.pid),
            );
            return workers.find((w) => w.exitCode === null && open.some((c) => c.pid === w.pid));
          },
          30_000,
        );
        victim.kill('SIGKILL');
        killed.push(victim.pid!);
        workers.push(await spawnWorker());
      }
      await until('all Ready after the crashes', async () => (await notReady('k')) === 0, 90_000);
      // Only this test's objects: on a loaded machine the first test's containers can come due for
      // their resync meanwhile, and these workers rightly ensure them once more.
      const mine = new Set(
        (
          await t.owner.query<{ id: string }>(
            `select id from integration_resources where slug like 'scale-eu-dev-k%'`,
          )
        ).rows.map((r) => r.id),
      );
      const calls = readCalls(log).filter((c) => mine.has(c.id));
      const byId = new Map<string, typeof calls>();
      for (const c of calls.filter((c) => c.event === 'ensure-start'))
        byId.set(c.id, [...(byId.get(c.id) ?? []), c]);
      expect(byId.size).toBe(n);
      for (const [, starts] of byId) {
        // A second ensure only ever follows one a killed worker could not finish.
        if (starts.length > 1) {
          expect(starts.length).toBe(2);
          expect(killed).toContain(starts[0]!.pid);
          expect(
            calls.some((c) => c.event === 'ensure-end' && c.id === starts[0]!.id && c.pid === starts[0]!.pid),
          ).toBe(false);
        }
      }
      expect(killed).toHaveLength(2);
      const dirs = fs.readdirSync(path.join(dataDir, 'blobs')).filter((d) => d.startsWith('scale-eu-dev-k'));
      expect(dirs).toHaveLength(n);
    } finally {
      for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
    }
  });
});
