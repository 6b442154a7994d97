import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { createDb } from '../db/database.js';
import { cookieName, newSession, SessionCodec, SignInCodes } from './console-session.js';
import { html, raw } from './html.js';

describe('console session cookie (pure)', () => {
  const limits = { idleSeconds: 60, absoluteSeconds: 3600 };
  const codec = SessionCodec.random();

  it('opens what it sealed, and nothing else', () => {
    const s = newSession('tok', 1_000_000);
    const sealed = codec.seal(s);
    expect(codec.open(sealed, limits, 1_000_001)).toEqual({ kind: 'valid', session: s });
    const tampered = `${sealed.slice(0, -2)}${sealed.endsWith('A') ? 'B' : 'A'}A`;
    expect(codec.open(tampered, limits, 1_000_001).kind).toBe('invalid');
    expect(SessionCodec.random().open(sealed, limits, 1_000_001).kind).toBe('invalid');
    expect(codec.open(undefined, limits).kind).toBe('invalid');
  });

  it('expires when idle and after the absolute limit', () => {
    const s = newSession('tok', 0);
    expect(codec.open(codec.seal(s), limits, 60_000)).toEqual({ kind: 'expired', why: 'idle' });
    const busy = { ...s, seenAt: 3_599_000 };
    expect(codec.open(codec.seal(busy), limits, 3_599_500).kind).toBe('valid');
    expect(codec.open(codec.seal(busy), limits, 3_600_000)).toEqual({ kind: 'expired', why: 'absolute' });
  });

  it('escapes every interpolated value unless it is markup', () => {
    const evil = '<script>alert("x")</script>';
    expect(html`<p title="${evil}">${evil}${raw('<b>ok</b>')}${[html`<i>${'&'}</i>`]}</p>`.text).toBe(
      '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;<b>ok</b><i>&amp;</i></p>',
    );
  });
});

describe('console sign-in codes (in the database)', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(() => t?.destroy());

  it('redeems a sign-in code once, and not after it expired', async () => {
    const codes = new SignInCodes(t.db, 1000);
    const at = (ms: number) => new Date(Date.UTC(2026, 0, 1) + ms);
    const a = await codes.issue(at(0));
    expect(await codes.redeem(a, at(10))).toBe(true);
    expect(await codes.redeem(a, at(20))).toBe(false);
    const b = await codes.issue(at(0));
    expect(await codes.redeem(b, at(1000))).toBe(false);
    expect(await codes.redeem('made-up', at(0))).toBe(false);
  });

  it('keeps only the hash, and a code issued by one process is redeemed once by another', async () => {
    const code = await new SignInCodes(t.db).issue();
    const stored = await t.owner.query<{ code_hash: string }>('select code_hash from console_sign_in_codes');
    expect(stored.rows.map((r) => r.code_hash)).not.toContain(code);
    // Another process: its own pool over the same database.
    const other = createDb(t.appUrl, 2, { platformUrl: t.platformUrl });
    try {
      const [x, y] = await Promise.all([
        new SignInCodes(other).redeem(code),
        new SignInCodes(t.db).redeem(code),
      ]);
      expect([x, y].filter(Boolean)).toHaveLength(1);
    } finally {
      await other.destroy();
    }
  });

  it('signs in with a link printed before a restart, once', async () => {
    const before = await startTestServer({ database: t });
    const link = await before.app.tenantryConsole.signInLink(before.url);
    await before.close();
    const after = await startTestServer({ database: t });
    try {
      const code = new URL(link).searchParams.get('code') ?? '';
      expect((await new Client(after.url).form('/console/login', { code })).status).toBe(303);
      expect((await new Client(after.url).form('/console/login', { code })).status).toBe(401);
    } finally {
      await after.close();
    }
  });

  it('refuses a tenant-scoped session the codes table (row-level security)', async () => {
    await new SignInCodes(t.db).issue();
    const other = createDb(t.appUrl, 1);
    try {
      const r = await other
        .transaction()
        .execute((trx) => sql<{ n: string }>`select count(*) as n from console_sign_in_codes`.execute(trx));
      expect(Number(r.rows[0]?.n)).toBe(0);
    } finally {
      await other.destroy();
    }
  });
});

