import pino from 'pino';
import { type Browser, chromium, type Locator } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  accessible,
  consoleBrowser,
  signedInWithToken,
  signedInAsAdmin as signIn,
  text,
} from '../../test/helpers/console-browser.js';
import { circleK } from '../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { WebhookReceiver } from '../../test/helpers/webhook-receiver.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { EventNotifier } from '../events/event-notifier.js';
import { EventsService } from '../events/events.service.js';
import { WebhookDispatcher } from '../webhooks/webhook-dispatcher.js';

const { executablePath, reason } = consoleBrowser('console browser tests');

/** Waits until the locator matches `n` elements. */
async function count(loc: Locator, n: number) {
  await expect.poll(() => loc.count()).toBe(n);
}

describe.skipIf(reason)('console in a real browser (Chromium)', () => {
  let t: TestDatabase;
  let s: TestServer;
  let notifier: EventNotifier;
  let dispatcher: WebhookDispatcher;
  let browser: Browser;
  const good = new WebhookReceiver();
  const flaky = new WebhookReceiver();
  let flakyId = '';
  let goodId = '';

  beforeAll(async () => {
    t = await createTestDatabase();
    // A compressed retry schedule (3 attempts, tens of milliseconds apart) so dead letters come quickly.
    t.config.events = {
      ...t.config.events,
      pollMs: 50,
      webhookRetrySchedule: [40, 40],
      webhookTimeoutMs: 2_000,
      webhookLeaseMs: 3_000,
      webhookAllowedNetworks: ['127.0.0.0/8'],
    };
    notifier = new EventNotifier(t.appUrl, pino({ level: 'silent' }));
    await notifier.start();
    s = await startTestServer({ database: t, events: new EventsService(t.db, t.config, notifier) });
    dispatcher = new WebhookDispatcher(s.t.db, s.t.config, pino({ level: 'silent' }), notifier);
    dispatcher.start();
    await good.start();
    await flaky.start();
    good.behaviour = () => 204;
    flaky.behaviour = () => 500;
    browser = await chromium.launch({ executablePath: executablePath as string });
  });
  afterAll(async () => {
    await browser?.close();
    await dispatcher?.stop();
    await notifier?.stop();
    await good.stop();
    await flaky.stop();
    await s?.close();
    await t?.destroy();
  });

  it('signs in with the one-time link', async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${s.url}/console/tree`);
    await page.waitForURL('**/console/login');
    await accessible(page, 'login');
    await page.goto(await s.app.tenantryConsole.signInLink(s.url));
    await accessible(page, 'login-link');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.waitForURL('**/console/tree');
    await page.getByRole('heading', { name: 'Hierarchy' }).waitFor();
    await page.context().close();
  });

  it('shows Circle K in the tree once it is applied through the API', async () => {
    const page = await signIn(browser, s);
    await count(page.getByText('circlek-europe'), 0);
    const applied = await s.request('POST', '/v1/apply', { body: circleK() });
    expect(applied.status).toBe(200);
    for (const [name, url] of [
      ['good', good.url],
      ['flaky', flaky.url],
    ] as const) {
      const res = await s.request('POST', '/v1/webhook-endpoints', {
        body: { metadata: { name, tenant: 'circlek-eu-prod' }, spec: { url } },
      });
      expect(res.status).toBe(201);
      if (name === 'good') goodId = res.body.metadata.uuid;
      else flakyId = res.body.metadata.uuid;
    }
    await page.reload();
    await page.getByRole('button', { name: 'Children of circlek-europe', exact: true }).click();
    await page.getByRole('button', { name: 'Children of circlek-eu-prod', exact: true }).click();
    await page.getByRole('button', { name: 'Children of circlek-eu-prod-plan', exact: true }).click();
    await page.getByRole('link', { name: 'circlek-eu-prod-plan.blob', exact: true }).waitFor();
    // Shown and hidden again by the same button, without another request.
    const plan = page.getByRole('button', { name: 'Children of circlek-eu-prod-plan', exact: true });
    expect(await plan.getAttribute('aria-expanded')).toBe('true');
    await plan.click();
    await page
      .getByRole('link', { name: 'circlek-eu-prod-plan.blob', exact: true })
      .waitFor({ state: 'hidden' });
    await plan.click();
    await page.getByRole('link', { name: 'circlek-eu-prod-plan.blob', exact: true }).waitFor();
    await accessible(page, 'tree');
    await page.getByRole('searchbox', { name: 'Search by slug' }).fill('circlek-us');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('link', { name: 'circlek-us-prod', exact: true }).waitFor();
    await count(page.getByRole('link', { name: 'circlek-eu-prod', exact: true }), 0);
    await accessible(page, 'tree-search');
    await page.context().close();
  });

  it('suspends a tenant after a confirmation that names it, and the webhook delivery appears', async () => {
    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/tenants/circlek-eu-prod`);
    await page.getByText('Lifecycle state: Active').waitFor();
    await accessible(page, 'tenant');
    await page.getByRole('button', { name: 'Suspend…' }).click();
    await page.getByRole('heading', { name: 'Suspend tenant circlek-eu-prod?' }).waitFor();
    const confirm = page.getByRole('button', { name: 'Suspend circlek-eu-prod' });
    await page.getByLabel('Type circlek-eu-prod to confirm').fill('circlek-eu');
    await confirm.click();
    await text(page.getByRole('alert'), 'Type "circlek-eu-prod" exactly');
    await accessible(page, 'tenant-confirm');
    await page.getByLabel('Type circlek-eu-prod to confirm').fill('circlek-eu-prod');
    await page.getByRole('button', { name: 'Suspend circlek-eu-prod' }).click();
    await page.getByText('Lifecycle state: Suspended').waitFor();
    await page.getByText('generation 2', { exact: false }).first().waitFor();
    expect((await s.request('GET', '/v1/tenants/circlek-eu-prod')).body.status.lifecycle).toBe('Suspended');

    await page.goto(`${s.url}/console/webhooks/${goodId}`);
    await vi.waitFor(
      async () => {
        await page.reload();
        await page.getByRole('cell', { name: 'tenant.suspended' }).waitFor({ timeout: 500 });
      },
      { timeout: 15_000, interval: 100 },
    );
    await accessible(page, 'webhook-deliveries');
    await page.goto(`${s.url}/console/tenants/circlek-eu-prod/usage`);
    await page.getByRole('table', { name: 'Quotas' }).waitFor();
    await page.getByRole('img', { name: /^deployments: from \d+ to 4/ }).waitFor();
    await accessible(page, 'usage');
    await page.goto(`${s.url}/console/cells`);
    await page.getByRole('table', { name: 'Cells and their capacity' }).waitFor();
    await accessible(page, 'cells');
    await page.goto(`${s.url}/console/webhooks`);
    await accessible(page, 'webhooks');
    await page.context().close();
  });

  it('verifies the audit log', async () => {
    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/audit`);
    await page.getByRole('cell', { name: 'tenant.suspend' }).first().waitFor();
    await page.getByRole('button', { name: 'Verify the audit log' }).click();
    await text(page.locator('#verify'), /^Verified: \d+ records/);
    await accessible(page, 'audit');
    await page.getByLabel('Action (e.g. tenant.*)').fill('tenant.suspend');
    await page.getByRole('button', { name: 'Filter' }).click();
    await count(page.getByRole('cell', { name: 'tenant.suspend' }), 1);
    await page.context().close();
  });

  it('requeues a dead letter', async () => {
    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/webhooks/${flakyId}?status=dead`);
    await vi.waitFor(
      async () => {
        await page.reload();
        await page
          .getByRole('button', { name: /^Requeue delivery/ })
          .first()
          .waitFor({ timeout: 500 });
      },
      { timeout: 15_000, interval: 100 },
    );
    await accessible(page, 'dead-letter');
    flaky.behaviour = () => 204;
    const before = flaky.received.length;
    await page
      .getByRole('button', { name: /^Requeue delivery/ })
      .first()
      .click();
    await text(page.getByRole('status'), 'Requeued 1 delivery');
    await vi.waitFor(() => expect(flaky.received.length).toBeGreaterThan(before), { timeout: 10_000 });
    await page.context().close();
  });

  it('shows events live', async () => {
    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/events`);
    await page.locator('#events li').first().waitFor();
    await page.waitForTimeout(300); // the SSE connection opens after htmx loads
    // The suspend earlier in this file started a lifecycle workflow; a resume is refused until it ends.
    await settleWorkflows(s.t);
    const res = await s.request('POST', '/v1/tenants/circlek-eu-prod/resume');
    expect(res.status).toBe(200);
    // Newest first: the resume's change, then the start of the workflow it asked for (same transaction).
    await text(page.locator('#events li').first(), 'workflow.started', 10_000);
    await text(page.locator('#events li').nth(1), 'tenant.resumed');
    await accessible(page, 'events');
    await page.context().close();
  });

  it('refuses a mutation without the CSRF token', async () => {
    const page = await signIn(browser, s);
    const status = await page.evaluate(async () => {
      const res = await fetch('/console/tenants/circlek-us-prod/suspend', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'confirm=circlek-us-prod',
      });
      return res.status;
    });
    expect(status).toBe(403);
    expect((await s.request('GET', '/v1/tenants/circlek-us-prod')).body.status.lifecycle).toBe('Active');
    await page.context().close();
  });

  it('shows a tenant admin only its tenant, also by typed URLs, and refuses its actions elsewhere', async () => {
    const token = await s.token({ subject: 'eu-admin', tenant: 'circlek-eu-prod', roles: ['tenant-admin'] });
    const page = await signedInWithToken(browser, s, token);
    await page.getByRole('link', { name: 'circlek-eu-prod', exact: true }).waitFor();
    await count(page.getByText('circlek-us-prod'), 0);
    await accessible(page, 'tenant-admin-tree');
    for (const url of ['/console/tenants/circlek-us-prod', '/console/tenants/circlek-us-prod/usage']) {
      const res = await page.goto(`${s.url}${url}`);
      expect([403, 404], url).toContain(res?.status());
      await page.getByRole('alert').waitFor();
      expect(await page.locator('main').textContent()).not.toContain('Lifecycle state');
    }
    await accessible(page, 'tenant-admin-refused');
    const status = await page.evaluate(async () => {
      const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';
      const res = await fetch('/console/tenants/circlek-us-prod/suspend', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-csrf-token': csrf },
        body: 'confirm=circlek-us-prod',
      });
      return res.status;
    });
    expect([403, 404]).toContain(status);
    expect((await s.request('GET', '/v1/tenants/circlek-us-prod')).body.status.lifecycle).toBe('Active');
    await page.context().close();
  });
});
