import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { startWorkflowEngine } from '../../test/helpers/workflows.js';
import { systemClock } from '../domain/clock.js';
import { lifecycleWorkflowTypes } from '../workflows/lifecycle-workflows.js';
import { withPromotions } from './promotion-workflow.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const exec = promisify(execFile);
let s: TestServer;
let engine: ReturnType<typeof startWorkflowEngine>;
let dir: string;
let runtime: NodeJS.Timeout | undefined;

/** The built CLI (`npm test` builds first), as the given principal. */
async function cli(token: string, ...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await exec(process.execPath, [path.join(ROOT, 'bin/tenantry.js'), '--server', s.url, ...args], {
      cwd: ROOT,
      env: { ...process.env, TENANTRY_TOKEN: token, XDG_CONFIG_HOME: dir },
    });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string; signal?: string };
    return {
      code: e.code,
      out: `${e.stdout}${e.stderr}${e.signal ? ` (${e.signal}: ${args.join(' ')})` : ''}`,
    };
  }
}

const doc = (kind: string, metadata: Record<string, unknown>, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});

beforeAll(async () => {
  s = await startTestServer();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-rel-cli-'));
  const res = await s.request('POST', '/v1/apply', {
    body: [
      doc('Customer', { name: 'clico' }, { displayName: 'Cli Co', shortCode: 'clico' }),
      doc('System', { name: 'shop' }, { displayName: 'Shop', serviceId: 'shop' }),
      doc('Tenant', {}, { customer: 'clico', region: 'eu', environmentType: 'dev' }),
      doc('Tenant', {}, { customer: 'clico', region: 'eu', environmentType: 'prod' }),
      doc('Deployment', {}, { tenant: 'clico-eu-dev', system: 'shop' }),
      doc('Deployment', {}, { tenant: 'clico-eu-prod', system: 'shop' }),
      doc(
        'Pipeline',
        { name: 'default' },
        {
          stages: [
            { name: 'dev', environmentTypes: ['dev'], verification: { timeoutSeconds: 10 } },
            {
              name: 'prod',
              environmentTypes: ['prod'],
              protected: true,
              verification: { timeoutSeconds: 10 },
            },
          ],
        },
      ),
    ],
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  engine = startWorkflowEngine(s.t, {
    registry: withPromotions(lifecycleWorkflowTypes(s.t.db), {
      db: s.t.db,
      clock: systemClock,
      recheckMs: 200,
    }),
  });
  // The runtime: every updated deployment reports itself healthy.
  const report = async () => {
    const r = await s.t.owner.query<{ slug: string; to_version: string }>(
      `select d.slug, pt.to_version from promotion_targets pt
       join deployments d on d.tenant_id = pt.tenant_id and d.id = pt.deployment_id where pt.state = 'Updated'`,
    );
    for (const row of r.rows)
      await s.request('POST', `/v1/deployments/${row.slug}/health`, {
        body: { version: row.to_version, readyReplicas: 1, desiredReplicas: 1, errorRate: 0 },
      });
    runtime = setTimeout(() => void report().catch(() => {}), 100);
  };
  void report();
}, 60_000);

afterAll(async () => {
  clearTimeout(runtime);
  await engine?.stop();
  await s?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('tenantry releases, promote, approve, promotions, pin, rollback', () => {
  it('creates a release, promotes it with --wait, approves as someone else, pins, exports evidence', async () => {
    const file = path.join(dir, 'release.yaml');
    fs.writeFileSync(
      file,
      `apiVersion: tenantry.dev/v1
kind: Release
metadata: {}
spec:
  system: shop
  version: 1.0.0
  artifacts:
    - service: api
      image: registry.example.com/shop/api
      digest: sha256:${'c'.repeat(64)}
  provenance:
    commit: ${'d'.repeat(40)}
    repository: https://git.example.com/shop
    pipelineRunId: run-42
    builder: ci.example.com
  validations:
    - name: unit-tests
      passed: true
`,
    );
    const admin = s.adminToken;
    const created = await cli(admin, 'releases', 'create', '-f', file);
    expect(created, created.out).toMatchObject({ code: 0 });
    expect(created.out).toContain('release/shop-1-0-0 created');
    expect((await cli(admin, 'releases', 'list', '--system', 'shop')).out).toMatch(
      /shop-1-0-0\s+shop\s+1\.0\.0/,
    );

    const dev = await cli(admin, 'promote', 'shop@1.0.0', '--to', 'dev', '--wait');
    expect(dev, dev.out).toMatchObject({ code: 0 });
    expect(dev.out).toContain('Succeeded');

    const prod = await cli(admin, 'promote', 'shop@1.0.0', '--to', 'prod');
    expect(prod.code, prod.out).toBe(0);
    expect(prod.out).toContain('AwaitingApproval');
    const id = /promotion ([0-9a-f-]{36})/.exec(prod.out)![1]!;
    const self = await cli(admin, 'approve', id);
    expect(self.code).toBe(1);
    expect(self.out).toContain('promotion.four_eyes');
    const other = await cli(await s.token({ subject: 'alice' }), 'approve', id, '--comment', 'looks good');
    expect(other, other.out).toMatchObject({ code: 0 });
    expect(other.out).toContain(`promotion ${id} Running (1/1 approvals)`);

    const list = await cli(admin, 'promotions', 'list', '--system', 'shop');
    expect(list.out).toContain(id);
    const described = await cli(admin, 'promotions', 'describe', id, '-o', 'wide');
    expect(described.out).toContain('clico-eu-prod');

    const pin = await cli(
      admin,
      'pin',
      'clico-eu-dev',
      'shop@1.0.0',
      '--until',
      '2999-01-01T00:00:00Z',
      '--reason',
      'audit',
    );
    expect(pin, pin.out).toMatchObject({ code: 0 });
    const tenant = await s.request('GET', '/v1/tenants/clico-eu-dev/releases');
    expect(tenant.body.pins).toEqual([
      expect.objectContaining({ system: 'shop', version: '1.0.0', reason: 'audit' }),
    ]);
    expect((await cli(admin, 'unpin', 'clico-eu-dev', 'shop')).code).toBe(0);

    const evidence = await cli(admin, 'releases', 'evidence', 'shop@1.0.0');
    expect(evidence.code, evidence.out).toBe(0);
    expect(evidence.out).toContain('promotion.evidence');
    expect(evidence.out).toContain('promotion.approve');

    const rollback = await cli(admin, 'rollback', 'shop', '--stage', 'dev');
    expect(rollback.code).toBe(1);
    expect(rollback.out).toContain('promotion.no_previous');
  }, 300_000);
});
