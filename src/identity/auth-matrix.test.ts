import { exportSPKI, importJWK, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { BuiltinIssuer } from './builtin-issuer.js';

/**
 * The negative matrix, generated from the OpenAPI document so that every route added later joins
 * it: every route × every kind of bad token → 401 problem+json and nothing changed; every route
 * with a tenant-A token against tenant B's objects → 403/404 and nothing changed but the audit of
 * the refusal.
 */
let s: TestServer;
const TENANT_A = 'circlek-eu-uat';
const TENANT_B = 'circlek-eu-prod';

/** A slug of tenant B's (or the platform's) object per kind path, for `{ref}`. */
const REFS: Record<string, string> = {
  customers: 'circlek-north-america',
  systems: 'plan',
  tenants: TENANT_B,
  deployments: 'circlek-eu-prod-plan',
  regions: 'eu',
  cells: 'eu-prod-1',
  plans: 'enterprise',
  'webhook-endpoints': `${TENANT_B}.hooks`,
  webhooks: `${TENANT_B}.hooks`,
  services: `${TENANT_B}-plan-api`,
  'scaling-policies': `${TENANT_B}-plan-api`,
  configurations: `${TENANT_B}-plan-v1`,
  pipelines: 'default',
  releases: 'plan-1-0-0',
};

/** Tenant B's runtime inventory (issue 20): a service, its scaling policy, a configuration version. */
const RUNTIME = {
  Configuration: {
    tenant: TENANT_B,
    name: 'plan',
    version: 1,
    content: { a: 1 },
    state: 'active',
    reason: 'first',
  },
  Service: {
    deployment: 'circlek-eu-prod-plan',
    component: 'api',
    image: `registry.example/plan@sha256:${'d'.repeat(64)}`,
    version: '1.0.0',
    replicas: 1,
  },
  ScalingPolicy: {
    service: `${TENANT_B}-plan-api`,
    metric: 'cpu',
    minReplicas: 1,
    maxReplicas: 2,
    targetUtilization: 60,
  },
};

interface Route {
  method: string;
  path: string;
}

function routes(): Route[] {
  const doc = s.app.swagger() as {
    paths: Record<string, Record<string, { security?: unknown[] }>>;
  };
  const out: Route[] = [];
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops)) {
      if (Array.isArray(op.security) && op.security.length === 0) continue; // public
      out.push({ method: method.toUpperCase(), path });
    }
  return out;
}

/** Server-Sent Events routes: their responses do not end. */
const STREAMS = ['/v1/events/stream'];

let resourceRef = '';
let sessionId = '';
const fill = (r: Route) =>
  r.path
    .replace(/\/v1\/([a-z-]+)\/\{ref\}/, (_m, kind: string) => `/v1/${kind}/${REFS[kind] ?? resourceRef}`)
    .replace('/v1/sessions/{id}', `/v1/sessions/${sessionId}`)
    .replace('{id}', '00000000-0000-4000-8000-000000000000')
    .replace('/v1/freezes/{name}', '/v1/freezes/evil-freeze')
    .replace('{tenant}', TENANT_B)
    .replace('{system}', 'plan')
    .replace('/maintenance-windows/{name}', '/maintenance-windows/evil');

