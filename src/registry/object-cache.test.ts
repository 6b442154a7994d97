import { randomUUID } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { PLATFORM } from '../db/database.js';
import { EventNotifier } from '../events/event-notifier.js';
import { KINDS } from './kinds/index.js';
import { ObjectCache, type ObjectInvalidation, type ServedObject, watchedKinds } from './object-cache.js';

/** An invalidation source driven by the test (the real one is a LISTEN connection, tested below). */
class Source implements ObjectInvalidation {
  listening = true;
  private fns = new Set<(payload: string) => void>();
  private watchers = new Set<(listening: boolean) => void>();
  subscribe(_channel: 'tenantry_objects', fn: (payload: string) => void) {
    this.fns.add(fn);
    return () => this.fns.delete(fn);
  }
  watch(fn: (listening: boolean) => void) {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }
  notify(payload: string) {
    for (const fn of this.fns) fn(payload);
  }
  set(listening: boolean) {
    this.listening = listening;
    for (const fn of this.watchers) fn(listening);
  }
}

const U1 = '11111111-1111-4111-8111-111111111111';
const U2 = '22222222-2222-4222-8222-222222222222';
const TA = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const served = (uuid: string, generation = 1): ServedObject => ({
  metadata: { uuid, generation },
  json: JSON.stringify({ uuid, generation }),
});

describe('ObjectCache', () => {
  const cache = (maxEntries = 10, ttlMs = 30_000) => {
    const c = new ObjectCache({ ttlMs, maxEntries });
    const s = new Source();
    c.attach(s, ['Tenant', 'Deployment']);
    return { c, s };
  };

  it('keys an entry by the scope it was read under: another scope never gets it', () => {
    const { c } = cache();
    const platformKey = ObjectCache.key(PLATFORM, 'Tenant', 'x', false);
    c.set(platformKey, served(U1), c.begin());
    expect(c.get(platformKey)?.metadata.uuid).toBe(U1);
    const tenantKey = ObjectCache.key({ kind: 'tenant', tenantId: TA }, 'Tenant', 'x', false);
    expect(c.get(tenantKey)).toBeUndefined();
    expect(c.get(ObjectCache.key(PLATFORM, 'Tenant', 'x', true))).toBeUndefined();
    expect(c.get(ObjectCache.key(PLATFORM, 'Deployment', 'x', false))).toBeUndefined();
  });

  it('forgets an object under every name and scope on its notification, and only that object', () => {
    const { c, s } = cache();
    const keys = [
      ObjectCache.key(PLATFORM, 'Tenant', 'x', false),
      ObjectCache.key(PLATFORM, 'Tenant', U1, false),
      ObjectCache.key({ kind: 'tenant', tenantId: TA }, 'Tenant', 'x', false),
    ];
    for (const k of keys) c.set(k, served(U1), c.begin());
    const other = ObjectCache.key(PLATFORM, 'Tenant', 'y', false);
    c.set(other, served(U2), c.begin());
    s.notify(`Tenant ${TA} ${U1} 2`);
    expect(keys.map((k) => c.get(k))).toEqual([undefined, undefined, undefined]);
    expect(c.get(other)?.metadata.uuid).toBe(U2);
    s.notify('*');
    expect(c.get(other)).toBeUndefined();
  });

  it('does not store a read that began before its object was invalidated', () => {
    const { c, s } = cache();
    const k = ObjectCache.key(PLATFORM, 'Tenant', 'x', false);
    const racing = c.begin();
    s.notify(`Tenant  ${U1} 2`);
    c.set(k, served(U1, 1), racing);
    expect(c.get(k)).toBeUndefined();
    // Another object's invalidation does not stop it.
    const fine = c.begin();
    s.notify(`Tenant  ${U2} 5`);
    c.set(k, served(U1, 2), fine);
    expect(c.get(k)?.metadata.generation).toBe(2);
    // Nor does it survive the process's own forgetAll, or a flood it cannot see past.
    const local = c.begin();
    c.forgetAll();
    c.set(k, served(U1, 3), local);
    expect(c.get(k)).toBeUndefined();
    const flooded = c.begin();
    for (let i = 0; i < 1100; i++) s.notify(`Tenant  ${U2} ${i}`);
    c.set(k, served(U1, 4), flooded);
    expect(c.get(k)).toBeUndefined();
  });

  it('forgets the objects it is told, and refuses their fills begun before, keeping the others', () => {
    const { c } = cache();
    const [k1, k2] = ['x', 'y'].map((r) => ObjectCache.key(PLATFORM, 'Tenant', r, false)) as [string, string];
    c.set(k1, served(U1), c.begin());
    c.set(k2, served(U2), c.begin());
    const began = c.begin();
    c.forget([U1]);
    expect(c.get(k1)).toBeUndefined();
    expect(c.get(k2)).toBeDefined();
    c.set(k1, served(U1), began);
    expect(c.get(k1)).toBeUndefined();
    c.set(k1, served(U1), c.begin());
    expect(c.get(k1)).toBeDefined();
  });

  it('keeps and answers nothing while the source does not listen, and starts empty again', () => {
    const { c, s } = cache();
    const k = ObjectCache.key(PLATFORM, 'Tenant', 'x', false);
    c.set(k, served(U1), c.begin());
    s.set(false);
    expect(c.caches('Tenant')).toBe(false);
    expect(c.get(k)).toBeUndefined();
    c.set(k, served(U1), c.begin());
    s.set(true);
    expect(c.get(k)).toBeUndefined();
    c.set(k, served(U1), c.begin());
    expect(c.get(k)).toBeDefined();
    c.close();
    expect(c.get(k)).toBeUndefined();
  });

  it('caches only the kinds it was given, holds at most maxEntries (least recently used out), ends at the TTL', async () => {
    const { c } = cache(2, 50);
    expect(c.caches('Tenant')).toBe(true);
    expect(c.caches('Customer')).toBe(false);
    const [a, b, d] = ['a', 'b', 'd'].map((r) => ObjectCache.key(PLATFORM, 'Tenant', r, false)) as [
      string,
      string,
      string,
    ];
    c.set(a, served(U1), c.begin());
    c.set(b, served(U2), c.begin());
    c.get(a);
    c.set(d, served(TA), c.begin());
    expect([c.get(a) !== undefined, c.get(b) !== undefined, c.get(d) !== undefined]).toEqual([
      true,
      false,
      true,
    ]);
    await new Promise((r) => setTimeout(r, 80));
    expect([c.get(a), c.get(d)]).toEqual([undefined, undefined]);
    expect(c.size).toBe(0);
  });

  it('is off with a TTL of 0', () => {
    const c = new ObjectCache({ ttlMs: 0, maxEntries: 3 });
    c.attach(new Source(), ['Tenant']);
    expect(c.caches('Tenant')).toBe(false);
  });
});

