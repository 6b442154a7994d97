import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

let s: TestServer;
const logLines: Record<string, unknown>[] = [];
const rawLog: string[] = [];
const TENANT_A = 'circlek-eu-uat';
const TENANT_A_ID = '8c9646e0-b9ce-426a-8849-a047e29afa9d';
const TENANT_B = 'circlek-eu-prod';

beforeAll(async () => {
  const stream = new Writable({
    write(chunk, _enc, done) {
      const text = chunk.toString();
      rawLog.push(text);
      for (const line of text.split('\n').filter(Boolean)) logLines.push(JSON.parse(line));
      done();
    },
  });
  s = await startTestServer({ logger: pino({ level: 'info' }, stream) });
  expect((await s.request('POST', '/v1/apply', { body: circleK() })).status).toBe(200);
});
afterAll(async () => s?.close());

const whoami = (token: string) => s.request('GET', '/v1/whoami', { token });
const lastDenial = async () =>
  (
    await s.t.owner.query(
      `select actor_principal, action, outcome, decision, target_slug from audit_records
       where action = 'session.use' order by time desc, id desc limit 1`,
    )
  ).rows[0];

describe('session binding (app_id + tenant_id + principal)', () => {
  const cases = [
    {
      element: 'app_id',
      first: { subject: 'alice', tenant: TENANT_A, appId: 'console' },
      other: { subject: 'alice', tenant: TENANT_A, appId: 'scripts' },
    },
    {
      element: 'tenant_id',
      first: { subject: 'alice', tenant: TENANT_A, appId: 'console' },
      other: { subject: 'alice', tenant: TENANT_B, appId: 'console' },
    },
    {
      element: 'principal',
      first: { subject: 'alice', tenant: TENANT_A, appId: 'console' },
      other: { subject: 'mallory', tenant: TENANT_A, appId: 'console' },
    },
  ];
  for (const c of cases) {
    it(`keeps a session whose ${c.element} stays the same and refuses (401, audited) one that changes`, async () => {
      const sessionId = `s-${c.element}`;
      const mint = (o: typeof c.first) => s.token({ ...o, roles: ['tenant-reader'], sessionId });
      const first = await whoami(await mint(c.first));
      expect(first.status).toBe(200);
      expect(first.body.sessionId).toBe(sessionId);
      // Positive: a new token (another jti, later expiry) in the same session, same binding.
      expect((await whoami(await mint(c.first))).status).toBe(200);
      // Negative: the same session id with this element changed.
      const other = await whoami(await mint(c.other));
      expect(other.status).toBe(401);
      expect(other.body).toMatchObject({ code: 'session.binding_mismatch' });
      expect(await lastDenial()).toMatchObject({
        actor_principal: c.other.subject,
        outcome: 'denied',
        target_slug: sessionId,
        decision: { code: 'session.binding_mismatch', element: c.element },
      });
      // The session itself is unharmed.
      expect((await whoami(await mint(c.first))).status).toBe(200);
    });
  }

  it('binds a session once when two first requests race with different bindings', async () => {
    for (let i = 0; i < 5; i++) {
      const sessionId = `s-race-${i}`;
      const [a, b] = await Promise.all(
        ['console', 'scripts'].map(async (appId) =>
          whoami(
            await s.token({ subject: 'alice', tenant: TENANT_A, appId, roles: ['tenant-reader'], sessionId }),
          ),
        ),
      );
      expect([a!.status, b!.status].sort()).toEqual([200, 401]);
      const rows = await s.t.owner.query('select app_id from sessions where id = $1', [sessionId]);
      expect(rows.rows).toEqual([{ app_id: a!.status === 200 ? 'console' : 'scripts' }]);
    }
  });

  it('revokes a session with effect on the very next request', async () => {
    const token = await s.token({
      subject: 'alice',
      tenant: TENANT_A,
      roles: ['tenant-admin'],
      sessionId: 's-revoke',
    });
    expect((await whoami(token)).status).toBe(200);
    const revoked = await s.request('DELETE', '/v1/sessions/s-revoke');
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ id: 's-revoke', revokedBy: 'test-admin', tenantId: TENANT_A_ID });
    const after = await whoami(token);
    expect(after.status).toBe(401);
    expect(after.body.code).toBe('session.revoked');
    const audit = await s.t.owner.query(
      `select decision from audit_records where action = 'session.revoke' and target_slug = 's-revoke'`,
    );
    expect(audit.rows[0].decision).toMatchObject({ decision: 'allow', policies: ['platform-admin'] });
  });

  it("lets a principal revoke its own session but not another's", async () => {
    const mine = await s.token({
      subject: 'rita',
      tenant: TENANT_A,
      roles: ['tenant-reader'],
      sessionId: 's-rita',
    });
    const bobs = await s.token({
      subject: 'bob',
      tenant: TENANT_A,
      roles: ['tenant-reader'],
      sessionId: 's-bob',
    });
    expect((await whoami(mine)).status).toBe(200);
    expect((await whoami(bobs)).status).toBe(200);
    const other = await s.request('DELETE', '/v1/sessions/s-bob', { token: mine });
    expect(other.status).toBe(403);
    expect((await whoami(bobs)).status).toBe(200);
    expect((await s.request('DELETE', '/v1/sessions/s-rita', { token: mine })).status).toBe(200);
    expect((await whoami(mine)).body.code).toBe('session.revoked');
  });

  it('refuses (401, audited) a valid token naming a tenant that does not exist', async () => {
    const token = await s.token({ subject: 'ghost', tenant: 'circlek-eu-nowhere', roles: ['tenant-admin'] });
    const r = await whoami(token);
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('token.tenant_unknown');
    expect(await lastDenial()).toMatchObject({
      actor_principal: 'ghost',
      outcome: 'denied',
      decision: { code: 'token.tenant_unknown' },
    });
  });

  it('expires sessions', async () => {
    const token = await s.token({
      subject: 'alice',
      tenant: TENANT_A,
      roles: ['tenant-reader'],
      sessionId: 's-old',
    });
    expect((await whoami(token)).status).toBe(200);
    await s.t.owner.query(`update sessions set expires_at = now() - interval '1 second' where id = 's-old'`);
    const r = await whoami(token);
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('session.expired');
  });

  it("lists only the caller's tenant's sessions", async () => {
    const b = await s.token({
      subject: 'bob',
      tenant: TENANT_B,
      roles: ['tenant-admin'],
      sessionId: 's-b-list',
    });
    expect((await whoami(b)).status).toBe(200);
    const reader = await s.token({
      subject: 'rita',
      tenant: TENANT_A,
      roles: ['tenant-admin'],
      sessionId: null,
    });
    const list = await s.request('GET', '/v1/sessions', { token: reader });
    expect(list.status).toBe(200);
    expect(list.body.items.length).toBeGreaterThan(0);
    for (const x of list.body.items) expect(x.tenantId).toBe(TENANT_A_ID);
    const all = await s.request('GET', '/v1/sessions');
    expect(all.body.items.map((x: { id: string }) => x.id)).toContain('s-b-list');
  });
});

