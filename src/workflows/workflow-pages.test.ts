import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

const TENANT_A = '8c9646e0-b9ce-426a-8849-a047e29afa9d'; // circlek-eu-uat
const TENANT_B = '6846a7a4-4e09-41a8-918c-9c8e2aa938ac'; // circlek-eu-prod
let s: TestServer;

beforeAll(async () => {
  s = await startTestServer();
  expect((await s.request('POST', '/v1/apply', { body: circleK() })).status).toBe(200);
  // 40 finished workflows over two tenants, written behind the API's back; every fourth shares its
  // created_at with the one before, so the cursor must break ties by id.
  await s.t.owner.query(
    `insert into workflows (id, tenant_id, type, state, input, actor, request_id, correlation_id, created_at)
     select gen_random_uuid(), case when n % 2 = 0 then $1::uuid else $2::uuid end, 'lifecycle.suspend',
       'Succeeded', '{}', '{"principal":"test","kind":"user"}', 'r' || n, 'c' || n,
       now() - make_interval(secs => n - (n % 4 = 0)::int)
     from generate_series(1, 40) n`,
    [TENANT_A, TENANT_B],
  );
});
afterAll(async () => s?.close());

type Page = { items: { id: string; tenantId: string; createdAt: string }[]; nextCursor: string | null };

async function walk(path: string, token?: string): Promise<Page['items']> {
  const seen: Page['items'] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 100; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const r = await s.request('GET', `${path}${sep}limit=3${cursor ? `&cursor=${cursor}` : ''}`, {
      ...(token ? { token } : {}),
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const page = r.body as Page;
    seen.push(...page.items);
    cursor = page.nextCursor;
    if (!cursor) return seen;
    expect(page.items).toHaveLength(3);
    expect(cursor).toBe(page.items.at(-1)?.id);
  }
  throw new Error('no last page');
}

describe('GET /v1/workflows pages by a keyset cursor', () => {
  it('walks every workflow once, newest first', async () => {
    const all = (
      await s.t.owner.query(`select id from workflows order by created_at desc, id desc`)
    ).rows.map((r: { id: string }) => r.id);
    expect(all.length).toBeGreaterThanOrEqual(40);
    const seen = await walk('/v1/workflows');
    expect(seen.map((w) => w.id)).toEqual(all);
  });

  it("walks one tenant's workflows, also as that tenant's admin (who sees no other)", async () => {
    const mine = (
      await s.t.owner.query(
        `select id from workflows where tenant_id = $1 order by created_at desc, id desc`,
        [TENANT_A],
      )
    ).rows.map((r: { id: string }) => r.id);
    expect((await walk('/v1/workflows?tenant=circlek-eu-uat')).map((w) => w.id)).toEqual(mine);
    const admin = await s.token({ subject: 'alice', tenant: 'circlek-eu-uat', roles: ['tenant-admin'] });
    expect((await walk('/v1/workflows', admin)).map((w) => w.id)).toEqual(mine);
    // Another tenant's workflow as a cursor shows nothing of that tenant.
    const theirs = (
      await s.t.owner.query(`select id from workflows where tenant_id = $1 limit 1`, [TENANT_B])
    ).rows[0].id;
    const r = await s.request('GET', `/v1/workflows?cursor=${theirs}`, { token: admin });
    expect(r.status).toBe(200);
    expect(r.body.items.every((w: { tenantId: string }) => w.tenantId === TENANT_A)).toBe(true);
  });

  it('refuses a cursor that is not a workflow id, and a cursor of no workflow ends the list', async () => {
    const bad = await s.request('GET', '/v1/workflows?cursor=not-a-uuid');
    expect(bad.status).toBe(400);
    const none = await s.request('GET', `/v1/workflows?cursor=${randomUUID()}`);
    expect(none.status).toBe(200);
    expect(none.body).toEqual({ items: [], nextCursor: null });
  });
});