/** Valid bodies that would change something if the request were accepted (filled in beforeAll). */
const BODIES: Record<string, unknown> = {
  'POST /v1/apply': [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Deployment',
      metadata: {},
      spec: { tenant: TENANT_B, system: 'store', qualifier: 'evil' },
    },
  ],
  'POST /v1/customers': { metadata: { name: 'evil-corp' }, spec: { displayName: 'Evil', shortCode: 'evil' } },
  'POST /v1/systems': { metadata: { name: 'evil' }, spec: { displayName: 'Evil', serviceId: 'evil' } },
  'POST /v1/tenants': {
    metadata: {},
    spec: { customer: 'circlek-europe', region: 'eu', environmentType: 'qa', qualifier: 'evil' },
  },
  'POST /v1/deployments': { metadata: {}, spec: { tenant: TENANT_B, system: 'store', qualifier: 'evil' } },
  'POST /v1/break-glass': { reason: 'incident 42: database on fire' },
  'POST /v1/regions': { metadata: { name: 'evil' }, spec: { displayName: 'Evil', jurisdiction: 'XX' } },
  'POST /v1/cells': {
    metadata: { name: 'evil-1' },
    spec: {
      region: 'eu',
      stage: 'prod',
      environmentTypes: ['prod'],
      tenancy: 'shared',
      capacity: { tenants: 1 },
    },
  },
  'POST /v1/plans': {
    metadata: { name: 'evil' },
    spec: { displayName: 'Evil', isolationModels: ['shared'], quotas: {} },
  },
  'POST /v1/webhook-endpoints': {
    metadata: { name: 'evil', tenant: TENANT_B },
    spec: { url: 'https://evil.example.com/hook' },
  },
  'POST /v1/services': { metadata: {}, spec: { ...RUNTIME.Service, component: 'evil' } },
  'POST /v1/scaling-policies': { metadata: {}, spec: { ...RUNTIME.ScalingPolicy, maxReplicas: 3 } },
  'POST /v1/configurations': { metadata: {}, spec: { ...RUNTIME.Configuration, version: 2 } },
  'POST /v1/tenants/{ref}/limit-overrides': { name: 'deployments', value: 1000, reason: 'evil' },
  // A freeze is no registry object (no GET of one to edit): a declaration that would stop the line.
  'PUT /v1/freezes/{name}': { scope: 'platform', reason: 'evil: stop every workflow' },
  'POST /v1/tenants/{ref}/legal-hold': { reason: 'evil: hold everything' },
  'POST /v1/tenants/{ref}/legal-hold/release': { reason: 'evil: release the hold' },
  'POST /v1/tenants/{ref}/purge-exception': { reason: 'evil: purge before the window' },
  'POST /v1/tenants/{ref}/purge-exception/approve': { reason: 'evil: approve it' },
  'POST /v1/releases': {
    metadata: {},
    spec: {
      system: 'plan',
      version: '1.0.1',
      artifacts: [{ service: 'api', image: 'registry.example.com/evil', digest: `sha256:${'e'.repeat(64)}` }],
      provenance: { commit: 'e'.repeat(40), repository: 'evil', pipelineRunId: 'evil', builder: 'evil' },
    },
  },
  'POST /v1/pipelines': {
    metadata: { name: 'evil' },
    spec: { systems: ['plan'], stages: [{ name: 'prod', environmentTypes: ['prod'] }] },
  },
  'POST /v1/promotions': { system: 'plan', version: '1.0.0', stage: 'prod' },
  'POST /v1/promotions/rollback': { system: 'plan', stage: 'prod', to: '1.0.0' },
  'PUT /v1/tenants/{tenant}/pins/{system}': {
    version: '1.0.0',
    reason: 'evil',
    until: '2999-01-01T00:00:00Z',
  },
  'PUT /v1/tenants/{tenant}/maintenance-windows/{name}': {
    startsAt: '2999-01-01T00:00:00Z',
    endsAt: '2999-01-02T00:00:00Z',
    reason: 'evil',
  },
  'POST /v1/deployments/{ref}/health': {
    version: '1.0.0',
    readyReplicas: 0,
    desiredReplicas: 1,
    errorRate: 1,
  },
};
const bodyFor = (r: Route): unknown => BODIES[`${r.method} ${r.path}`];

/** The manifest of an existing object with one label changed: a real change if accepted. */
async function edited(path: string): Promise<unknown> {
  const { body } = await s.request('GET', path);
  return { metadata: { name: body.metadata.name, labels: { hacked: 'yes' } }, spec: body.spec };
}