describe('break-glass', () => {
  const system = (name: string) => [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'System',
      metadata: { name },
      spec: { displayName: name, serviceId: name },
    },
  ];

  it('elevates for a limited time with a reason, audited, and ends by itself', async () => {
    const otto = await s.token({ subject: 'otto', roles: ['platform-operator'], sessionId: null });
    expect((await s.request('POST', '/v1/apply', { token: otto, body: system('bg-one') })).status).toBe(403);
    const noReason = await s.request('POST', '/v1/break-glass', { token: otto, body: { reason: 'because' } });
    expect(noReason.status).toBe(422);
    expect(noReason.body.errors[0].pointer).toBe('/reason');
    const tooLong = await s.request('POST', '/v1/break-glass', {
      token: otto,
      body: { reason: 'incident 7: outage', ttlSeconds: 86_400 },
    });
    expect(tooLong.body.errors[0].pointer).toBe('/ttlSeconds');

    const grant = await s.request('POST', '/v1/break-glass', {
      token: otto,
      body: { reason: 'incident 7: the catalogue is missing bg-one', ttlSeconds: 600 },
    });
    expect(grant.status).toBe(201);
    expect(grant.body).toMatchObject({ principal: 'otto', roles: ['platform-admin'], active: true });
    expect((await whoami(otto)).body.elevation).toMatchObject({ id: grant.body.id });
    expect((await s.request('POST', '/v1/apply', { token: otto, body: system('bg-one') })).status).toBe(200);
    const audit = await s.t.owner.query(
      `select action, after, decision from audit_records where actor_principal = 'otto' and outcome = 'success' order by time`,
    );
    expect(audit.rows.map((r) => r.action)).toEqual(['breakglass.start', 'system.create']);
    expect(audit.rows[0].after.reason).toBe('incident 7: the catalogue is missing bg-one');
    expect(audit.rows[1].decision).toMatchObject({
      decision: 'allow',
      policies: ['platform-admin'],
      elevation: grant.body.id,
      roles: ['platform-operator', 'platform-admin'],
    });

    // Time passes: the grant's expiry is reached and the elevation is gone without anything running.
    await s.t.owner.query(
      `update break_glass_grants set created_at = now() - interval '2 hours', expires_at = now() - interval '1 second'`,
    );
    expect((await s.request('POST', '/v1/apply', { token: otto, body: system('bg-two') })).status).toBe(403);
    expect((await whoami(otto)).body.elevation).toBeNull();
  });

  it('can be ended early, and is not available to tenant principals', async () => {
    const otto = await s.token({ subject: 'otto', roles: ['platform-operator'], sessionId: null });
    const grant = await s.request('POST', '/v1/break-glass', {
      token: otto,
      body: { reason: 'incident 8: rollback needed now' },
    });
    expect(grant.status).toBe(201);
    const ended = await s.request('DELETE', `/v1/break-glass/${grant.body.id}`, { token: otto });
    expect(ended.status).toBe(200);
    expect(ended.body.active).toBe(false);
    expect((await s.request('POST', '/v1/apply', { token: otto, body: system('bg-three') })).status).toBe(
      403,
    );
    const admin = await s.token({
      subject: 'alice',
      tenant: TENANT_A,
      roles: ['tenant-admin'],
      sessionId: null,
    });
    const refused = await s.request('POST', '/v1/break-glass', {
      token: admin,
      body: { reason: 'I would like to be platform admin' },
    });
    expect(refused.status).toBe(403);
  });
});

