import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropDataplane, startController, type TestController, until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

const customer = `cr${randomBytes(3).toString('hex')}`;
const other = `co${randomBytes(3).toString('hex')}`;
const tenantA = `${customer}-eu-dev`;
const tenantB = `${other}-eu-dev`;
const doc = (kind: string, name: string | undefined, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata: name ? { name } : {},
  spec,
});
const database = (tenant: string) =>
  doc('IntegrationResource', undefined, {
    scope: { tenant },
    type: 'database',
    database: { isolation: 'pool' },
  });
const path = (ref: string) => `/v1/integration-resources/${ref}/credentials`;

let s: TestServer;
let c: TestController | undefined;
let adminA: string;

beforeAll(async () => {
  s = await startTestServer();
  const applied = await s.request('POST', '/v1/apply', {
    body: [
      doc('Customer', customer, { displayName: 'Cred', shortCode: customer }),
      doc('Customer', other, { displayName: 'Other', shortCode: other }),
      doc('Tenant', undefined, { customer, region: 'eu', environmentType: 'dev' }),
      doc('Tenant', undefined, { customer: other, region: 'eu', environmentType: 'dev' }),
      doc('System', 'credsys', { displayName: 'Credsys', serviceId: 'credsys' }),
      doc('Deployment', undefined, { tenant: tenantA, system: 'credsys' }),
      doc('IntegrationResource', undefined, {
        scope: { deployment: `${tenantA}-credsys` },
        type: 'blob-container',
      }),
      database(tenantA),
      database(tenantB),
    ],
  });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  adminA = await s.token({ subject: 'ann', tenant: tenantA, roles: ['tenant-admin'] });
});
afterAll(async () => {
  await c?.stop();
  await s?.close();
  if (s) await dropDataplane(s.t);
});

const credentialAudits = async () =>
  (
    await s.t.owner.query(
      `select tenant_id, actor_principal, outcome, target_id, to_jsonb(a) as rec
       from audit_records a where action = 'integrationresource.credentials' order by time`,
    )
  ).rows;

describe('GET /v1/integration-resources/{ref}/credentials', () => {
  it('answers 409 credentials.not_provisioned until the database is Ready, 404 for unknown, never cacheable', async () => {
    const pending = await s.request('GET', path(`${tenantA}.database`));
    expect(pending.status).toBe(409);
    expect(pending.body.code).toBe('credentials.not_provisioned');
    expect(pending.headers.get('cache-control')).toBe('no-store');
    const unknown = await s.request('GET', path('nobody-eu-dev.database'));
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('cache-control')).toBe('no-store');
    expect(await credentialAudits()).toEqual([]);
  });

  it('gives the owner a working connection, audits the read without the secret', async () => {
    c = await startController(s.t);
    const ready = await until('both databases Ready', async () => {
      const [a, b] = await Promise.all(
        [tenantA, tenantB].map((t) => s.request('GET', `/v1/integration-resources/${t}.database`)),
      );
      return a?.body.status.phase === 'Ready' && b?.body.status.phase === 'Ready' && a.body;
    });
    // A blob container has no credentials.
    const blob = await s.request('GET', path(`${tenantA}-credsys.blob`));
    expect([blob.status, blob.body.code]).toEqual([409, 'credentials.not_applicable']);

    const r = await s.request('GET', path(`${tenantA}.database`), { token: adminA });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.body).toMatchObject({
      resource: ready.metadata.uuid,
      name: `${tenantA}.database`,
      isolation: 'pool',
      username: expect.any(String),
      password: expect.any(String),
    });
    // The credentials work: a session of the tenant's role, which can write in its schema.
    const client = new pg.Client({ connectionString: r.body.url });
    await client.connect();
    try {
      const who = await client.query('select current_user as u');
      expect(who.rows[0].u).toBe(r.body.username);
      await client.query('create table t (n int)');
      await client.query('insert into t values (1)');
    } finally {
      await client.end();
    }
    // The platform admin reads them too.
    expect((await s.request('GET', path(ready.metadata.uuid))).status).toBe(200);

    const audits = await credentialAudits();
    expect(audits).toHaveLength(2);
    expect(audits[0]).toMatchObject({
      tenant_id: ready.metadata.tenantUuid,
      actor_principal: 'ann',
      outcome: 'success',
      target_id: ready.metadata.uuid,
    });
    for (const a of audits) expect(JSON.stringify(a.rec)).not.toContain(r.body.password);
  }, 60_000);

  it("refuses another tenant's credentials (row-level security: 404), readers and operators (403, audited)", async () => {
    const before = (await credentialAudits()).length;
    const cross = await s.request('GET', path(`${tenantB}.database`), { token: adminA });
    expect(cross.status).toBe(404);
    expect(cross.body.password).toBeUndefined();
    // By UUID too: the row is not visible to tenant A's scope at all.
    const b = await s.request('GET', `/v1/integration-resources/${tenantB}.database`);
    expect((await s.request('GET', path(b.body.metadata.uuid), { token: adminA })).status).toBe(404);

    const reader = await s.token({ subject: 'rita', tenant: tenantA, roles: ['tenant-reader'] });
    const operator = await s.token({ subject: 'otto', roles: ['platform-operator'] });
    for (const token of [reader, operator]) {
      const r = await s.request('GET', path(`${tenantA}.database`), { token });
      expect([r.status, r.body.code]).toEqual([403, 'authz.denied']);
      expect(r.body.password).toBeUndefined();
    }
    const audits = await credentialAudits();
    expect(audits.slice(before).map((a) => [a.actor_principal, a.outcome])).toEqual([
      ['rita', 'denied'],
      ['otto', 'denied'],
    ]);
  });
});