/** Everything a request could change, except the audit log (refusals are audited by design). */
async function fingerprint(): Promise<string> {
  const r = await s.t.owner.query(`select
    (select coalesce(sum(generation), 0) || '/' || count(*) || '/' || count(deleted_at) from tenants) as tenants,
    (select coalesce(sum(generation), 0) || '/' || count(*) || '/' || count(deleted_at) from deployments) as deployments,
    (select coalesce(sum(generation), 0) || '/' || count(*) from customers) as customers,
    (select coalesce(sum(generation), 0) || '/' || count(*) from systems) as systems,
    (select coalesce(sum(generation), 0) || '/' || count(*) from integration_resources) as resources,
    (select coalesce(sum(generation), 0) || '/' || count(*) || '/' || count(deleted_at) from services) as services,
    (select coalesce(sum(generation), 0) || '/' || count(*) || '/' || count(deleted_at) from scaling_policies) as policies,
    (select coalesce(sum(generation), 0) || '/' || count(*) || '/' || count(deleted_at) from configurations) as configurations,
    (select count(*) from object_versions) as versions,
    (select count(*) from outbox_events) as events,
    (select count(*) || '/' || count(revoked_at) from sessions) as sessions,
    (select count(*) from break_glass_grants) as grants,
    (select count(*) from idempotency_keys) as idempotency,
    (select count(*) || '/' || count(*) filter (where state = 'Cancelled') from workflows) as workflows,
    (select count(*) || '/' || count(lifted_at) from workflow_freezes) as freezes,
    (select count(*) || '/' || count(released_at) from legal_holds) as holds,
    (select count(*) || '/' || count(revoked_at) from service_clients) as clients,
    (select count(*) from promotions) as promotions,
    (select count(*) || '/' || coalesce(sum(generation), 0) from releases) as releases,
    (select count(*) || '/' || coalesce(sum(generation), 0) from pipelines) as pipelines,
    (select count(*) from release_pins) as pins,
    (select count(*) from maintenance_windows) as windows,
    (select count(*) from deployment_health) as health`);
  return JSON.stringify(r.rows[0]);
}
const auditCount = async () =>
  Number((await s.t.owner.query('select count(*) as n from audit_records')).rows[0].n);

const claims = () => ({ roles: ['platform-admin'], app_id: 'matrix', principal_kind: 'user' });

async function badTokens(): Promise<Record<string, string | null>> {
  const { issuer, audience } = s.issuer;
  const good = await s.token({});
  const [header, payload, signature] = good.split('.') as [string, string, string];
  const publicPem = await exportSPKI((await importJWK(s.issuer.publicJwk, 'ES256')) as CryptoKey);
  const evil = await BuiltinIssuer.ephemeral('https://evil.example', audience);
  const rotatedAway = await BuiltinIssuer.ephemeral(issuer, audience);
  const tamperedPayload = Buffer.from(
    JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), sub: 'someone-else' }),
  ).toString('base64url');
  return {
    'no token': null,
    'not a bearer token': 'Basic dXNlcjpwYXNz',
    expired: await s.token({ ttlSeconds: -600 }),
    'issued a day in the future': await s.token({ issuedAt: Math.floor(Date.now() / 1000) + 86_400 }),
    'wrong issuer': await evil.mint({ subject: 'test-admin', roles: ['platform-admin'] }),
    'wrong audience': await s.token({ audience: 'some-other-api' }),
    'alg none': new UnsecuredJWT(claims())
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject('test-admin')
      .setExpirationTime('1h')
      .encode(),
    'HS256 signed with the public key': await new SignJWT(claims())
      .setProtectedHeader({ alg: 'HS256', kid: s.issuer.keyId })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject('test-admin')
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(publicPem)),
    'tampered signature': `${header}.${payload}.${signature.slice(0, -4)}${signature.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`,
    'tampered payload': `${header}.${tamperedPayload}.${signature}`,
    'unknown kid': await rotatedAway.mint({ subject: 'test-admin', roles: ['platform-admin'] }),
  };
}

