import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { EventNotifier } from '../events/event-notifier.js';
import { IdempotentWrite } from '../idempotency/idempotent-write.js';
import { IdentityCache, type IdentityInvalidation } from './identity-cache.js';

/** An invalidation source driven by the test (the real one is a LISTEN connection, tested below). */
class Source implements IdentityInvalidation {
  listening = true;
  private fns = new Set<(payload: string) => void>();
  private watchers = new Set<(listening: boolean) => void>();
  subscribe(_channel: 'tenantry_identity', fn: (payload: string) => void) {
    this.fns.add(fn);
    return () => this.fns.delete(fn);
  }
  watch(fn: (listening: boolean) => void) {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }
  notify() {
    for (const fn of this.fns) fn('');
  }
  set(listening: boolean) {
    this.listening = listening;
    for (const fn of this.watchers) fn(listening);
  }
}

describe('IdentityCache', () => {
  let now = 1_000_000;
  const cache = () => new IdentityCache<string>({ ttlMs: 30_000, maxEntries: 3, now: () => now });

  it('keeps nothing without an invalidation source', () => {
    const c = cache();
    c.set('k', 'v', c.begin());
    expect(c.get('k')).toBeUndefined();
  });

  it('keeps until the TTL or the answer’s own end, whichever comes first', () => {
    const c = cache();
    c.attach(new Source());
    c.set('a', 'A', c.begin());
    c.set('b', 'B', c.begin(), now + 5_000);
    expect([c.get('a'), c.get('b')]).toEqual(['A', 'B']);
    now += 5_000;
    expect([c.get('a'), c.get('b')]).toEqual(['A', undefined]);
    now += 25_000;
    expect(c.get('a')).toBeUndefined();
    c.set('c', 'C', c.begin(), now - 1);
    expect(c.get('c')).toBeUndefined();
  });

  it('forgets everything on a notification, and does not store a read begun before it', () => {
    const c = cache();
    const s = new Source();
    c.attach(s);
    c.set('a', 'A', c.begin());
    const racing = c.begin();
    s.notify();
    expect(c.get('a')).toBeUndefined();
    c.set('a', 'stale', racing);
    expect(c.get('a')).toBeUndefined();
    c.set('a', 'fresh', c.begin());
    expect(c.get('a')).toBe('fresh');
    const local = c.begin();
    c.forgetAll();
    c.set('b', 'stale', local);
    expect([c.get('a'), c.get('b')]).toEqual([undefined, undefined]);
  });

  it('keeps and answers nothing while the source does not listen, and starts empty again', () => {
    const c = cache();
    const s = new Source();
    c.attach(s);
    c.set('a', 'A', c.begin());
    s.set(false);
    expect(c.get('a')).toBeUndefined();
    c.set('a', 'A', c.begin());
    s.set(true);
    expect(c.get('a')).toBeUndefined();
    c.set('a', 'A', c.begin());
    expect(c.get('a')).toBe('A');
    c.close();
    expect(c.get('a')).toBeUndefined();
  });

  it('holds at most maxEntries, the oldest out first', () => {
    const c = cache();
    c.attach(new Source());
    for (const k of ['a', 'b', 'c', 'd']) c.set(k, k.toUpperCase(), c.begin());
    expect(['a', 'b', 'c', 'd'].map((k) => c.get(k))).toEqual([undefined, 'B', 'C', 'D']);
  });

  it('is off with a TTL of 0', () => {
    const c = new IdentityCache<string>({ ttlMs: 0, maxEntries: 3 });
    c.attach(new Source());
    c.set('a', 'A', c.begin());
    expect(c.get('a')).toBeUndefined();
  });
});

