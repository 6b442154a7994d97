import { randomBytes } from 'node:crypto';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  accessible,
  consoleBrowser,
  signedInWithToken,
  signedInAsAdmin as signIn,
  text,
} from '../../test/helpers/console-browser.js';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { startWorkflowEngine } from '../../test/helpers/workflows.js';
import { withPromotions } from '../releases/promotion-workflow.js';
import { lifecycleWorkflowTypes } from '../workflows/lifecycle-workflows.js';

const { executablePath, reason } = consoleBrowser('console browser tests');

const doc = (kind: string, metadata: Record<string, unknown>, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});
const hex = (n: number) => randomBytes(n).toString('hex');

/**
 * The console's views of workflows (steps live), tenant migrations, runtime objects, releases,
 * pipelines and promotions (approve), and cell agents, in Chromium: each page is usable (axe-core,
 * screenshots in test-results/console), and a tenant admin sees and does only what the API lets it.
 */
describe.skipIf(reason)('console views of workflows, runtime, releases and agents (Chromium)', () => {
  let s: TestServer;
  let browser: Browser;
  let engine: ReturnType<typeof startWorkflowEngine> | undefined;
  let promotionId = '';

  beforeAll(async () => {
    s = await startTestServer();
    const applied = await s.request('POST', '/v1/apply', {
      body: [
        ...circleK(),
        // A pool tenant and a dedicated cell, for a migration to silo.
        ...(['shared', 'dedicated'] as const).map((tenancy) =>
          doc(
            'Cell',
            { name: `eu-dev-${tenancy}` },
            { region: 'eu', stage: 'nonprod', environmentTypes: ['dev'], tenancy, capacity: { tenants: 5 } },
          ),
        ),
        doc(
          'Tenant',
          {},
          { customer: 'circlek-europe', region: 'eu', environmentType: 'dev', isolation: 'pool' },
        ),
        doc(
          'Service',
          { name: 'circlek-eu-prod-plan-api' },
          {
            deployment: 'circlek-eu-prod-plan',
            component: 'api',
            image: `registry.example.com/plan/api@sha256:${hex(32)}`,
            version: '1.0.0',
            replicas: 2,
          },
        ),
        doc(
          'Pipeline',
          { name: 'plan-pipeline' },
          {
            systems: ['plan'],
            stages: [{ name: 'prod', environmentTypes: ['prod'], protected: true, approvals: 1 }],
          },
        ),
        doc(
          'Release',
          {},
          {
            system: 'plan',
            version: '2.0.0',
            artifacts: [
              { service: 'api', image: 'registry.example.com/plan/api', digest: `sha256:${hex(32)}` },
            ],
            provenance: {
              commit: hex(20),
              repository: 'https://git.example.com/plan',
              pipelineRunId: 'run-2.0.0',
              builder: 'ci.example.com',
              lineage: [hex(20)],
            },
            validations: [{ name: 'unit-tests', passed: true }],
          },
        ),
      ],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    // Requested by rita; the console's administrator approves (four eyes).
    const rita = await s.token({ subject: 'rita' });
    const p = await s.request('POST', '/v1/promotions', {
      body: { system: 'plan', version: '2.0.0', stage: 'prod' },
      token: rita,
    });
    expect(p.status, JSON.stringify(p.body)).toBe(201);
    expect(p.body.state).toBe('AwaitingApproval');
    promotionId = p.body.id;
    browser = await chromium.launch({ executablePath: executablePath as string });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    await s?.close();
  });

  const signedInAsAdmin = () => signIn(browser, s);

  it("shows a lifecycle action's workflow steps live until it ends", async () => {
    const page = await signedInAsAdmin();
    await page.goto(`${s.url}/console/tenants/circlek-eu-uat`);
    await page.getByRole('button', { name: 'Suspend…' }).click();
    await page.getByLabel('Type circlek-eu-uat to confirm').fill('circlek-eu-uat');
    await page.getByRole('button', { name: 'Suspend circlek-eu-uat' }).click();
    await page.getByText('Lifecycle state: Suspended').waitFor();
    // No engine runs yet: the workflow waits with its steps Pending, and the page keeps asking.
    const steps = page.getByRole('table', { name: /^Steps of / });
    await steps.waitFor();
    await text(page.locator('#workflows'), /updating live/);
    expect(await steps.getByText('Completed').count()).toBe(0);
    await accessible(page, 'tenant-workflow-running');
    engine = startWorkflowEngine(s.t, {
      registry: withPromotions(lifecycleWorkflowTypes(s.t.db), {
        db: s.t.db,
        clock: { now: () => Date.now() },
        recheckMs: 100,
      }),
    });
    // The same page, not reloaded: the steps complete and the workflow succeeds.
    await text(page.locator('#workflows p').first(), /Succeeded/, 20_000);
    const states = await steps.locator('tbody tr td:nth-child(3)').allTextContents();
    expect(states.length).toBeGreaterThan(0);
    expect(new Set(states)).toEqual(new Set(['Completed']));
    await accessible(page, 'tenant-workflow-done');
    // Stopped here: the promotion approved below is to start, not to run against no runtime.
    await engine.stop();
    engine = undefined;
    await page.getByRole('link', { name: 'All workflows of this tenant' }).click();
    await page.getByRole('table', { name: 'Workflows, newest first' }).waitFor();
    await accessible(page, 'workflows');
    await page.context().close();
  });

  it('lists runtime objects, releases and pipelines, paged like the API', async () => {
    const page = await signedInAsAdmin();
    await page.goto(`${s.url}/console/runtime`);
    await page.getByRole('link', { name: 'circlek-eu-prod-plan-api' }).waitFor();
    await accessible(page, 'services');
    await page.getByRole('link', { name: 'Scaling policies' }).click();
    await page.getByRole('table', { name: 'Scaling policies' }).waitFor();
    await page.getByRole('link', { name: 'Configurations' }).click();
    await page.getByRole('table', { name: 'Configurations' }).waitFor();
    await accessible(page, 'configurations');
    await page.goto(`${s.url}/console/releases`);
    await page.getByRole('link', { name: 'plan-2-0-0' }).waitFor();
    await accessible(page, 'releases');
    await page.getByRole('link', { name: 'Pipelines' }).click();
    await page.getByRole('link', { name: 'plan-pipeline' }).waitFor();
    await accessible(page, 'pipelines');
    await page.goto(`${s.url}/console/tenants/circlek-eu-dev`);
    await page.getByText('No migrations.').waitFor();
    // A migration started through the API (no engine runs now: it waits, Pending).
    const migration = await s.request('POST', '/v1/tenants/circlek-eu-dev/migrations', {
      body: { isolation: 'silo' },
    });
    expect(migration.status, JSON.stringify(migration.body)).toBe(202);
    await page.reload();
    const migrations = page.getByRole('table', { name: 'Migrations of this tenant, newest first' });
    await text(migrations, /silo in/);
    await migrations.getByRole('link', { name: /^Migration .* \(isolation\)$/ }).click();
    await page.getByRole('table', { name: 'Steps of the migration' }).waitFor();
    await accessible(page, 'migration-workflow');
    // A cell whose agent joined shows it connected; the others are run by the control plane.
    const join = await s.request('POST', '/v1/cells/eu-prod-silo-1/join-tokens', { body: {} });
    expect(join.status, JSON.stringify(join.body)).toBe(201);
    const joined = await s.request('POST', '/v1/agent/join', {
      token: join.body.token,
      body: { name: 'console-test-agent' },
    });
    expect(joined.status, JSON.stringify(joined.body)).toBe(200);
    await page.goto(`${s.url}/console/cells`);
    const row = page.getByRole('row', { name: /eu-prod-silo-1/ });
    await text(row, /Connected.*console-test-agent/);
    await text(page.getByRole('row', { name: /eu-nonprod-1/ }), /none/);
    await accessible(page, 'cells-agents');
    // The agent's own page: version, lease, credential, objects by phase, pending commands.
    await row.getByRole('link', { name: 'Agent of eu-prod-silo-1' }).click();
    await page.getByRole('table', { name: /^Objects by phase/ }).waitFor();
    await page.getByRole('table', { name: 'Pending commands, oldest first' }).waitFor();
    await text(page.locator('main'), /console-test-agent/);
    await text(page.locator('main'), /Connected/);
    await text(page.locator('main'), /Valid/);
    await accessible(page, 'cell-agent');
    await page.context().close();
  });

  it('approves a promotion (CSRF-protected), which starts it', async () => {
    const page = await signedInAsAdmin();
    await page.goto(`${s.url}/console/promotions`);
    await page.getByRole('link', { name: 'plan@2.0.0 to prod' }).click();
    await page.getByRole('heading', { name: 'Approvals (0 of 1)' }).waitFor();
    await accessible(page, 'promotion-awaiting');
    // Without the token the approval is refused and nothing changes.
    const status = await page.evaluate(async (id) => {
      const res = await fetch(`/console/promotions/${id}/approve`, { method: 'POST' });
      return res.status;
    }, promotionId);
    expect(status).toBe(403);
    expect((await s.request('GET', `/v1/promotions/${promotionId}`)).body.approvals).toHaveLength(0);
    await page.getByRole('button', { name: 'Approve plan@2.0.0 to prod' }).click();
    await text(page.getByRole('status'), 'Approved by console-admin');
    await page.getByRole('heading', { name: 'Approvals (1 of 1)' }).waitFor();
    const after = (await s.request('GET', `/v1/promotions/${promotionId}`)).body;
    expect(after.approvals.map((a: { principal: string }) => a.principal)).toEqual(['console-admin']);
    expect(after.state).not.toBe('AwaitingApproval');
    await accessible(page, 'promotion-approved');
    await page.context().close();
  });

  it('shows a tenant admin only its tenant in every new view, also by typed URLs', async () => {
    const token = await s.token({ subject: 'eu-admin', tenant: 'circlek-eu-prod', roles: ['tenant-admin'] });
    const page = await signedInWithToken(browser, s, token);
    // Lists show its own tenant's objects only.
    await page.goto(`${s.url}/console/services`);
    await page.getByRole('link', { name: 'circlek-eu-prod-plan-api' }).waitFor();
    await page.goto(`${s.url}/console/workflows`);
    await page.getByRole('table', { name: 'Workflows, newest first' }).waitFor();
    expect(await page.getByRole('main').textContent()).not.toContain('tenant.suspend');
    await accessible(page, 'tenant-admin-workflows');
    // Another tenant's fragments and pages, typed: refused, nothing of it shown.
    const uatWorkflow = (
      await s.t.owner.query<{ id: string }>(
        `select w.id from workflows w join tenants t on t.id = w.tenant_id where t.slug = 'circlek-eu-uat'`,
      )
    ).rows[0]?.id;
    expect(uatWorkflow).toBeDefined();
    for (const url of [
      '/console/tenants/circlek-eu-uat/workflows',
      '/console/tenants/circlek-eu-uat/migrations',
      `/console/workflows/${uatWorkflow}`,
      '/console/services?tenant=circlek-eu-uat',
    ]) {
      const res = await page.goto(`${s.url}${url}`);
      expect([403, 404], url).toContain(res?.status());
      expect(await page.locator('main').textContent(), url).not.toContain('Steps');
    }
    // Platform records: promotions are not a tenant admin's, nor is approving them.
    const res = await page.goto(`${s.url}/console/promotions/${promotionId}`);
    expect([403, 404]).toContain(res?.status());
    const status = await page.evaluate(async (id) => {
      const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';
      const r = await fetch(`/console/promotions/${id}/approve`, {
        method: 'POST',
        headers: { 'x-csrf-token': csrf },
      });
      return r.status;
    }, promotionId);
    expect([403, 404]).toContain(status);
    await page.context().close();
  });
});