/** A browser-less client: keeps the cookie, sends the CSRF token when asked. */
class Client {
  cookie = '';
  constructor(private readonly base: string) {}
  async fetch(path: string, init: RequestInit & { csrf?: string } = {}) {
    const headers = new Headers(init.headers);
    if (this.cookie) headers.set('cookie', this.cookie);
    if (init.csrf) headers.set('x-csrf-token', init.csrf);
    const res = await fetch(`${this.base}${path}`, { ...init, headers, redirect: 'manual' });
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0] ?? '';
    return { status: res.status, headers: res.headers, text: await res.text() };
  }
  form(path: string, fields: Record<string, string>, csrf?: string) {
    return this.fetch(path, {
      method: 'POST',
      body: new URLSearchParams(fields).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      ...(csrf ? { csrf } : {}),
    });
  }
  async csrf(): Promise<string> {
    const page = await this.fetch('/console/tree');
    const m = /<meta name="csrf-token" content="([^"]+)">/.exec(page.text);
    if (!m?.[1]) throw new Error(`no CSRF token on the page (${page.status})`);
    return m[1];
  }
}

describe('console over HTTP', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
    const res = await s.request('POST', '/v1/apply', { body: circleK() });
    expect(res.status).toBe(200);
  });
  afterAll(() => s.close());

  it('sends a request without a session to the sign-in page', async () => {
    const c = new Client(s.url);
    const res = await c.fetch('/console/tree');
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/console/login');
    // A bearer token does not open the console: the cookie alone counts.
    const bearer = await c.fetch('/console/tree', { headers: { authorization: `Bearer ${s.adminToken}` } });
    expect(bearer.status).toBe(303);
  });

  it('signs in once with a one-time link, sets a hardened cookie, and signs out for good', async () => {
    const c = new Client(s.url);
    const code = new URL(await s.app.tenantryConsole.signInLink(s.url)).searchParams.get('code') ?? '';
    const login = await c.form('/console/login', { code });
    expect(login.status).toBe(303);
    const setCookie = login.headers.get('set-cookie') ?? '';
    expect(setCookie).toContain(`${cookieName(false)}=`);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Lax/i);
    const tree = await c.fetch('/console/tree');
    expect(tree.status).toBe(200);
    expect(tree.text).toContain('circlek');
    // The link works once.
    const again = await new Client(s.url).form('/console/login', { code });
    expect(again.status).toBe(401);

    const stolen = c.cookie;
    const out = await c.fetch('/console/logout', { method: 'POST', csrf: await c.csrf() });
    expect(out.status).toBe(204);
    // A copy of the cookie taken before logout is refused: the token's session is revoked.
    const thief = new Client(s.url);
    thief.cookie = stolen;
    expect((await thief.fetch('/console/tree')).status).toBe(303);
  });

  it('ends a session that stays idle, and says so on the sign-in page', async () => {
    const limits = s.t.config.console;
    const idle = limits.idleSeconds;
    limits.idleSeconds = 1;
    try {
      const c = new Client(s.url);
      await c.form('/console/login', { token: s.adminToken });
      expect((await c.fetch('/console/tree')).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1100));
      const res = await c.fetch('/console/tree');
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/console/login?expired=1');
      expect((await c.fetch('/console/login?expired=1')).text).toContain('Your session expired');
    } finally {
      limits.idleSeconds = idle;
    }
  });

  it('refuses a mutation without the CSRF token, and changes nothing', async () => {
    const c = new Client(s.url);
    expect((await c.form('/console/login', { token: s.adminToken })).status).toBe(303);
    const before = await s.request('GET', '/v1/tenants/circlek-eu-prod');
    const res = await c.form('/console/tenants/circlek-eu-prod/suspend', { confirm: 'circlek-eu-prod' });
    expect(res.status).toBe(403);
    expect(res.text).toContain('csrf.invalid');
    const wrong = await c.form(
      '/console/tenants/circlek-eu-prod/suspend',
      { confirm: 'circlek-eu-prod' },
      'forged',
    );
    expect(wrong.status).toBe(403);
    const after = await s.request('GET', '/v1/tenants/circlek-eu-prod');
    expect(after.body.metadata.generation).toBe(before.body.metadata.generation);
    expect(after.body.status.lifecycle).toBe(before.body.status.lifecycle);
  });

  it('asks for the tenant by name before a lifecycle action', async () => {
    const c = new Client(s.url);
    await c.form('/console/login', { token: s.adminToken });
    const csrf = await c.csrf();
    const confirm = await c.fetch('/console/tenants/circlek-eu-prod/confirm/suspend');
    expect(confirm.text).toContain('Suspend tenant circlek-eu-prod?');
    const mistyped = await c.form(
      '/console/tenants/circlek-eu-prod/suspend',
      { confirm: 'circlek-eu' },
      csrf,
    );
    expect(mistyped.status).toBe(422);
    const ok = await c.form('/console/tenants/circlek-eu-prod/suspend', { confirm: 'circlek-eu-prod' }, csrf);
    expect(ok.status).toBe(204);
    expect(ok.headers.get('hx-redirect')).toContain('/console/tenants/circlek-eu-prod');
    expect((await s.request('GET', '/v1/tenants/circlek-eu-prod')).body.status.lifecycle).toBe('Suspended');
    // The suspend started a lifecycle workflow; a resume is refused until it ends.
    await settleWorkflows(s.t);
    const resumed = await c.form(
      '/console/tenants/circlek-eu-prod/resume',
      { confirm: 'circlek-eu-prod' },
      csrf,
    );
    expect(resumed.status).toBe(204);
    await settleWorkflows(s.t);

    // The events page starts with the newest events; its live stream resumes after the newest.
    const events = await c.fetch('/console/events');
    expect(events.text).toContain('tenant.suspended');
    const after = /sse-connect="\/console\/events\/stream\?after=([^"&]+)"/.exec(events.text)?.[1];
    expect(after).toMatch(/^g\d+-\d+$/);
    const own = await c.fetch(`/console/events?tenant=circlek-eu-prod`);
    expect(own.text.indexOf('tenant.resumed')).toBeLessThan(own.text.indexOf('tenant.suspended'));
  });

  it('answers bad input with a 4xx page, never a 5xx', async () => {
    const c = new Client(s.url);
    await c.form('/console/login', { token: s.adminToken });
    const csrf = await c.csrf();
    const bad = [
      '/console/tree?cursor=garbage',
      '/console/tree?q=%25_%5C&cursor=eyJ4IjoxfQ',
      '/console/customers/nope/children',
      '/console/tenants/circlek-eu-prod/children?cursor=%00',
      '/console/tenants/not-a-tenant',
      '/console/deployments/00000000-0000-0000-0000-000000000000',
      `/console/tenants/${'x'.repeat(300)}`,
      '/console/tenants/nope/usage',
      '/console/audit?tenant=nope&outcome=maybe&cursor=zzz&action=%27%3B',
      '/console/audit/verify?tenant=nope',
      '/console/events?tenant=nope',
      '/console/events/stream?after=not-a-cursor',
      '/console/webhooks?cursor=%E0%A4%A',
      '/console/webhooks/nope?status=weird',
      '/console/cells?cursor=1',
      '/console/no-such-page',
      '/console/webhooks/nope?cursor=not-a-uuid',
      '/console/workflows?tenant=nope&state=weird&limit=-3',
      '/console/workflows/not-a-uuid',
      '/console/workflows/00000000-0000-0000-0000-000000000000/steps',
      '/console/tenants/nope/workflows',
      '/console/tenants/nope/migrations',
      '/console/services?tenant=nope&cursor=zzz',
      '/console/scaling-policies?cursor=%00',
      '/console/configurations?tenant=%27%3B&cursor=%00',
      '/console/releases?cursor=1',
      '/console/pipelines?q=%25_%5C&cursor=eyJ4IjoxfQ',
      '/console/promotions?system=nope&state=Maybe&limit=abc',
      '/console/promotions/not-a-uuid',
      '/console/promotions/00000000-0000-0000-0000-000000000000/detail',
    ];
    for (const path of bad) {
      const res = await c.fetch(path);
      expect(res.status, path).toBeGreaterThanOrEqual(400);
      expect(res.status, path).toBeLessThan(500);
      // A path parameter too long for the router is refused before any route (problem+json 414).
      if (res.status !== 414) expect(res.headers.get('content-type'), path).toContain('text/html');
    }
    for (const [path, body] of [
      ['/console/webhooks/nope/requeue', { deliveryIds: 'not-a-uuid' }],
      ['/console/tenants/nope/suspend', { confirm: 'nope' }],
      ['/console/tenants/circlek-eu-prod/suspend', { confirm: 'circlek-eu-prod', generation: 'abc' }],
      ['/console/promotions/not-a-uuid/approve', { comment: 'x' }],
      ['/console/promotions/00000000-0000-0000-0000-000000000000/approve', { comment: 'x'.repeat(501) }],
    ] as const) {
      const res = await c.form(path, body, csrf);
      expect(res.status, path).toBeGreaterThanOrEqual(400);
      expect(res.status, path).toBeLessThan(500);
    }
    expect((await s.request('GET', '/v1/tenants/circlek-eu-prod')).body.status.lifecycle).toBe('Active');
  });

  it('shows a tenant admin its own tenant only, whatever URL it types', async () => {
    const token = await s.token({ subject: 'eu-admin', tenant: 'circlek-eu-prod', roles: ['tenant-admin'] });
    const c = new Client(s.url);
    expect((await c.form('/console/login', { token })).status).toBe(303);
    const tree = await c.fetch('/console/tree');
    expect(tree.status).toBe(200);
    expect(tree.text).toContain('circlek-eu-prod');
    expect(tree.text).not.toContain('circlek-us-prod');
    const search = await c.fetch('/console/tree?q=circlek-us');
    expect(search.text).not.toContain('circlek-us-prod');
    const own = await c.fetch('/console/tenants/circlek-eu-prod');
    expect(own.status).toBe(200);
    for (const path of [
      '/console/tenants/circlek-us-prod',
      '/console/tenants/circlek-us-prod/children',
      '/console/tenants/circlek-us-prod/usage',
      '/console/customers/circlek-north-america/children',
    ]) {
      const res = await c.fetch(path);
      expect([403, 404], path).toContain(res.status);
      expect(res.text, path).not.toContain('circlek-us-prod"');
    }
    const csrf = await c.csrf();
    const act = await c.form(
      '/console/tenants/circlek-us-prod/suspend',
      { confirm: 'circlek-us-prod' },
      csrf,
    );
    expect([403, 404]).toContain(act.status);
    expect((await s.request('GET', '/v1/tenants/circlek-us-prod')).body.status.lifecycle).toBe('Active');
  });

  it('cancels an open workflow from its page, only with the CSRF token, and a tenant admin only its own', async () => {
    const suspended = await s.request('POST', '/v1/tenants/circlek-eu-uat-dev/suspend');
    expect(suspended.status).toBe(200);
    const id = (await s.request('GET', '/v1/workflows?tenant=circlek-eu-uat-dev')).body.items[0].id;
    const other = await s.token({ subject: 'eu-admin', tenant: 'circlek-eu-prod', roles: ['tenant-admin'] });
    const admin = new Client(s.url);
    expect((await admin.form('/console/login', { token: other })).status).toBe(303);
    expect([403, 404]).toContain(
      (await admin.form(`/console/workflows/${id}/cancel`, {}, await admin.csrf())).status,
    );
    const c = new Client(s.url);
    await c.form('/console/login', { token: s.adminToken });
    const page = await c.fetch(`/console/workflows/${id}`);
    expect(page.text).toContain('Cancel the workflow');
    expect((await c.form(`/console/workflows/${id}/cancel`, {})).status).toBe(403);
    expect((await s.request('GET', `/v1/workflows/${id}`)).body.state).toBe('Pending');
    const res = await c.form(`/console/workflows/${id}/cancel`, {}, await c.csrf());
    expect(res.status).toBe(204);
    expect(res.headers.get('hx-redirect')).toBe(`/console/workflows/${id}?done=cancel`);
    expect((await s.request('GET', `/v1/workflows/${id}`)).body.state).toBe('Compensating');
    expect((await c.form(`/console/workflows/${id}/retry`, {}, await c.csrf())).status).toBe(409);
  });
});
