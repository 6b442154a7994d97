import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

let s: TestServer;
let A: { slug: string; uuid: string };
let B: { slug: string; uuid: string };

beforeAll(async () => {
  s = await startTestServer();
  const res = await s.request('POST', '/v1/apply', {
    body: [customerDoc('scopea'), tenantDoc('scopea'), customerDoc('scopeb'), tenantDoc('scopeb')],
  });
  const tenants = res.body.results.filter((r: { kind: string }) => r.kind === 'Tenant');
  A = { slug: tenants[0].name, uuid: tenants[0].uuid };
  B = { slug: tenants[1].name, uuid: tenants[1].uuid };
});
afterAll(async () => s?.close());

describe("a tenant-admin and its tenant's webhook endpoints", () => {
  it('reads its own endpoints and their deliveries (the policy sees the endpoint’s tenant)', async () => {
    const admin = await s.token({
      subject: 'carol',
      tenant: A.slug,
      roles: ['tenant-admin'],
      sessionId: null,
    });
    const created = await s.request('POST', '/v1/webhook-endpoints', {
      token: admin,
      body: { metadata: { name: 'mine', tenant: A.slug }, spec: { url: 'https://hooks.example.com/a' } },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const id = created.body.metadata.uuid;
    const list = await s.request('GET', '/v1/webhook-endpoints', { token: admin });
    expect(list.status, JSON.stringify(list.body)).toBe(200);
    expect(list.body.items.map((i: { metadata: { uuid: string } }) => i.metadata.uuid)).toEqual([id]);
    const one = await s.request('GET', `/v1/webhook-endpoints/${id}`, { token: admin });
    expect(one.status, JSON.stringify(one.body)).toBe(200);
    const deliveries = await s.request('GET', `/v1/webhooks/${id}/deliveries`, { token: admin });
    expect(deliveries.status, JSON.stringify(deliveries.body)).toBe(200);
    // Tenant B's admin does not see it at all.
    const other = await s.token({
      subject: 'dave',
      tenant: B.slug,
      roles: ['tenant-admin'],
      sessionId: null,
    });
    expect((await s.request('GET', `/v1/webhook-endpoints/${id}`, { token: other })).status).toBe(404);
  });
});

describe('tenant spoofing in JSON and YAML is one check', () => {
  it('refuses a WebhookEndpoint naming a foreign tenant with 403 tenant.spoofing, audited, in either format', async () => {
    const admin = await s.token({
      subject: 'erin',
      tenant: B.slug,
      roles: ['tenant-admin'],
      sessionId: null,
    });
    const doc = {
      apiVersion: 'tenantry.dev/v1',
      kind: 'WebhookEndpoint',
      metadata: { name: 'evil', tenant: A.slug },
      spec: { url: 'https://hooks.example.com/evil' },
    };
    const yaml = `apiVersion: tenantry.dev/v1
kind: WebhookEndpoint
metadata:
  name: evil
  tenant: ${A.slug}
spec:
  url: https://hooks.example.com/evil
`;
    const attempts = [
      await s.request('POST', '/v1/apply', { token: admin, raw: yaml, contentType: 'application/yaml' }),
      await s.request('POST', '/v1/apply', { token: admin, body: [doc] }),
      await s.request('POST', '/v1/webhook-endpoints', { token: admin, body: doc }),
    ];
    for (const r of attempts) {
      expect(r.status, JSON.stringify(r.body)).toBe(403);
      expect(r.body).toMatchObject({ code: 'tenant.spoofing', errors: [{ pointer: '/0/metadata/tenant' }] });
    }
    const audited = await s.t.owner.query(
      `select count(*)::int as n from audit_records where actor_principal = 'erin' and decision->>'code' = 'tenant.spoofing'`,
    );
    expect(audited.rows[0].n).toBe(3);
    const created = await s.t.owner.query(
      `select count(*)::int as n from webhook_endpoints where slug = 'evil'`,
    );
    expect(created.rows[0].n).toBe(0);
  });
});
