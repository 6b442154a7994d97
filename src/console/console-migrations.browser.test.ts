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
import {
  cellManifest,
  dropDataplane,
  poolTenantManifests,
  startController,
  type TestController,
  until,
} from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { startWorkflowEngine } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { databaseUrl, withClient } from '../tenant-migrations/pg-copy.js';

const { executablePath, reason } = consoleBrowser('console migration tests');

// Roles and databases belong to the whole data-plane server: names unique to this run.
const customer = `cm${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const other = `${customer}x-eu-dev`;
const base = tenant.replace(/-/g, '_');

/**
 * Migration from the console, in Chromium, on the real data-plane PostgreSQL: a pool tenant's
 * "Migrate…" shows the dry-run plan and the policy verdicts, a confirmation naming the tenant
 * starts the pool → silo workflow, whose steps the page shows live until the cut-over with its
 * verification; "Roll back…" within the window brings the tenant back with a write made on the
 * silo. A tenant admin sees its own migrations only and can start or roll back none. Every page
 * passes axe-core; screenshots in test-results/console.
 */
describe.skipIf(reason)('console migrations (Chromium, real data plane)', () => {
  let s: TestServer;
  let c: TestController;
  let browser: Browser;
  let engine: ReturnType<typeof startWorkflowEngine> | undefined;
  let migrationId = '';

  beforeAll(async () => {
    s = await startTestServer();
    const applied = await s.request('POST', '/v1/apply', {
      body: [
        cellManifest(`${customer}-pool`, 'shared'),
        cellManifest(`${customer}-silo`, 'dedicated'),
        ...[customer, `${customer}x`].flatMap((code) => poolTenantManifests(code, code)),
      ],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    c = await startController(s.t);
    await until(
      'the pool databases Ready',
      async () => {
        const r = await s.t.owner.query(
          `select count(*)::int as n from integration_resources where phase = 'Ready' and slug like $1`,
          [`${customer}%.database`],
        );
        return r.rows[0].n === 2;
      },
      30_000,
    );
    // The tenant's data, in its pool schema, owned by its own role.
    await withClient(defaultDataplaneUrl(s.t.ownerUrl), async (dp) => {
      await dp.query('begin');
      await dp.query(`set local role t_${base}`);
      await dp.query(`
        create table t_${base}.orders (id bigserial primary key, n integer not null unique, note text);
        create table t_${base}.items (id integer generated always as identity primary key,
                                      order_id bigint not null references t_${base}.orders (id));
        insert into t_${base}.orders (n, note) select g, md5(g::text) from generate_series(1, 5000) g;
        insert into t_${base}.items (order_id) select 1 + (g % 5000) from generate_series(1, 3000) g;`);
      await dp.query('commit');
    });
    browser = await chromium.launch({ executablePath: executablePath as string });
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    await c?.stop();
    if (s) await dropDataplane(s.t);
    await s?.close();
  });

  it('migrates a pool tenant to silo from its page (plan, verdicts, confirmation, live steps, verification) and rolls it back', async () => {
    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/tenants/${tenant}`);
    await page.getByText('No migrations.').waitFor();
    await page.getByRole('link', { name: 'Migrate…' }).click();
    await page.getByRole('heading', { name: `Migrate ${tenant}` }).waitFor();
    await accessible(page, 'migrate-form');

    // The dry run: the plan and the verdicts, and nothing written yet.
    await page.getByLabel('Change the isolation').check();
    await page.getByLabel('isolation model').selectOption('silo');
    await page.getByLabel('Rollback window (hours)').fill('2');
    await page.getByRole('button', { name: 'Show the plan' }).click();
    const verdicts = page.getByRole('table', { name: 'Policy verdicts' });
    await text(verdicts, /residency.*allow/s);
    await text(verdicts, /capacity.*allow/s);
    await text(page.getByRole('table', { name: 'Placement now and after' }), new RegExp(`${customer}-silo`));
    await text(page.locator('#plan ol'), /checksum-bulk.*freeze-writes.*cut-over/s);
    expect(
      (await s.t.owner.query('select count(*)::int as n from tenant_migrations')).rows[0].n,
      'a dry run writes nothing',
    ).toBe(0);
    await accessible(page, 'migrate-plan');

    // The confirmation names the tenant: anything else is refused, and still nothing is written.
    await page.getByLabel(`Type ${tenant} to confirm`).fill(other);
    await page.getByRole('button', { name: `Migrate ${tenant}` }).click();
    await text(page.locator('#plan [role=alert]'), `Type "${tenant}" exactly`);
    expect((await s.t.owner.query('select count(*)::int as n from tenant_migrations')).rows[0].n).toBe(0);
    await page.getByLabel(`Type ${tenant} to confirm`).fill(tenant);
    await page.getByRole('button', { name: `Migrate ${tenant}` }).click();
    await page.waitForURL(`**/console/tenants/${tenant}/migrations/*`);
    migrationId = page.url().split('/').at(-1) ?? '';
    expect(migrationId).toMatch(/^[0-9a-f-]{36}$/);

    // No engine yet: the workflow waits, and the page says it is updating live.
    await text(page.locator('#migration'), /updating live/);
    await accessible(page, 'migration-pending');
    engine = startWorkflowEngine(s.t, { providers: c.providers });
    // The same page, not reloaded: the steps complete, the tenant is cut over, the verification shows.
    await text(page.locator('#migration p').first(), /CutOver/, 120_000);
    const steps = page.getByRole('table', { name: 'Steps of the migration' });
    const states = await steps.locator('tbody tr td:nth-child(3)').allTextContents();
    expect(states).toHaveLength(10);
    expect(new Set(states)).toEqual(new Set(['Completed']));
    const summary = page.getByRole('table', { name: 'Summary' });
    await text(summary, /logical-replication/);
    await text(summary, /Write freeze\s*\d+ ms/);
    await text(summary, /Rollback window\s*2 h · until .* \(open\)/s);
    const verification = page.getByRole('table', { name: /^Verification of .*: equal/ });
    await text(verification, /orders\s*5000\s*5000/);
    await text(verification, /items\s*3000\s*3000/);
    await text(page.locator('#verify-h + table + p'), /journalled/);
    await accessible(page, 'migration-cut-over');

    // A write on the silo after the cut-over, which the rollback must carry back.
    await withClient(databaseUrl(defaultDataplaneUrl(s.t.ownerUrl), `tenantry_${base}`), (silo) =>
      silo.query(`insert into public.orders (n, note) values (-7, 'written on the silo')`),
    );

    // Roll back, confirmed by the tenant's name; its steps and its verification show live.
    await page.getByRole('button', { name: 'Roll back…' }).click();
    await page.getByRole('heading', { name: `Roll back the migration of tenant ${tenant}?` }).waitFor();
    await accessible(page, 'migration-rollback-confirm');
    await page.getByLabel(`Type ${tenant} to confirm`).fill(tenant);
    await page.getByRole('button', { name: `Roll back ${tenant}` }).click();
    await page.getByRole('status').filter({ hasText: 'Done: rollback started' }).waitFor();
    await text(page.locator('#migration p').first(), /RolledBack/, 120_000);
    await text(page.locator('#migration'), /write freeze \d+ ms/);
    await page.getByRole('table', { name: 'Steps of the rollback' }).waitFor();
    await text(
      page.getByRole('table', { name: /^Verification of the copy back of .*: equal/ }),
      /orders\s*5001\s*5001/,
    );
    await accessible(page, 'migration-rolled-back');
    const back = await withClient(defaultDataplaneUrl(s.t.ownerUrl), (dp) =>
      dp.query(`select note from t_${base}.orders where n = -7`),
    );
    expect(back.rows).toEqual([{ note: 'written on the silo' }]);
    const t = await s.request('GET', `/v1/tenants/${tenant}`);
    expect(t.body.status.placement).toMatchObject({ isolation: 'pool', cell: `${customer}-pool` });

    // The list of every migration, paged by cursor, and the tenant's section.
    await page.goto(`${s.url}/console/migrations`);
    const list = page.getByRole('table', { name: 'Migrations, newest first' });
    await text(list, new RegExp(`${tenant}.*RolledBack.*Equal`, 's'));
    await accessible(page, 'migrations');
    await page.goto(`${s.url}/console/tenants/${tenant}`);
    await text(page.getByRole('table', { name: 'Migrations of this tenant, newest first' }), /RolledBack/);
    await page.context().close();
  }, 300_000);

  it("shows a tenant admin its own tenant's migrations, offers it no migrate or roll back, and the server refuses them", async () => {
    const token = await s.token({ subject: 'cm-admin', tenant, roles: ['tenant-admin'] });
    const page = await signedInWithToken(browser, s, token);
    await page.goto(`${s.url}/console/tenants/${tenant}`);
    await text(page.getByRole('table', { name: 'Migrations of this tenant, newest first' }), /RolledBack/);
    expect(await page.getByRole('link', { name: 'Migrate…' }).count()).toBe(0);
    await page.goto(`${s.url}/console/tenants/${tenant}/migrations/${migrationId}`);
    await text(page.locator('#migration p').first(), /RolledBack/);
    expect(await page.getByRole('button', { name: 'Roll back…' }).count()).toBe(0);
    await accessible(page, 'tenant-admin-migration');
    await page.goto(`${s.url}/console/migrations`);
    const list = page.getByRole('table', { name: 'Migrations, newest first' });
    await text(list, new RegExp(tenant));
    expect(await list.textContent()).not.toContain(other);

    // Typed URLs and forged posts (with the session's CSRF token): refused, nothing started.
    for (const url of [
      `/console/tenants/${tenant}/migrate`,
      `/console/tenants/${other}/migrations`,
      `/console/tenants/${other}/migrations/${migrationId}`,
      `/console/tenants/${tenant}/migrations/${migrationId}/confirm-rollback`,
    ]) {
      const res = await page.goto(`${s.url}${url}`);
      expect([403, 404], url).toContain(res?.status());
    }
    const statuses = await page.evaluate(
      async ({ t, o }) => {
        const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';
        const post = (url: string, body: string) =>
          fetch(url, {
            method: 'POST',
            headers: { 'x-csrf-token': csrf, 'content-type': 'application/x-www-form-urlencoded' },
            body,
          }).then((r) => r.status);
        return [
          await post(`/console/tenants/${t}/migrate/plan`, 'change=isolation&isolation=silo'),
          await post(`/console/tenants/${t}/migrate`, `change=isolation&isolation=silo&confirm=${t}`),
          await post(`/console/tenants/${o}/migrate`, `change=isolation&isolation=silo&confirm=${o}`),
        ];
      },
      { t: tenant, o: other },
    );
    for (const status of statuses) expect([403, 404]).toContain(status);
    expect((await s.t.owner.query('select count(*)::int as n from tenant_migrations')).rows[0].n).toBe(1);
    await page.context().close();
  });

  it('refuses a migration posted without the CSRF token', async () => {
    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/tenants/${other}`);
    const status = await page.evaluate(async (o) => {
      const res = await fetch(`/console/tenants/${o}/migrate`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `change=isolation&isolation=silo&confirm=${o}`,
      });
      return res.status;
    }, other);
    expect(status).toBe(403);
    expect((await s.t.owner.query('select count(*)::int as n from tenant_migrations')).rows[0].n).toBe(1);
    await page.context().close();
  });

  it('pages the migrations lists by cursor, newest first (API and console)', async () => {
    // History rows of the other tenant (as its workflows would have left them), a minute apart.
    const o = await s.request('GET', `/v1/tenants/${other}`);
    const at = (i: number) => new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString();
    const place = {
      cell: `${customer}-pool`,
      cellUuid: o.body.metadata.uuid,
      region: 'eu',
      isolation: 'pool',
      networkPartition: 'shared',
      dataPartition: { model: 'pool', kind: 'schema', name: 'x' },
    };
    for (let i = 0; i < 26; i++)
      await s.t.owner.query(
        `insert into tenant_migrations (id, tenant_id, kind, state, source, target, plan, rollback_window_seconds, actor, created_at)
         values (gen_random_uuid(), $1, 'isolation', 'Failed', $2, $2, '{}', 60, '{"principal":"history","kind":"user"}', $3)`,
        [o.body.metadata.uuid, JSON.stringify(place), at(i)],
      );
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let n = 0; n < 5; n++) {
      const r: { status: number; body: { items: { createdAt: string }[]; nextCursor: string | null } } =
        await s.request(
          'GET',
          `/v1/tenants/${other}/migrations?limit=10${cursor ? `&cursor=${cursor}` : ''}`,
        );
      expect(r.status).toBe(200);
      seen.push(...r.body.items.map((m) => m.createdAt));
      cursor = r.body.nextCursor;
      if (!cursor) break;
    }
    expect(seen).toEqual(Array.from({ length: 26 }, (_, i) => at(25 - i)));
    expect((await s.request('GET', `/v1/tenants/${other}/migrations?cursor=nope`)).status).toBe(400);

    const page = await signIn(browser, s);
    await page.goto(`${s.url}/console/migrations?tenant=${other}`);
    const list = page.getByRole('table', { name: 'Migrations, newest first' });
    expect(await list.locator('tbody tr').count()).toBe(25);
    await page.getByRole('link', { name: 'Next page' }).click();
    await text(list, /history|Failed/);
    expect(await list.locator('tbody tr').count()).toBe(1);
    expect(await page.getByRole('link', { name: 'Next page' }).count()).toBe(0);
    await page.goto(`${s.url}/console/tenants/${other}`);
    await page.getByRole('link', { name: 'All migrations of this tenant' }).waitFor();
    await page.context().close();
  });
});