beforeAll(async () => {
  s = await startTestServer();
  const applied = await s.request('POST', '/v1/apply', {
    body: [
      ...circleK(),
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Release',
        metadata: {},
        spec: {
          system: 'plan',
          version: '1.0.0',
          artifacts: [
            { service: 'api', image: 'registry.example.com/plan', digest: `sha256:${'a'.repeat(64)}` },
          ],
          provenance: { commit: 'b'.repeat(40), repository: 'r', pipelineRunId: 'run-1', builder: 'ci' },
        },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Pipeline',
        metadata: { name: 'default' },
        spec: { stages: [{ name: 'prod', environmentTypes: ['prod'], protected: true }] },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'hooks', tenant: TENANT_B },
        spec: { url: 'https://hooks.example.com/tenantry' },
      },
      ...Object.entries(RUNTIME).map(([kind, spec]) => ({
        apiVersion: 'tenantry.dev/v1',
        kind,
        metadata: {},
        spec,
      })),
    ],
  });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  const resources = await s.request('GET', `/v1/integration-resources?limit=500`);
  resourceRef = resources.body.items.find(
    (r: { metadata: { tenantUuid: string } }) =>
      r.metadata.tenantUuid === '6846a7a4-4e09-41a8-918c-9c8e2aa938ac',
  ).metadata.name;
  // A session of tenant B, for DELETE /v1/sessions/{id}.
  const b = await s.token({
    subject: 'bob',
    tenant: TENANT_B,
    roles: ['tenant-admin'],
    sessionId: 'session-of-b',
  });
  expect((await s.request('GET', '/v1/whoami', { token: b })).status).toBe(200);
  sessionId = 'session-of-b';
  for (const r of routes().filter((x) => x.method === 'PUT' && bodyFor(x) === undefined))
    BODIES[`PUT ${r.path}`] = await edited(fill(r));
  const resource = (await s.request('GET', `/v1/integration-resources/${resourceRef}`)).body;
  const spec = structuredClone(resource.spec);
  if (spec.kafkaTopic) spec.kafkaTopic.event = 'evil-events';
  BODIES['POST /v1/integration-resources'] = { metadata: {}, spec };
});
afterAll(async () => s?.close());