describe('the identity cache of servers with NOTIFY (two API processes)', () => {
  const TENANT_A = 'circlek-eu-uat';
  let t: TestDatabase;
  let a: TestServer;
  let second: TestServer;
  let notifier: EventNotifier;
  let notifier2: EventNotifier;

  beforeAll(async () => {
    t = await createTestDatabase();
    notifier = new EventNotifier(t.appUrl, pino({ level: 'silent' }));
    await notifier.start();
    a = await startTestServer({ database: t, notifier });
    notifier2 = new EventNotifier(t.appUrl, pino({ level: 'silent' }));
    await notifier2.start();
    second = await startTestServer({ database: t, notifier: notifier2 });
    expect((await a.request('POST', '/v1/apply', { body: circleK() })).status).toBe(200);
  });
  afterAll(async () => {
    await second?.close();
    await a?.close();
    await notifier2?.stop();
    await notifier?.stop();
    await t?.destroy();
  });

  const whoami = (server: TestServer, token: string) => server.request('GET', '/v1/whoami', { token });
  const cached = (server: TestServer) => server.security.authenticator.identities;

  it('answers a known caller from memory: a change made behind NOTIFY’s back is not seen', async () => {
    const token = await a.token({
      subject: 'carl',
      tenant: TENANT_A,
      roles: ['tenant-reader'],
      sessionId: 's-carl',
    });
    expect((await whoami(a, token)).status).toBe(200);
    expect(cached(a).enabled).toBe(true);
    // Without the trigger, nothing tells the cache: the revocation is not seen (which is why the
    // triggers of migration 0047 must cover every change identify depends on).
    await t.owner.query(`alter table sessions disable trigger identity_changed`);
    try {
      await t.owner.query(`update sessions set revoked_at = now() where id = 's-carl'`);
      expect((await whoami(a, token)).status).toBe(200);
    } finally {
      await t.owner.query(`alter table sessions enable trigger identity_changed`);
    }
    // Any identity change now empties it, and the revocation shows.
    await t.owner.query(`update sessions set revoked_by = 'test' where id = 's-carl'`);
    await expect
      .poll(async () => (await whoami(a, token)).body.code, { timeout: 2_000 })
      .toBe('session.revoked');
  });

  it('refuses a session revoked through this server on the very next request', async () => {
    const token = await a.token({
      subject: 'alice',
      tenant: TENANT_A,
      roles: ['tenant-admin'],
      sessionId: 's-next',
    });
    expect((await whoami(a, token)).status).toBe(200);
    expect((await whoami(a, token)).status).toBe(200);
    expect((await a.request('DELETE', '/v1/sessions/s-next')).status).toBe(200);
    const after = await whoami(a, token);
    expect(after.status).toBe(401);
    expect(after.body.code).toBe('session.revoked');
  });

  it('keeps its caller verified across an apply (no change there can alter an identity)', async () => {
    const token = await a.token({
      subject: 'olga',
      tenant: TENANT_A,
      roles: ['tenant-admin'],
      sessionId: 's-olga',
    });
    expect((await whoami(a, token)).status).toBe(200);
    const relabel = (n: string) =>
      a.request('POST', '/v1/apply', {
        token,
        body: [
          {
            apiVersion: 'tenantry.dev/v1',
            kind: 'Tenant',
            metadata: { labels: { n } },
            spec: { customer: 'circlek-europe', region: 'eu', environmentType: 'uat' },
          },
        ],
      });
    expect((await relabel('1')).body).toMatchObject({ summary: { configured: 1 } });
    expect(cached(a).size).toBeGreaterThan(0);
    // Revoked behind NOTIFY's back: only this process's own forgetting could show it. The apply
    // after it is answered from memory, and so is the request after the apply.
    await t.owner.query(`alter table sessions disable trigger identity_changed`);
    try {
      await t.owner.query(`update sessions set revoked_at = now() where id = 's-olga'`);
      expect((await relabel('2')).body).toMatchObject({ summary: { configured: 1 } });
      expect((await whoami(a, token)).status).toBe(200);
      // Any other request that can change state forgets every identity, as before.
      expect((await a.request('DELETE', '/v1/sessions/s-none')).status).toBe(404);
      expect((await whoami(a, token)).body.code).toBe('session.revoked');
    } finally {
      await t.owner.query(`alter table sessions enable trigger identity_changed`);
    }
  });

  it('refuses a session revoked through another server once its NOTIFY arrives', async () => {
    const token = await second.token({
      subject: 'bo',
      tenant: TENANT_A,
      roles: ['tenant-admin'],
      sessionId: 's-other',
    });
    expect((await whoami(second, token)).status).toBe(200);
    expect((await whoami(second, token)).status).toBe(200);
    expect((await a.request('DELETE', '/v1/sessions/s-other')).status).toBe(200);
    await expect
      .poll(async () => (await whoami(second, token)).body.code, { timeout: 2_000, interval: 5 })
      .toBe('session.revoked');
  });

  it('applies a break-glass elevation at once and drops it when ended', async () => {
    const otto = await a.token({ subject: 'otto', roles: ['platform-operator'], sessionId: null });
    // The same principal through the other process (each test server has its own issuer key).
    const otto2 = await second.token({ subject: 'otto', roles: ['platform-operator'], sessionId: null });
    expect((await whoami(a, otto)).body.elevation).toBeNull();
    expect((await whoami(second, otto2)).body.elevation).toBeNull();
    const grant = await a.request('POST', '/v1/break-glass', {
      token: otto,
      body: { reason: 'incident 9: cache invalidation test' },
    });
    expect(grant.status).toBe(201);
    expect((await whoami(a, otto)).body.elevation).toMatchObject({ id: grant.body.id });
    await expect
      .poll(async () => (await whoami(second, otto2)).body.elevation?.id ?? null, { timeout: 2_000 })
      .toBe(grant.body.id);
    expect((await a.request('DELETE', `/v1/break-glass/${grant.body.id}`, { token: otto })).status).toBe(200);
    expect((await whoami(a, otto)).body.elevation).toBeNull();
    await expect
      .poll(async () => (await whoami(second, otto2)).body.elevation, { timeout: 2_000 })
      .toBeNull();
  });

  it('forgets after the write commits: a read during the commit cannot keep the old identity', async () => {
    const token = await a.token({ subject: 'rita', roles: ['platform-operator'], sessionId: null });
    expect((await whoami(a, token)).body.elevation).toBeNull();
    // No NOTIFY for grants here: only the process's own forget can show the elevation at once.
    await t.owner.query(`alter table break_glass_grants disable trigger identity_changed`);
    const commit = IdempotentWrite.prototype.commit;
    let during: unknown;
    const spy = vi.spyOn(IdempotentWrite.prototype, 'commit').mockImplementation(async function (
      this: IdempotentWrite,
      answer,
    ) {
      // A concurrent GET identifies while the grant is written but not yet committed.
      during = (await whoami(a, token)).body.elevation;
      return commit.call(this, answer);
    });
    try {
      const grant = await a.request('POST', '/v1/break-glass', {
        token,
        headers: { 'idempotency-key': 'race-rita' },
        body: { reason: 'incident 10: forget after the commit' },
      });
      expect(grant.status).toBe(201);
      expect(during).toBeNull();
      expect((await whoami(a, token)).body.elevation).toMatchObject({ id: grant.body.id });
    } finally {
      spy.mockRestore();
      await t.owner.query(`alter table break_glass_grants enable trigger identity_changed`);
    }
  });

  it('refuses a token of a tenant deleted meanwhile', async () => {
    const applied = await a.request('POST', '/v1/apply', {
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Tenant',
          metadata: {},
          spec: { customer: 'circlek-europe', region: 'eu', environmentType: 'dev', qualifier: 'gone' },
        },
      ],
    });
    expect(applied.status).toBe(200);
    const token = await second.token({
      subject: 'gina',
      tenant: 'circlek-eu-dev-gone',
      roles: ['tenant-admin'],
      sessionId: null,
    });
    expect((await whoami(second, token)).status).toBe(200);
    // Deleted by hand (a tombstone), as another process would: only the trigger's NOTIFY tells.
    await t.owner.query(`update tenants set deleted_at = now() where slug = 'circlek-eu-dev-gone'`);
    await expect
      .poll(async () => (await whoami(second, token)).body.code, { timeout: 2_000 })
      .toBe('token.tenant_unknown');
  });

  it('keeps nothing while LISTEN is not in place, and starts empty when it is again', async () => {
    const token = await second.token({
      subject: 'lena',
      tenant: TENANT_A,
      roles: ['tenant-reader'],
      sessionId: 's-lena',
    });
    expect((await whoami(second, token)).status).toBe(200);
    expect(cached(second).size).toBeGreaterThan(0);
    // A lost connection is told (watch) and then re-established by the notifier itself.
    const seen: boolean[] = [];
    const unwatch = notifier2.watch((listening) => seen.push(listening));
    try {
      await t.owner.query(
        `select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and usename = 'tenantry_app' and query like 'listen tenantry_events%'`,
      );
      await expect.poll(() => seen.join(), { timeout: 10_000 }).toBe('false,true');
    } finally {
      unwatch();
    }
    expect(cached(second).size).toBe(0);
    // While it is down (stopped here, to hold it down), every request identifies in the database.
    await notifier2.stop();
    expect(cached(second).enabled).toBe(false);
    expect((await whoami(second, token)).status).toBe(200);
    expect(cached(second).size).toBe(0);
    await notifier2.start();
    expect(cached(second).enabled).toBe(true);
    expect((await whoami(second, token)).status).toBe(200);
    expect(cached(second).size).toBeGreaterThan(0);
  });
});
