import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { startWorkflowEngine } from '../../test/helpers/workflows.js';
import { systemClock } from '../domain/clock.js';
import { lifecycleWorkflowTypes } from '../workflows/lifecycle-workflows.js';
import { withPromotions } from './promotion-workflow.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const N = 12;
let s: TestServer;
let runtime: NodeJS.Timeout | undefined;

const doc = (kind: string, metadata: Record<string, unknown>, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});
const tenant = (i: number) => `crash-eu-prod-t${String(i).padStart(2, '0')}`;

function spawnEngine(): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/promotion-process.ts'], {
      cwd: ROOT,
      env: { ...process.env, APP_URL: s.t.appUrl, PLATFORM_URL: s.t.platformUrl },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    child.stdout?.once('data', () => resolve(child));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`engine process exited early (${code})`)));
  });
}

beforeAll(async () => {
  s = await startTestServer();
  const res = await s.request('POST', '/v1/apply', {
    body: [
      doc('Customer', { name: 'crash' }, { displayName: 'Crash', shortCode: 'crash' }),
      doc('System', { name: 'shop' }, { displayName: 'Shop', serviceId: 'shop' }),
      ...Array.from({ length: N }, (_, k) =>
        doc(
          'Tenant',
          { labels: k < 4 ? { ring: '1' } : {} },
          {
            customer: 'crash',
            region: 'eu',
            environmentType: 'prod',
            qualifier: `t${String(k + 1).padStart(2, '0')}`,
          },
        ),
      ),
      ...Array.from({ length: N }, (_, k) =>
        doc('Deployment', {}, { tenant: tenant(k + 1), system: 'shop' }),
      ),
      doc(
        'Pipeline',
        { name: 'default' },
        {
          stages: [
            {
              name: 'prod',
              environmentTypes: ['prod'],
              waves: [{ name: 'ring1', selector: { labels: { ring: '1' } } }, { name: 'rest' }],
              verification: { timeoutSeconds: 20 },
            },
          ],
        },
      ),
      doc(
        'Release',
        {},
        {
          system: 'shop',
          version: '2.0.0',
          artifacts: [
            { service: 'api', image: 'registry.example.com/shop', digest: `sha256:${'f'.repeat(64)}` },
          ],
          provenance: { commit: 'a'.repeat(40), repository: 'r', pipelineRunId: 'run-7', builder: 'ci' },
          validations: [{ name: 'e2e', passed: true }],
        },
      ),
    ],
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  // The runtime: reports each updated deployment healthy a little later (so updates wait for it).
  const report = async () => {
    const r = await s.t.owner.query<{ slug: string; to_version: string }>(
      `select d.slug, pt.to_version from promotion_targets pt
       join deployments d on d.tenant_id = pt.tenant_id and d.id = pt.deployment_id
       where pt.state = 'Updated' and pt.updated_at < now() - interval '150 milliseconds'`,
    );
    for (const row of r.rows)
      await s.request('POST', `/v1/deployments/${row.slug}/health`, {
        body: { version: row.to_version, readyReplicas: 1, desiredReplicas: 1, errorRate: 0 },
      });
    runtime = setTimeout(() => void report().catch(() => {}), 50);
  };
  void report();
}, 120_000);

afterAll(async () => {
  clearTimeout(runtime);
  await s?.close();
});

describe('a promotion whose engine is killed mid-wave', () => {
  it('resumes on another engine: every tenant updated exactly once, none skipped', {
    timeout: 240_000,
  }, async () => {
    const child = await spawnEngine();
    const res = await s.request('POST', '/v1/promotions', {
      body: { system: 'shop', version: '2.0.0', stage: 'prod' },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const id = res.body.id as string;
    // Kill it while a tenant of the second wave is updated but not yet verified.
    await until(
      'a tenant of the second wave updated, not yet verified',
      async () => {
        const r = await s.t.owner.query(
          `select count(*) filter (where state = 'Verified')::int as verified,
                  count(*) filter (where state = 'Updated' and wave = 1)::int as updated
           from promotion_targets where promotion_id = $1`,
          [id],
        );
        return r.rows[0].verified >= 5 && r.rows[0].updated >= 1;
      },
      120_000,
    );
    child.kill('SIGKILL');
    await new Promise<void>((resolve) =>
      child.exitCode !== null ? resolve() : child.once('exit', () => resolve()),
    );
    const mid = await s.t.owner.query(
      `select state, count(*)::int as n from promotion_targets where promotion_id = $1 group by state`,
      [id],
    );
    expect(mid.rows.some((r) => r.state === 'Pending' || r.state === 'Updated')).toBe(true);

    const e = startWorkflowEngine(s.t, {
      registry: withPromotions(lifecycleWorkflowTypes(s.t.db), {
        db: s.t.db,
        clock: systemClock,
        recheckMs: 200,
      }),
    });
    try {
      const done = await until(
        'the promotion to end',
        async () => {
          const p = (await s.request('GET', `/v1/promotions/${id}`)).body;
          return ['Succeeded', 'Failed', 'Cancelled'].includes(p.state) ? p : undefined;
        },
        120_000,
      );
      expect(done.state, done.error ?? '').toBe('Succeeded');
      expect(done.targets.map((t: { state: string }) => t.state)).toEqual(Array(N).fill('Verified'));
      const updates = await s.t.owner.query(
        `select target_id, count(*)::int as n from audit_records
         where action = 'promotion.tenant_update' and correlation_id = (select correlation_id from promotions where id = $1)
         group by target_id`,
        [id],
      );
      expect(updates.rows).toHaveLength(N);
      expect(updates.rows.every((r) => r.n === 1)).toBe(true);
      const events = await s.t.owner.query(
        `select count(*)::int as n from outbox_events where type = 'dev.tenantry.promotion.tenant_updated.v1' and data->>'promotionId' = $1`,
        [id],
      );
      expect(events.rows[0].n).toBe(N);
      const running = await s.t.owner.query(`select distinct version from deployment_releases`);
      expect(running.rows).toEqual([{ version: '2.0.0' }]);
    } finally {
      await e.stop();
    }
  });

  it('a cancelled promotion puts every tenant it updated back', { timeout: 120_000 }, async () => {
    const rel = await s.request('POST', '/v1/apply', {
      body: [
        doc(
          'Release',
          {},
          {
            system: 'shop',
            version: '2.0.1',
            artifacts: [
              { service: 'api', image: 'registry.example.com/shop', digest: `sha256:${'0'.repeat(64)}` },
            ],
            provenance: { commit: 'c'.repeat(40), repository: 'r', pipelineRunId: 'run-8', builder: 'ci' },
            validations: [{ name: 'e2e', passed: true }],
          },
        ),
      ],
    });
    expect(rel.status, JSON.stringify(rel.body)).toBe(200);
    const e = startWorkflowEngine(s.t, {
      registry: withPromotions(lifecycleWorkflowTypes(s.t.db), {
        db: s.t.db,
        clock: systemClock,
        recheckMs: 200,
      }),
    });
    try {
      const res = await s.request('POST', '/v1/promotions', {
        body: { system: 'shop', version: '2.0.1', stage: 'prod' },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      const id = res.body.id as string;
      await until('tenants verified', async () => {
        const r = await s.t.owner.query(
          `select count(*)::int as n from promotion_targets where promotion_id = $1 and state = 'Verified'`,
          [id],
        );
        return r.rows[0].n >= 3;
      });
      expect((await s.request('POST', `/v1/promotions/${id}/cancel`)).status).toBe(200);
      const done = await until(
        'the promotion to end',
        async () => {
          const p = (await s.request('GET', `/v1/promotions/${id}`)).body;
          return ['Succeeded', 'Failed', 'Cancelled'].includes(p.state) ? p : undefined;
        },
        60_000,
      );
      expect(done.state).toBe('Cancelled');
      expect(done.targets.every((t: { state: string }) => t.state === 'RolledBack')).toBe(true);
      const running = await s.t.owner.query(`select distinct version from deployment_releases`);
      expect(running.rows).toEqual([{ version: '2.0.0' }]);
    } finally {
      await e.stop();
    }
  });
});