describe('negative matrix (generated from the OpenAPI route list)', () => {
  it('covers every non-public route', () => {
    const all = routes();
    expect(all.length).toBeGreaterThanOrEqual(40);
    expect(all).toContainEqual({ method: 'POST', path: '/v1/apply' });
    expect(all).toContainEqual({ method: 'DELETE', path: '/v1/sessions/{id}' });
  });

  it('answers 401 problem+json to every bad token on every route, and changes nothing', async () => {
    const tokens = await badTokens();
    const before = await fingerprint();
    const audits = await auditCount();
    const failures: string[] = [];
    for (const r of routes()) {
      const body = bodyFor(r);
      for (const [name, token] of Object.entries(tokens)) {
        const headers: Record<string, string> = {};
        if (token?.startsWith('Basic ')) headers.authorization = token;
        const res = await s.request(r.method, fill(r), {
          token: token?.startsWith('Basic ') ? null : token,
          headers,
          ...(body !== undefined ? { body } : {}),
        });
        if (
          res.status !== 401 ||
          !res.headers.get('content-type')?.startsWith('application/problem+json') ||
          !String(res.body?.code).startsWith('token.') ||
          !res.headers.get('www-authenticate')?.startsWith('Bearer')
        )
          failures.push(`${r.method} ${r.path} × ${name}: ${res.status} ${res.body?.code}`);
      }
    }
    expect(failures).toEqual([]);
    expect(await fingerprint()).toBe(before);
    // Failed authentication is audited, rate-limited per source: this whole flood came from one
    // address, so at most 10 records (per minute), anonymous and denied, each with its code.
    const audited = await s.t.owner.query(
      `select actor_principal, outcome, decision from audit_records where action = 'authentication' order by time`,
    );
    expect(await auditCount()).toBe(audits + audited.rows.length);
    expect(audited.rows.length).toBe(10);
    for (const r of audited.rows) {
      expect(r).toMatchObject({
        actor_principal: 'anonymous',
        outcome: 'denied',
        decision: { decision: 'deny' },
      });
      expect(r.decision.code).toMatch(/^token\./);
      expect(r.decision.source).toBe('127.0.0.1');
    }
  });

  it('the same routes accept the good token (the matrix is not vacuous)', async () => {
    for (const r of routes().filter((x) => x.method === 'GET')) {
      if (STREAMS.includes(r.path)) {
        // A live stream never ends: only its status is read.
        const abort = new AbortController();
        const res = await fetch(`${s.url}${fill(r)}`, {
          headers: { authorization: `Bearer ${s.adminToken}` },
          signal: abort.signal,
        });
        abort.abort();
        expect(res.status, r.path).toBe(200);
        continue;
      }
      const res = await s.request('GET', fill(r));
      expect(res.status, `${r.method} ${r.path}`).not.toBe(401);
    }
  });

  it('refuses a tenant-A token on tenant B objects on every route (403/404), changing nothing but the audit', async () => {
    const a = await s.token({ subject: 'alice', tenant: TENANT_A, roles: ['tenant-admin'], sessionId: null });
    const before = await fingerprint();
    const audits = await auditCount();
    const failures: string[] = [];
    let refusals403 = 0;
    for (const r of routes()) {
      // A live stream of tenant B's events (a stream of the caller's own would never end).
      const path = STREAMS.includes(r.path) ? `${fill(r)}?tenant=${TENANT_B}` : fill(r);
      const body = bodyFor(r);
      const res = await s.request(r.method, path, { token: a, ...(body !== undefined ? { body } : {}) });
      // Allowed by design: the catalogues (systems, regions, cells, plans) are readable, and the caller's own envelope and lists.
      // A cell's agent (its credential, lease, commands) is the platform's, not the catalogue's: refused.
      const ownScope =
        r.method === 'GET' &&
        r.path !== '/v1/cells/{ref}/agent' &&
        (['/v1/systems', '/v1/regions', '/v1/cells', '/v1/plans'].some((p) => r.path.startsWith(p)) ||
          ['/v1/whoami', '/v1/sessions', '/v1/break-glass'].includes(r.path));
      const lists = r.method === 'GET' && !r.path.includes('{') && !STREAMS.includes(r.path);
      if (ownScope || lists) {
        expect(res.status, `${r.method} ${path}`).toBe(200);
        // Lists show only tenant A's objects (row-level security, then a decision per item).
        for (const item of res.body.items ?? [])
          if (item.metadata?.tenantUuid)
            expect(item.metadata.tenantUuid).toBe('8c9646e0-b9ce-426a-8849-a047e29afa9d');
        continue;
      }
      if (res.status === 403) refusals403++;
      if (![403, 404].includes(res.status))
        failures.push(`${r.method} ${path}: ${res.status} ${res.body?.code}`);
    }
    expect(failures).toEqual([]);
    expect(await fingerprint()).toBe(before);
    // Every 403 was audited as a denied attempt by alice.
    const denied = await s.t.owner.query(
      `select count(*) as n from audit_records where actor_principal = 'alice' and outcome = 'denied'`,
    );
    expect(Number(denied.rows[0].n)).toBe(refusals403);
    expect(await auditCount()).toBe(audits + refusals403);
  });
});

