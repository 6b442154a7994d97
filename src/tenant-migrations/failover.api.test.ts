import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { doc, movableCustomer } from '../../test/helpers/two-regions.js';

// The failover API's refusals and dry run over HTTP (the failover itself runs on real engines in
// failover.test.ts). Standby records are written directly here: the keeper needs two data planes.
const customer = `fa${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const bare = `${customer}b`;
let s: TestServer;
let tenantAdmin: string;
let tenantId: string;

beforeAll(async () => {
  s = await startTestServer();
  const res = await s.request('POST', '/v1/apply', {
    body: [
      ...movableCustomer(customer, 'Api', { standby: { region: 'us' } }),
      doc('Customer', bare, { displayName: 'Bare', shortCode: bare }),
      doc('Tenant', undefined, { customer: bare, region: 'eu', environmentType: 'dev', isolation: 'pool' }),
    ],
  });
  expect(res.status).toBe(200);
  tenantId = (await s.t.owner.query('select id from tenants where slug = $1', [tenant])).rows[0].id;
  tenantAdmin = await s.token({ subject: 'ann', tenant, roles: ['tenant-admin'] });
});
afterAll(() => s?.close());

const path = `/v1/tenants/${tenant}/failover`;
const counts = async () =>
  (
    await s.t.owner.query(
      `select (select count(*) from tenant_failovers)::int as failovers, (select count(*) from workflows)::int as workflows`,
    )
  ).rows[0];

describe('failover over HTTP', () => {
  it('refuses a standby in the tenant region or outside its residency when the manifest is applied', async () => {
    for (const [spec, code] of [
      [{ residency: { allowedRegions: ['eu', 'us'] }, standby: { region: 'eu' } }, 'standby.same_region'],
      [{ standby: { region: 'us' } }, 'placement.residency'],
    ] as const) {
      const r = await s.request('POST', '/v1/apply', {
        body: [
          doc('Tenant', undefined, {
            customer: bare,
            region: 'eu',
            environmentType: 'dev',
            isolation: 'pool',
            ...spec,
          }),
        ],
      });
      expect(r.status).toBe(422);
      expect(JSON.stringify(r.body)).toContain(code);
    }
  });

  it('refuses with the rule: no standby, lag unknown, not the standby region, residency, bad input; writes nothing', async () => {
    const before = await counts();
    const refused = async (p: string, body: unknown, status: number, code?: string) => {
      const r = await s.request('POST', p, { body });
      expect([JSON.stringify(body), r.status]).toEqual([JSON.stringify(body), status]);
      expect(r.headers.get('content-type')).toMatch(/application\/problem\+json/);
      if (code) expect(r.body.code).toBe(code);
    };
    await refused(`/v1/tenants/${bare}-eu-dev/failover`, {}, 409, 'failover.no_standby');
    await refused(path, {}, 409, 'failover.no_standby');
    await s.t.owner.query(
      `insert into tenant_standbys (tenant_id, region, state) values ($1, 'us', 'Establishing')`,
      [tenantId],
    );
    await refused(path, {}, 409, 'failover.no_standby');
    await s.t.owner.query(`update tenant_standbys set state = 'Streaming' where tenant_id = $1`, [tenantId]);
    await refused(path, {}, 409, 'failover.lag_unknown');
    await s.t.owner.query(
      `update tenant_standbys set lag_bytes = 0, measured_at = now(), caught_up_at = now() - interval '2 seconds' where tenant_id = $1`,
      [tenantId],
    );
    await refused(path, { region: 'ap' }, 422, 'failover.not_standby_region');
    // A migration would replace what the standby replicates: the standby goes first.
    await refused(`/v1/tenants/${tenant}/migrations`, { region: 'us' }, 409, 'migration.standby_exists');
    await refused(`/v1/tenants/${tenant}/migrations`, { isolation: 'silo' }, 409, 'migration.standby_exists');
    await refused(path, { region: 'us', extra: 1 }, 422);
    await refused(path, { region: '' }, 422);
    await refused('/v1/tenants/nobody-eu-dev/failover', {}, 404);
    // Residency narrowed since the standby was made: the region is no longer allowed.
    await s.t.owner.query(
      `update tenants set spec = jsonb_set(spec, '{residency,allowedRegions}', '["eu"]') where id = $1`,
      [tenantId],
    );
    await refused(path, {}, 422, 'placement.residency');
    await s.t.owner.query(
      `update tenants set spec = jsonb_set(spec, '{residency,allowedRegions}', '["eu","us"]') where id = $1`,
      [tenantId],
    );
    // The standby is kept in another cell (by the agent holding it) than the placement rules choose.
    await s.t.owner.query(
      `update tenant_standbys set plan = jsonb_build_object('targetAgent', (select id from cells where slug = $2))
       where tenant_id = $1`,
      [tenantId, `${customer}-eu`],
    );
    await refused(path, {}, 409, 'failover.standby_cell');
    await s.t.owner.query(`update tenant_standbys set plan = '{}' where tenant_id = $1`, [tenantId]);
    const denied = await s.request('POST', path, { body: {}, token: tenantAdmin });
    expect(denied.status).toBe(403);
    expect(await counts()).toEqual(before);
  });

  it('a dry run shows the plan, the lag and the verdicts and changes nothing; the standby and failovers read', async () => {
    const before = await counts();
    const r = await s.request('POST', `${path}?dryRun=true`, { body: {} });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      dryRun: true,
      tenant,
      from: { region: 'eu', cell: `${customer}-eu` },
      to: { region: 'us', cell: `${customer}-us` },
      standby: { lagBytes: 0 },
    });
    expect(r.body.standby.dataLossWindowSeconds).toBeGreaterThanOrEqual(2);
    expect(r.body.verdicts.map((v: { rule: string }) => v.rule)).toEqual([
      'standby',
      'lag',
      'residency',
      'capacity',
      'freeze',
      'workflow',
    ]);
    expect(await counts()).toEqual(before);
    const standby = await s.request('GET', `/v1/tenants/${tenant}/standby`);
    expect(standby.status).toBe(200);
    expect(standby.body).toMatchObject({ region: 'us', state: 'Streaming', lagBytes: 0, lagSeconds: 2 });
    // The tenant reads its own standby; another tenant's is not found.
    expect((await s.request('GET', `/v1/tenants/${tenant}/standby`, { token: tenantAdmin })).status).toBe(
      200,
    );
    expect((await s.request('GET', `/v1/tenants/${bare}-eu-dev/standby`)).status).toBe(404);
    expect((await s.request('GET', `/v1/tenants/${tenant}/failovers`)).body).toEqual({ items: [] });
    expect((await s.request('GET', `/v1/tenants/${tenant}/failovers/${tenantId}`)).status).toBe(404);
  });
});
