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
import { dropDataplane, until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import {
  databaseAndContainer,
  movableCustomer,
  startTwoRegions,
  type TwoRegions,
  tenantClient,
} from '../../test/helpers/two-regions.js';
import { finished, startWorkflowEngine } from '../../test/helpers/workflows.js';
import { azuriteUnavailableReason } from '../../test/infra/azurite.js';
import { FAILOVER_STEPS } from '../tenant-migrations/failover.service.js';
import { StandbyKeeper } from '../tenant-migrations/standby-keeper.js';

const { executablePath, reason } = consoleBrowser('console failover tests');
const unavailable = reason ?? azuriteUnavailableReason();

const customer = `cf${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const count = async (s: TestServer) =>
  (await s.t.owner.query('select count(*)::int as n from tenant_failovers')).rows[0].n as number;

/**
 * Region failover from the console, in Chromium, on two PostgreSQL servers (eu's really stopped)
 * and an Azurite account per region: the tenant's page shows its standby live until the lag is 0;
 * "Fail over…" is refused while the lag is unknown, then shows the dry-run plan and the verdicts,
 * a confirmation naming the tenant starts the failover.region workflow, whose steps the page shows
 * live until the tenant serves from us with its data-loss window and consistency checks. A tenant
 * admin sees the standby and the failover and may start none, as the API answers it. Every page
 * passes axe-core; screenshots in test-results/console.
 */
describe.skipIf(unavailable)('console failover (Chromium, two regions)', () => {
  let s: TestServer;
  let regions: TwoRegions;
  let browser: Browser;
  let keeper: StandbyKeeper;
  let engine: ReturnType<typeof startWorkflowEngine> | undefined;
  let failoverId = '';

  beforeAll(async () => {
    s = await startTestServer();
    const applied = await s.request('POST', '/v1/apply', {
      body: [
        ...movableCustomer(customer, 'Failing', { standby: { region: 'us', failoverAfterChecks: 5 } }),
        ...databaseAndContainer(tenant),
      ],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    regions = await startTwoRegions(s.t, { ownEu: true });
    const { providers } = regions.controller;
    await until(
      'database and container Ready in eu',
      async () =>
        (
          await s.t.owner.query(
            `select count(*)::int as n from integration_resources where phase = 'Ready' and slug like $1`,
            [`${tenant}%`],
          )
        ).rows[0].n === 2,
      120_000,
    );
    const rid = (
      await s.t.owner.query(
        `select id from integration_resources where spec->>'type' = 'database' and slug like $1`,
        [`${tenant}%`],
      )
    ).rows[0].id as string;
    const app = await tenantClient(s.t, rid, regions.euUrl);
    await app.query(`create table orders (id bigserial primary key, n integer not null);
      insert into orders (n) select g from generate_series(1, 3000) g;`);
    await app.end();
    keeper = new StandbyKeeper({ db: s.t.db, providers });
    engine = startWorkflowEngine(s.t, { providers });
    expect((await keeper.tick()).started).toEqual([tenant]);
    const standbyWf = (
      await s.t.owner.query(
        'select workflow_id from tenant_standbys s join tenants t on t.id = s.tenant_id where t.slug = $1',
        [tenant],
      )
    ).rows[0].workflow_id as string;
    expect(await finished(s.t, standbyWf, 120_000)).toMatchObject({ state: 'Succeeded' });
    await engine.stop();
    engine = undefined;
    browser = await chromium.launch({ executablePath: executablePath as string });
  }, 300_000);
  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    await regions?.stop();
    if (s) await dropDataplane(s.t);
    await s?.close();
  });

  it('shows the standby live, refuses while its lag is unknown, then plans, confirms and fails over with the steps live', async () => {
    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/tenants/${tenant}`);
    const standby = page.getByRole('table', { name: 'Standby in us' });
    await text(standby, /State\s*Streaming/);
    await text(standby, /Lag\s*unknown/);
    await text(standby, /Failover policy\s*fails over by itself after 5 checks/);

    // Never seen caught up: the dry run is refused with its code, and nothing is written.
    await page.getByRole('link', { name: 'Fail over…' }).click();
    await page.getByRole('heading', { name: `Fail over ${tenant}` }).waitFor();
    await page.getByRole('button', { name: 'Show the plan' }).click();
    const refused = page.locator('#plan [role=alert]');
    await text(refused, /Refused \(409\).*lag is unknown.*failover\.lag_unknown/s);
    await text(page.getByRole('table', { name: 'Policy verdicts' }), /lag_unknown\s*refuse/);
    expect(await count(s)).toBe(0);
    await accessible(page, 'failover-refused');

    // The keeper measures; the same page, not reloaded, shows the lag reach 0 and the blob sync.
    await page.goto(`${s.url}/console/tenants/${tenant}`);
    await until(
      'the standby caught up (lag 0)',
      async () => {
        const m = Object.values((await keeper.tick()).measured)[0];
        return !!m?.caughtUp && m.lagBytes === 0;
      },
      60_000,
    );
    await text(standby, /Lag\s*0 bytes · 0 s/);
    await text(standby, /Last sync\s*\d{4}-/);
    await text(standby, /Last blob sync\s*0 blobs.*equal/s);
    await accessible(page, 'standby');

    // eu's data plane goes down: measured, the lag is unknown and the panel says why.
    await regions.servers.eu?.stop();
    await keeper.tick();
    await text(standby, /Lag\s*unknown/);
    await text(page.locator('#standby [role=alert]'), /primary eu unreachable/);

    // The dry run: the plan, the verdicts and the data-loss window; nothing written yet.
    await page.getByRole('link', { name: 'Fail over…' }).click();
    await page.getByRole('button', { name: 'Show the plan' }).click();
    const verdicts = page.getByRole('table', { name: 'Policy verdicts' });
    for (const rule of ['standby', 'lag', 'residency', 'capacity', 'freeze', 'workflow'])
      await text(verdicts, new RegExp(`${rule}\\s*allow`));
    await text(page.getByRole('table', { name: 'Placement now and after' }), new RegExp(`${customer}-us`));
    await text(page.locator('#plan'), /data-loss window \d+(\.\d)? s/);
    await text(page.locator('#plan ol'), /check-standby.*promote-standby.*verify/s);
    expect(await count(s)).toBe(0);
    await accessible(page, 'failover-plan');

    // The confirmation names the tenant: anything else is refused, and still nothing is written.
    await page.getByLabel(`Type ${tenant} to confirm`).fill(`${customer}-us-dev`);
    await page.getByRole('button', { name: `Fail over ${tenant}` }).click();
    await text(page.locator('#plan [role=alert]'), `Type "${tenant}" exactly`);
    expect(await count(s)).toBe(0);
    await page.getByLabel(`Type ${tenant} to confirm`).fill(tenant);
    await accessible(page, 'failover-confirm');
    await page.getByRole('button', { name: `Fail over ${tenant}` }).click();
    await page.waitForURL(`**/console/tenants/${tenant}/failovers/*`);
    failoverId = page.url().split('/').at(-1) ?? '';
    expect(failoverId).toMatch(/^[0-9a-f-]{36}$/);

    // No engine yet: the workflow waits, and the page says it is updating live.
    await text(page.locator('#failover'), /updating live/);
    engine = startWorkflowEngine(s.t, { providers: regions.controller.providers });
    await text(page.locator('#failover p').first(), /FailedOver/, 180_000);
    const steps = page.getByRole('table', { name: 'Steps of the failover' });
    expect(await steps.locator('tbody tr td:nth-child(2)').allTextContents()).toEqual(FAILOVER_STEPS);
    expect(new Set(await steps.locator('tbody tr td:nth-child(3)').allTextContents())).toEqual(
      new Set(['Completed']),
    );
    const summary = page.getByRole('table', { name: 'Summary' });
    await text(summary, /Data-loss window\s*\d+(\.\d)? s/);
    await text(summary, /Old primary fenced\s*not yet \(unreachable/);
    await text(summary, new RegExp(`Served from now\\s*cell ${customer}-us, region us`));
    await text(page.locator('#consistency-h + p'), /Result: consistent/);
    await text(
      page.getByRole('table', { name: /^Rows of database .*credentials work$/ }),
      /orders\s*3000\s*3000\s*0/,
    );
    await accessible(page, 'failover-done');
    const t = await s.request('GET', `/v1/tenants/${tenant}`);
    expect(t.body.status.placement).toMatchObject({ region: 'us', cell: `${customer}-us` });

    // The tenant's page and the migrations list show the failover.
    await page.goto(`${s.url}/console/tenants/${tenant}`);
    await text(
      page.getByRole('table', { name: 'Failovers of this tenant, newest first' }),
      /FailedOver.*Consistent/s,
    );
    await page.goto(`${s.url}/console/migrations`);
    await text(
      page.getByRole('table', { name: 'Failovers, newest first' }),
      new RegExp(`${tenant}.*FailedOver`, 's'),
    );
    await accessible(page, 'failovers');
    await page.context().close();
  }, 400_000);

  it("shows a tenant admin its tenant's standby and failover, offers it no failover, and refuses one as the API does", async () => {
    const token = await s.token({ subject: 'cf-admin', tenant, roles: ['tenant-admin'] });
    const api = await s.request('POST', `/v1/tenants/${tenant}/failover?dryRun=true`, { token, body: {} });
    expect(api.status).toBe(403);
    expect(api.body.code).toBe('migration.platform_only');
    const page = await signedInWithToken(browser, s, token);
    await page.goto(`${s.url}/console/tenants/${tenant}`);
    await text(page.getByRole('table', { name: 'Failovers of this tenant, newest first' }), /FailedOver/);
    expect(await page.getByRole('link', { name: 'Fail over…' }).count()).toBe(0);
    await page.goto(`${s.url}/console/tenants/${tenant}/failovers/${failoverId}`);
    await text(page.locator('#failover p').first(), /FailedOver/);
    await accessible(page, 'tenant-admin-failover');

    const res = await page.goto(`${s.url}/console/tenants/${tenant}/failover`);
    expect(res?.status()).toBe(403);
    await text(page.locator('[role=alert]'), /migration\.platform_only/);
    const statuses = await page.evaluate(async (t) => {
      const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';
      const post = (url: string, body: string) =>
        fetch(url, {
          method: 'POST',
          headers: { 'x-csrf-token': csrf, 'content-type': 'application/x-www-form-urlencoded' },
          body,
        }).then((r) => r.status);
      return [
        await post(`/console/tenants/${t}/failover/plan`, ''),
        await post(`/console/tenants/${t}/failover`, `confirm=${t}`),
      ];
    }, tenant);
    expect(statuses).toEqual([403, 403]);
    expect(await count(s)).toBe(1);
    await page.context().close();
  });
});