describe('tenant spoofing', () => {
  it('refuses a body, path or query naming another tenant with 403 tenant.spoofing, audited', async () => {
    const a = await s.token({ subject: 'alice', tenant: TENANT_A, roles: ['tenant-admin'], sessionId: null });
    const before = await fingerprint();
    const body = await s.request('POST', '/v1/apply', {
      token: a,
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Deployment',
          metadata: {},
          spec: { tenant: TENANT_B, system: 'store', qualifier: 'evil' },
        },
      ],
    });
    expect(body.status).toBe(403);
    expect(body.body).toMatchObject({
      code: 'tenant.spoofing',
      errors: [{ pointer: '/0/spec/tenant', code: 'tenant.spoofing' }],
    });
    const path = await s.request('POST', `/v1/tenants/${TENANT_B}/suspend`, { token: a });
    expect(path.status).toBe(403);
    expect(path.body.code).toBe('tenant.spoofing');
    const query = await s.request('GET', `/v1/deployments?tenant=${TENANT_B}`, { token: a });
    expect(query.status).toBe(403);
    expect(query.body.code).toBe('tenant.spoofing');
    expect(await fingerprint()).toBe(before);
    const audited = await s.t.owner.query(
      `select decision from audit_records where actor_principal = 'alice' and decision->>'code' = 'tenant.spoofing'
       order by time desc limit 3`,
    );
    expect(audited.rows.map((r) => r.decision.details.pointer)).toEqual([
      '/query/tenant',
      '/path/ref',
      '/0/spec/tenant',
    ]);
    // Naming its own tenant is fine, and the change is decided by Cedar with the decision audited.
    const own = await s.request('POST', '/v1/apply', {
      token: a,
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Deployment',
          metadata: {},
          spec: { tenant: TENANT_A, system: 'store', qualifier: 'own' },
        },
      ],
    });
    expect(own.status, JSON.stringify(own.body)).toBe(200);
    const rec = await s.t.owner.query(
      `select tenant_id, decision from audit_records where actor_principal = 'alice' and outcome = 'success'
       and action = 'deployment.create'`,
    );
    expect(rec.rows[0]).toMatchObject({
      tenant_id: '8c9646e0-b9ce-426a-8849-a047e29afa9d',
      decision: {
        decision: 'allow',
        policies: ['tenant-admin'],
        action: 'deployment.write',
        roles: ['tenant-admin'],
      },
    });
  });

  it('lets row-level security refuse what policy would not see (tenant-admin creating a tenant)', async () => {
    const a = await s.token({ subject: 'alice', tenant: TENANT_A, roles: ['tenant-admin'], sessionId: null });
    const before = await fingerprint();
    const r = await s.request('POST', '/v1/tenants', {
      token: a,
      body: {
        metadata: {},
        spec: { customer: 'circlek-europe', region: 'eu', environmentType: 'qa', qualifier: 'mine' },
      },
    });
    expect([403, 404, 422]).toContain(r.status);
    expect(await fingerprint()).toBe(before);
  });

  it('lets a tenant-reader read its tenant but not change it', async () => {
    const reader = await s.token({
      subject: 'rita',
      tenant: TENANT_A,
      roles: ['tenant-reader'],
      sessionId: null,
    });
    expect((await s.request('GET', `/v1/tenants/${TENANT_A}`, { token: reader })).status).toBe(200);
    expect((await s.request('GET', '/v1/customers/circlek-europe', { token: reader })).status).toBe(200);
    const write = await s.request('POST', `/v1/tenants/${TENANT_A}/suspend`, { token: reader });
    expect(write.status).toBe(403);
    expect(write.body.code).toBe('authz.denied');
  });

  it('lets a platform-operator read and run lifecycle workflows but not write', async () => {
    const op = await s.token({ subject: 'otto', roles: ['platform-operator'], sessionId: null });
    expect((await s.request('GET', `/v1/tenants/${TENANT_B}`, { token: op })).status).toBe(200);
    expect((await s.request('POST', '/v1/tenants/circlek-eu-uat-dev/suspend', { token: op })).status).toBe(
      200,
    );
    const write = await s.request('POST', '/v1/apply', {
      token: op,
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'System',
          metadata: { name: 'x' },
          spec: { serviceId: 'x', displayName: 'X' },
        },
      ],
    });
    expect(write.status).toBe(403);
  });
});