describe('GET from the object cache of servers with NOTIFY (two API processes)', () => {
  let t: TestDatabase;
  let a: TestServer;
  let second: TestServer;
  let plain: TestServer;
  let notifier: EventNotifier;
  let notifier2: EventNotifier;
  let A: { slug: string; uuid: string; endpoint: string };
  let B: { slug: string; uuid: string; endpoint: string };

  beforeAll(async () => {
    t = await createTestDatabase();
    notifier = new EventNotifier(t.appUrl, pino({ level: 'silent' }));
    await notifier.start();
    a = await startTestServer({ database: t, notifier });
    notifier2 = new EventNotifier(t.appUrl, pino({ level: 'silent' }));
    await notifier2.start();
    second = await startTestServer({ database: t, notifier: notifier2 });
    // A server without NOTIFY: no cache, today's path; cross-tenant answers are compared with it.
    plain = await startTestServer({ database: t });
    const res = await a.request('POST', '/v1/apply', {
      body: [customerDoc('oca'), tenantDoc('oca'), customerDoc('ocb'), tenantDoc('ocb')],
    });
    expect(res.status).toBe(200);
    const [ta, tb] = res.body.results.filter((r: { kind: string }) => r.kind === 'Tenant');
    const endpoint = async (tenant: string) => {
      const ep = await a.request('POST', '/v1/webhook-endpoints', {
        body: { metadata: { name: 'ops', tenant }, spec: { url: 'https://hooks.example.com/x' } },
      });
      expect(ep.status).toBe(201);
      return ep.body.metadata.uuid as string;
    };
    A = { slug: ta.name, uuid: ta.uuid, endpoint: await endpoint(ta.name) };
    B = { slug: tb.name, uuid: tb.uuid, endpoint: await endpoint(tb.name) };
  });
  afterAll(async () => {
    await plain?.close();
    await second?.close();
    await a?.close();
    await notifier2?.stop();
    await notifier?.stop();
    await t?.destroy();
  });

  const get = (server: TestServer, path: string, token?: string) =>
    server.request('GET', path, token === undefined ? {} : { token });
  const labelsOf = async (server: TestServer, path: string) => (await get(server, path)).body.metadata.labels;

  it('answers from memory: a change made behind NOTIFY’s back is not seen, and the answer is byte for byte the database’s', async () => {
    const path = `/v1/tenants/${A.slug}`;
    const first = await get(a, path);
    expect(first.status).toBe(200);
    expect(a.objects?.caches('Tenant')).toBe(true);
    const again = await get(a, path);
    expect(again.body).toEqual(first.body);
    expect(again.headers.get('etag')).toBe(first.headers.get('etag'));
    expect(again.headers.get('content-type')).toBe(first.headers.get('content-type'));
    expect(again.body).toEqual((await get(plain, path)).body);
    await t.owner.query('alter table tenants disable trigger object_updated');
    try {
      await t.owner.query(`update tenants set labels = '{"hidden":"1"}' where id = $1`, [A.uuid]);
      expect(await labelsOf(a, path)).toEqual({});
      expect(await labelsOf(plain, path)).toEqual({ hidden: '1' });
    } finally {
      await t.owner.query('alter table tenants enable trigger object_updated');
    }
    // Any change of the row now sends its NOTIFY, and the next GET reads it.
    await t.owner.query(`update tenants set labels = '{"seen":"1"}' where id = $1`, [A.uuid]);
    await expect.poll(() => labelsOf(a, path), { timeout: 2_000, interval: 5 }).toEqual({ seen: '1' });
  });

  it('shows the process’s own write on the very next GET, by slug and by UUID', async () => {
    for (const ref of [A.slug, A.uuid]) await get(a, `/v1/tenants/${ref}`);
    const put = await a.request('POST', '/v1/apply', {
      body: [{ ...tenantDoc('oca'), metadata: { labels: { own: 'write' } } }],
    });
    expect(put.status).toBe(200);
    for (const ref of [A.slug, A.uuid]) {
      const res = await get(a, `/v1/tenants/${ref}`);
      expect(res.body.metadata.labels).toEqual({ own: 'write' });
      expect(res.headers.get('etag')).toBe(`"${res.body.metadata.generation}"`);
    }
  });

  it('forgets only what the process’s own write changed: that object at once (no NOTIFY), the others kept', async () => {
    const keyOf = (ref: string) => ObjectCache.key(PLATFORM, 'Tenant', ref, false);
    for (const ref of [A.slug, A.uuid, B.slug]) expect((await get(a, `/v1/tenants/${ref}`)).status).toBe(200);
    expect(a.objects?.get(keyOf(B.slug))).toBeDefined();
    await t.owner.query('alter table tenants disable trigger object_updated');
    try {
      const put = await a.request('POST', '/v1/apply', {
        body: [{ ...tenantDoc('oca'), metadata: { labels: { only: 'this' } } }],
      });
      expect(put.status).toBe(200);
      expect(a.objects?.get(keyOf(B.slug))).toBeDefined();
      expect(a.objects?.get(keyOf(A.slug))).toBeUndefined();
      for (const ref of [A.slug, A.uuid])
        expect((await get(a, `/v1/tenants/${ref}`)).body.metadata.labels).toEqual({ only: 'this' });
      // A route that does not report its changes still forgets everything, whatever its answer.
      await a.request('DELETE', '/v1/sessions/s-unknown');
      expect(a.objects?.get(keyOf(B.slug))).toBeUndefined();
    } finally {
      await t.owner.query('alter table tenants enable trigger object_updated');
    }
  });

  it('shows another process’s change once its NOTIFY arrives', async () => {
    const path = `/v1/tenants/${B.slug}`;
    const before = await get(second, path);
    expect(before.status).toBe(200);
    const changed = await a.request('POST', '/v1/apply', {
      body: [{ ...tenantDoc('ocb'), metadata: { labels: { by: 'a' } } }],
    });
    expect(changed.status).toBe(200);
    await expect
      .poll(async () => (await get(second, path)).body.metadata.generation, { timeout: 2_000, interval: 5 })
      .toBe(before.body.metadata.generation + 1);
  });

  it('shows a status written by a controller (no new generation) once its NOTIFY arrives', async () => {
    const path = `/v1/webhook-endpoints/${A.endpoint}`;
    expect((await get(second, path)).body.status.phase).not.toBe('Ready');
    // As the controller's settlement writes it: status columns only, on its own connection.
    await t.owner.query(
      `update webhook_endpoints set phase = 'Ready', observed_generation = generation where id = $1`,
      [A.endpoint],
    );
    await expect
      .poll(async () => (await get(second, path)).body.status.phase, { timeout: 2_000, interval: 5 })
      .toBe('Ready');
  });

  it('never serves one tenant’s entry to another: tenant A asking for B’s objects after B’s are warm', async () => {
    const tokenA = await a.token({ subject: 'ann', tenant: A.slug, roles: ['tenant-admin'] });
    const tokenB = await a.token({ subject: 'ben', tenant: B.slug, roles: ['tenant-admin'] });
    const plainA = await plain.token({ subject: 'ann', tenant: A.slug, roles: ['tenant-admin'] });
    const paths = [
      `/v1/tenants/${B.slug}`,
      `/v1/tenants/${B.uuid}`,
      `/v1/webhook-endpoints/${B.endpoint}`,
      `/v1/webhook-endpoints/${B.endpoint}?includeDeleted=true`,
    ];
    for (const path of paths) {
      // Warm under B's own scope and under the platform's.
      expect((await get(a, path, tokenB)).status).toBe(200);
      expect((await get(a, path)).status).toBe(200);
      expect((await get(a, path, tokenB)).status).toBe(200);
      const crossed = await get(a, path, tokenA);
      const today = await get(plain, path, plainA);
      expect([403, 404]).toContain(crossed.status);
      expect({ path, status: crossed.status, code: crossed.body.code }).toEqual({
        path,
        status: today.status,
        code: today.body.code,
      });
      expect(crossed.body.metadata).toBeUndefined();
    }
    // A's own objects still come (from its own entries).
    expect((await get(a, `/v1/tenants/${A.slug}`, tokenA)).status).toBe(200);
    expect((await get(a, `/v1/webhook-endpoints/${A.endpoint}`, tokenA)).status).toBe(200);
  });

  it('resolves the tenant a tenant caller names from memory, and forgets it when that tenant goes', async () => {
    const created = await a.request('POST', '/v1/apply', { body: [tenantDoc('ocb', 'eu', 'dev', 'gone')] });
    expect(created.status).toBe(200);
    const slug = created.body.results[0].name as string;
    const tokenA = await a.token({ subject: 'ann', tenant: A.slug, roles: ['tenant-admin'] });
    const first = await get(a, `/v1/tenants/${slug}`, tokenA);
    expect(first.body.code).toBe('tenant.spoofing');
    expect(a.objects?.tenantOf(slug)).toBe(created.body.results[0].uuid);
    expect((await get(a, `/v1/tenants/${slug}`, tokenA)).body.code).toBe('tenant.spoofing');
    // Tombstoned by another process: once its NOTIFY arrives the name names no live tenant (404, as today).
    await t.owner.query('update tenants set deleted_at = now() where slug = $1', [slug]);
    await expect
      .poll(async () => (await get(a, `/v1/tenants/${slug}`, tokenA)).status, { timeout: 2_000, interval: 5 })
      .toBe(404);
    const plainA = await plain.token({ subject: 'ann', tenant: A.slug, roles: ['tenant-admin'] });
    expect((await get(plain, `/v1/tenants/${slug}`, plainA)).status).toBe(404);
  });

  it('decides every cached read with Cedar: a reader without the right is refused from a warm entry', async () => {
    const path = `/v1/tenants/${A.slug}`;
    expect((await get(a, path)).status).toBe(200);
    const nobody = await a.token({ subject: 'nora', tenant: A.slug, roles: [] });
    const res = await get(a, path, nobody);
    expect(res.status).toBe(403);
  });

  it('is told by the database: every kind’s table sends `<kind> <tenant> <id> <generation>`, a bulk statement `*`', async () => {
    expect(await watchedKinds(t.db)).toEqual([...KINDS]);
    const listener = new pg.Client({ connectionString: t.appUrl });
    await listener.connect();
    const got: string[] = [];
    listener.on('notification', (n) => got.push(n.payload ?? ''));
    try {
      await listener.query('listen tenantry_objects');
      await t.owner.query(`update tenants set labels = '{"n":"1"}' where id = $1`, [B.uuid]);
      await t.owner.query(`update customers set labels = '{"n":"1"}' where slug = 'oca'`);
      await t.owner.query(`update tenants set labels = labels where false`);
      // Inserts say nothing (no cache can hold an object not yet made); 201 rows updated at once: `*`.
      await t.owner.query(
        `insert into regions (id, slug, spec) select gen_random_uuid(), 'bulk-' || i, '{}' from generate_series(1, 201) i`,
      );
      await t.owner.query(`update regions set labels = '{"bulk":"1"}' where slug like 'bulk-%'`);
      await t.owner.query(`delete from regions where slug like 'bulk-%'`);
      await expect.poll(() => got.length, { timeout: 2_000 }).toBe(4);
      expect(got.slice(2)).toEqual(['*', '*']);
      const { rows } = await t.owner.query(
        `select generation from tenants where id = $1 union all select generation from customers where slug = 'oca'`,
        [B.uuid],
      );
      const customer = (await t.owner.query(`select id from customers where slug = 'oca'`)).rows[0].id;
      expect(got.slice(0, 2)).toEqual([
        `Tenant ${B.uuid} ${B.uuid} ${rows[0].generation}`,
        `Customer  ${customer} ${rows[1].generation}`,
      ]);
      // A table whose tenant column is `tenant_id` (null: a platform row), and a one-row delete.
      const [own, platform, region] = [randomUUID(), randomUUID(), randomUUID()];
      await t.owner.query(
        `insert into webhook_endpoints (id, tenant_id, name, slug, spec)
         values ($1, $2, 'w', 'w-own', '{}'), ($3, null, 'w', 'w-platform', '{}')`,
        [own, B.uuid, platform],
      );
      await t.owner.query(`update webhook_endpoints set labels = '{"n":"1"}' where slug like 'w-%'`);
      await t.owner.query(`insert into regions (id, slug, spec) values ($1, 'gone', '{}')`, [region]);
      await t.owner.query(`delete from regions where id = $1`, [region]);
      await expect.poll(() => got.length, { timeout: 2_000 }).toBe(7);
      expect(got.slice(4, 6).sort()).toEqual(
        [`WebhookEndpoint ${B.uuid} ${own} 1`, `WebhookEndpoint  ${platform} 1`].sort(),
      );
      expect(got[6]).toBe(`Region  ${region} 1`);
    } finally {
      await listener.end();
    }
  });

  it('reads the database while LISTEN is not in place, and caches again once it is', async () => {
    const path = `/v1/tenants/${A.slug}`;
    await get(second, path);
    expect(second.objects?.size).toBeGreaterThan(0);
    await notifier2.stop();
    expect(second.objects?.caches('Tenant')).toBe(false);
    expect(second.objects?.size).toBe(0);
    await t.owner.query('alter table tenants disable trigger object_updated');
    try {
      await t.owner.query(`update tenants set labels = '{"down":"1"}' where id = $1`, [A.uuid]);
      expect(await labelsOf(second, path)).toEqual({ down: '1' });
      expect(second.objects?.size).toBe(0);
    } finally {
      await t.owner.query('alter table tenants enable trigger object_updated');
    }
    await notifier2.start();
    expect(second.objects?.caches('Tenant')).toBe(true);
    await get(second, path);
    expect(second.objects?.size).toBeGreaterThan(0);
  });
});