describe('envelope in audit records and log lines', () => {
  it('carries the same tenant_id, app_id, session_id and correlation_id, and never the token', async () => {
    const token = await s.token({
      subject: 'alice',
      tenant: TENANT_A,
      roles: ['tenant-admin'],
      appId: 'console',
      sessionId: 's-envelope',
    });
    const r = await s.request('POST', '/v1/apply', {
      token,
      headers: { 'x-correlation-id': 'corr-envelope-1' },
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Deployment',
          metadata: {},
          spec: { tenant: TENANT_A, system: 'store', qualifier: 'env' },
        },
      ],
    });
    expect(r.status).toBe(200);
    const requestId = r.headers.get('x-request-id');
    const audit = await s.t.owner.query(
      `select tenant_id, app_id, session_id, correlation_id, request_id from audit_records where correlation_id = 'corr-envelope-1'`,
    );
    expect(audit.rows).toEqual([
      {
        tenant_id: TENANT_A_ID,
        app_id: 'console',
        session_id: 's-envelope',
        correlation_id: 'corr-envelope-1',
        request_id: requestId,
      },
    ]);
    const event = await s.t.owner.query(
      `select tenant_id, correlation_id, data from outbox_events where correlation_id = 'corr-envelope-1'`,
    );
    expect(event.rows[0]).toMatchObject({
      tenant_id: TENANT_A_ID,
      data: { appId: 'console', sessionId: 's-envelope', actor: { principal: 'alice', kind: 'user' } },
    });
    const lines = logLines.filter((l) => l.reqId === requestId && l.msg === 'request completed');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      tenant_id: TENANT_A_ID,
      app_id: 'console',
      session_id: 's-envelope',
      correlation_id: 'corr-envelope-1',
      principal: 'alice',
    });
    // The raw token is nowhere: not in the logs, not in any audit record, not in any session.
    const signature = token.split('.')[2]!;
    expect(rawLog.join('').includes(signature)).toBe(false);
    const dump = await s.t.owner.query(
      `select (select coalesce(string_agg(a::text, ''), '') from audit_records a) ||
              (select coalesce(string_agg(x::text, ''), '') from sessions x) ||
              (select coalesce(string_agg(e::text, ''), '') from outbox_events e) as text`,
    );
    expect(dump.rows[0].text.includes(signature)).toBe(false);
    expect(dump.rows[0].text.includes(token.split('.')[1]!)).toBe(false);
  });
});
