import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { scopeKey } from '../../test/helpers/tenant-scope.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { readInScope, tenantScopeProof } from './database.js';

/**
 * Issue 24: a GET reads its object in one statement (`tenantry_read_object`, migration 0036). The
 * database still decides the scope: attempts to cross from tenant A to tenant B through that
 * statement, from the API, from the application's own function and from raw SQL on the tenant role.
 */
let s: TestServer;
let A: { slug: string; uuid: string; endpoint: string };
let B: { slug: string; uuid: string; endpoint: string };
let key: Buffer;
let app: pg.Client;

beforeAll(async () => {
  s = await startTestServer();
  const res = await s.request('POST', '/v1/apply', {
    body: [customerDoc('srda'), tenantDoc('srda'), customerDoc('srdb'), tenantDoc('srdb')],
  });
  expect(res.status).toBe(200);
  const [a, b] = res.body.results.filter((r: { kind: string }) => r.kind === 'Tenant');
  const endpoint = async (tenant: string) => {
    const ep = await s.request('POST', '/v1/webhook-endpoints', {
      body: { metadata: { name: 'ops', tenant }, spec: { url: 'https://hooks.example.com/x' } },
    });
    expect(ep.status).toBe(201);
    return ep.body.metadata.uuid as string;
  };
  A = { slug: a.name, uuid: a.uuid, endpoint: await endpoint(a.name) };
  B = { slug: b.name, uuid: b.uuid, endpoint: await endpoint(b.name) };
  key = await scopeKey(s.t.owner);
  app = new pg.Client({ connectionString: s.t.appUrl });
  await app.connect();
});
afterAll(async () => {
  await app?.end();
  await s?.close();
});

const read = (
  table: string,
  id: string | null,
  slug: string | null,
  tenant: string | null,
  proof: unknown[],
) =>
  app.query(
    `select id from tenantry_read_object(null::${table}, $1::uuid, $2::text, false, $3::uuid, $4::bigint, $5)`,
    [id, slug, tenant, ...proof],
  );
const proofOf = (tenant: string, expires = Math.floor(Date.now() / 1000) + 60) => [
  expires,
  tenantScopeProof(key, tenant, expires),
];

describe('one-statement reads across tenants', () => {
  it("answers 404 to A's admin for B's endpoint by UUID, and 200 for its own", async () => {
    const admin = await s.token({ subject: 'ann', tenant: A.slug, roles: ['tenant-admin'], sessionId: null });
    const own = await s.request('GET', `/v1/webhook-endpoints/${A.endpoint}`, { token: admin });
    expect(own.status, JSON.stringify(own.body)).toBe(200);
    const other = await s.request('GET', `/v1/webhook-endpoints/${B.endpoint}`, { token: admin });
    expect(other.status).toBe(404);
    expect(other.body.code).toMatch(/\.not_found$/);
    // The platform sees both.
    expect((await s.request('GET', `/v1/webhook-endpoints/${B.endpoint}`)).status).toBe(200);
  });

  it("finds nothing of B in A's scope through the application's function, by id or slug", async () => {
    const scopeA = { kind: 'tenant', tenantId: A.uuid } as const;
    expect(await readInScope(s.t.db, scopeA, 'tenants', { id: A.uuid })).toMatchObject({ id: A.uuid });
    expect(await readInScope(s.t.db, scopeA, 'tenants', { id: B.uuid })).toBeUndefined();
    expect(await readInScope(s.t.db, scopeA, 'tenants', { slug: B.slug })).toBeUndefined();
    expect(await readInScope(s.t.db, scopeA, 'webhook_endpoints', { id: B.endpoint })).toBeUndefined();
    expect(
      await readInScope(s.t.db, { kind: 'platform' }, 'webhook_endpoints', { id: B.endpoint }),
    ).toMatchObject({ id: B.endpoint });
  });

  it('refuses B on the tenant role without a proof of B, and shows nothing as "platform" there', async () => {
    const refused = /insufficient proof/;
    // A proof of A, presented for B.
    await expect(read('tenants', B.uuid, null, B.uuid, proofOf(A.uuid))).rejects.toThrow(refused);
    // A forged proof, and an expired one.
    await expect(
      read('tenants', B.uuid, null, B.uuid, [proofOf(B.uuid)[0], Buffer.alloc(32)]),
    ).rejects.toThrow(refused);
    await expect(
      read('tenants', B.uuid, null, B.uuid, proofOf(B.uuid, Math.floor(Date.now() / 1000) - 5)),
    ).rejects.toThrow(refused);
    // A's proof reads A and only A.
    expect((await read('tenants', A.uuid, null, A.uuid, proofOf(A.uuid))).rows).toHaveLength(1);
    expect((await read('tenants', B.uuid, null, A.uuid, proofOf(A.uuid))).rows).toHaveLength(0);
    expect((await read('tenants', null, B.slug, A.uuid, proofOf(A.uuid))).rows).toHaveLength(0);
    // The platform scope asked for on the tenant role: the setting alone shows nothing.
    expect((await read('tenants', B.uuid, null, null, [null, null])).rows).toHaveLength(0);
    expect((await read('webhook_endpoints', B.endpoint, null, null, [null, null])).rows).toHaveLength(0);
  });

  it("ends the scope with the statement: the next statement on the connection sees none of A's rows", async () => {
    expect((await read('tenants', A.uuid, null, A.uuid, proofOf(A.uuid))).rows).toHaveLength(1);
    expect((await app.query('select id from tenants where id = $1', [A.uuid])).rows).toHaveLength(0);
    // In an explicit transaction bound to A, the function cannot switch it to B.
    await app.query('begin');
    try {
      expect((await read('tenants', A.uuid, null, A.uuid, proofOf(A.uuid))).rows).toHaveLength(1);
      await expect(read('tenants', B.uuid, null, B.uuid, proofOf(B.uuid))).rejects.toThrow(
        /bound to another tenant/,
      );
    } finally {
      await app.query('rollback');
    }
  });
});
