import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

const customer = `ma${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const doc = (kind: string, name: string | undefined, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata: name ? { name } : {},
  spec,
});
let s: TestServer;
let tenantAdmin: string;

beforeAll(async () => {
  s = await startTestServer();
  const cell = (name: string, tenancy: string) =>
    doc('Cell', name, {
      region: 'eu',
      stage: 'nonprod',
      environmentTypes: ['dev'],
      tenancy,
      capacity: { tenants: 5 },
    });
  const res = await s.request('POST', '/v1/apply', {
    body: [
      cell(`${customer}-pool`, 'shared'),
      cell(`${customer}-silo`, 'dedicated'),
      doc('Customer', customer, { displayName: 'Api', shortCode: customer }),
      doc('Tenant', undefined, { customer, region: 'eu', environmentType: 'dev', isolation: 'pool' }),
    ],
  });
  expect(res.status).toBe(200);
  tenantAdmin = await s.token({ subject: 'ann', tenant, roles: ['tenant-admin'] });
});
afterAll(() => s?.close());

const path = `/v1/tenants/${tenant}/migrations`;
const counts = async () =>
  (
    await s.t.owner.query(
      `select (select count(*) from tenant_migrations)::int as migrations, (select count(*) from workflows)::int as workflows`,
    )
  ).rows[0];

describe('migrations over HTTP', () => {
  it('refuses bad or impossible requests with a 4xx naming the rule, and writes nothing', async () => {
    const before = await counts();
    const cases: [unknown, number, string | undefined][] = [
      // The tenant names no allowed regions: it stays in its own.
      [{ region: 'us' }, 422, 'placement.residency'],
      [{ region: 'eu' }, 409, 'migration.same_region'],
      [{ region: 'us', isolation: 'silo' }, 422, 'migration.one_change'],
      [{ isolation: 'pool' }, 409, 'migration.same_isolation'],
      [{ isolation: 'shared' }, 422, 'migration.unsupported'],
      [{}, 422, 'field.required'],
      [{ isolation: 'silo', extra: true }, 422, undefined],
      [{ isolation: 'dedicated' }, 422, undefined],
      [{ isolation: 'silo', rollbackWindowSeconds: 0 }, 422, undefined],
    ];
    for (const [body, status, code] of cases) {
      const r = await s.request('POST', path, { body });
      expect([JSON.stringify(body), r.status]).toEqual([JSON.stringify(body), status]);
      expect(r.headers.get('content-type')).toMatch(/application\/problem\+json/);
      if (code) expect(r.body.code).toBe(code);
    }
    expect(
      (await s.request('POST', '/v1/tenants/nobody-eu-dev/migrations', { body: { isolation: 'silo' } }))
        .status,
    ).toBe(404);
    const denied = await s.request('POST', path, { body: { isolation: 'silo' }, token: tenantAdmin });
    expect(denied.status).toBe(403);
    expect(await counts()).toEqual(before);
  });

  it('a dry run shows the plan and the verdicts and changes nothing', async () => {
    const before = await counts();
    const r = await s.request('POST', `${path}?dryRun=true`, { body: { isolation: 'silo' } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      dryRun: true,
      from: { isolation: 'pool', cell: `${customer}-pool` },
      to: { isolation: 'silo', cell: `${customer}-silo` },
    });
    expect(r.body.verdicts.map((v: { rule: string }) => v.rule)).toEqual([
      'residency',
      'plan.isolation',
      'capacity',
      'freeze',
    ]);
    expect(await counts()).toEqual(before);
  });

  it('under a freeze a migration is refused with 423', async () => {
    const put = await s.request('PUT', '/v1/freezes/mig-hold', {
      body: { scope: 'platform', reason: 'change freeze' },
    });
    expect(put.status).toBe(200);
    const r = await s.request('POST', path, { body: { isolation: 'silo' } });
    expect(r.status).toBe(423);
    expect(r.body.code).toBe('workflow.frozen');
    expect((await s.request('DELETE', '/v1/freezes/mig-hold')).status).toBe(204);
  });

  it('starts a migration as a workflow (202), shows it to the tenant, refuses an early rollback, and cancels', async () => {
    const r = await s.request('POST', path, { body: { isolation: 'silo', rollbackWindowSeconds: 600 } });
    expect(r.status).toBe(202);
    expect(r.body).toMatchObject({
      state: 'Running',
      from: { isolation: 'pool' },
      to: { isolation: 'silo' },
    });
    const id = r.body.id as string;
    const wf = await s.request('GET', `/v1/workflows/${id}`);
    expect(wf.status).toBe(200);
    expect(wf.body.type).toBe('migration.isolation');
    expect(wf.body.steps.map((x: { name: string }) => x.name)).toContain('sync-and-verify');
    const again = await s.request('POST', path, { body: { isolation: 'silo' } });
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ code: 'workflow.in_progress', details: { workflowId: id } });

    const mine = await s.request('GET', `${path}/${id}`, { token: tenantAdmin });
    expect(mine.status).toBe(200);
    expect(mine.body.id).toBe(id);
    expect((await s.request('GET', path, { token: tenantAdmin })).body.items).toHaveLength(1);
    expect((await s.request('GET', `${path}/not-a-uuid`)).status).toBe(404);
    expect((await s.request('GET', `${path}/${crypto.randomUUID()}`)).status).toBe(404);

    const early = await s.request('POST', `${path}/${id}/rollback`);
    expect(early.status).toBe(409);
    expect(early.body.code).toBe('migration.rollback_unavailable');
    expect((await s.request('POST', `${path}/${id}/rollback`, { token: tenantAdmin })).status).toBe(403);
    expect((await s.request('POST', `/v1/workflows/${id}/cancel`)).status).toBe(200);
  });
});
