import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import type { Database } from '../db/schema.js';
import { RateLimiter } from './rate-limiter.js';

let a: TestServer;
let b: TestServer;
const LIMIT = 20;
const WINDOW = 60;

beforeAll(async () => {
  a = await startTestServer();
  b = await startTestServer({ database: a.t });
  const applied = await a.request('POST', '/v1/apply', {
    body: [
      ...circleK(),
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Plan',
        metadata: { name: 'metered' },
        spec: {
          displayName: 'Metered',
          isolationModels: ['shared'],
          quotas: { deployments: 5 },
          rateLimits: {
            read: { limit: LIMIT, windowSeconds: WINDOW },
            write: { limit: 5, windowSeconds: WINDOW },
          },
        },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: { name: 'circlek-eu-qa-rl' },
        spec: {
          customer: 'circlek-europe',
          region: 'eu',
          environmentType: 'qa',
          qualifier: 'rl',
          plan: 'metered',
        },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: { name: 'circlek-eu-qa-free' },
        spec: { customer: 'circlek-europe', region: 'eu', environmentType: 'qa', qualifier: 'free' },
      },
    ],
  });
  expect(applied.status).toBe(200);
});
afterAll(async () => {
  await b?.close();
  await a?.close();
});

const POLICY = /^"(read|write)";q=(\d+);w=(\d+)$/;
const STATE = /^"(read|write)";r=(\d+);t=(\d+)$/;

describe('per-tenant rate limits across two API processes', () => {
  it('respects the combined allowance (tolerance: +1 for the refill during the test) and answers 429 with the headers', async () => {
    const started = Date.now();
    const responses = [];
    for (let i = 0; i < 2 * LIMIT; i++) {
      const server = i % 2 === 0 ? a : b;
      responses.push(await server.request('GET', '/v1/tenants/circlek-eu-qa-rl/usage'));
    }
    const elapsed = (Date.now() - started) / 1000;
    const ok = responses.filter((r) => r.status === 200);
    const limited = responses.filter((r) => r.status === 429);
    // GCRA refills one request every WINDOW/LIMIT seconds: at most this many more may pass.
    const refill = Math.floor(elapsed / (WINDOW / LIMIT));
    expect(ok.length).toBeGreaterThanOrEqual(LIMIT);
    expect(ok.length).toBeLessThanOrEqual(LIMIT + refill);
    expect(ok.length + limited.length).toBe(2 * LIMIT);
    // Both processes answered some of the allowed and some of the refused requests.
    expect(responses.filter((r, i) => i % 2 === 1 && r.status === 429).length).toBeGreaterThan(0);

    const first = ok[0]!;
    expect(first.headers.get('ratelimit-policy')).toBe(`"read";q=${LIMIT};w=${WINDOW}`);
    expect(first.headers.get('ratelimit')).toMatch(STATE);
    expect(first.headers.get('ratelimit')).toBe(`"read";r=${LIMIT - 1};t=${Math.ceil(WINDOW / LIMIT)}`);

    const refused = limited[0]!;
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    expect(refused.body).toMatchObject({
      status: 429,
      code: 'rate_limit.exceeded',
      details: { class: 'read', limit: LIMIT, windowSeconds: WINDOW },
    });
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= WINDOW / LIMIT).toBe(true);
    expect(refused.headers.get('ratelimit-policy')).toMatch(POLICY);
    const [, cls, r, t] = STATE.exec(refused.headers.get('ratelimit') ?? '') ?? [];
    expect([cls, r, Number(t)]).toEqual(['read', '0', retryAfter]);
  });

  it('limits writes separately from reads, by the tenant the body targets', async () => {
    const res = [];
    for (let i = 0; i < 7; i++) {
      res.push(
        await (i % 2 ? b : a).request('POST', '/v1/deployments', {
          body: {
            metadata: { name: `circlek-eu-qa-rl-store-w${i}` },
            spec: { tenant: 'circlek-eu-qa-rl', system: 'store', qualifier: `w${i}` },
          },
        }),
      );
    }
    expect(res.map((r) => r.status)).toEqual([201, 201, 201, 201, 201, 429, 429]);
    expect(res[5]?.headers.get('ratelimit-policy')).toBe(`"write";q=5;w=${WINDOW}`);
  });

  it('lets an audited, expiring administrative override lift the limit (overrides are never rate limited)', async () => {
    const o = await a.request('POST', '/v1/tenants/circlek-eu-qa-rl/limit-overrides', {
      body: { name: 'rate.read', value: 1000, reason: 'incident recovery', expiresInSeconds: 300 },
    });
    expect(o.status).toBe(201);
    expect(o.body).toMatchObject({ name: 'rate.read', value: 1000, createdBy: 'test-admin' });
    // Process b has the old limits cached for at most TENANTRY_RATE_LIMIT_CACHE_MS; a asks afresh.
    const r = await a.request('GET', '/v1/tenants/circlek-eu-qa-rl/usage');
    expect(r.status).toBe(200);
    expect(r.headers.get('ratelimit-policy')).toBe(`"read";q=1000;w=${WINDOW}`);
    expect(r.body.rateLimits).toContainEqual(
      expect.objectContaining({
        class: 'read',
        limit: 1000,
        source: 'override',
        expiresAt: o.body.expiresAt,
      }),
    );
    const audit = await a.t.owner.query(
      `select actor_principal, after from audit_records where action = 'limits.override'`,
    );
    expect(audit.rows).toEqual([
      expect.objectContaining({
        actor_principal: 'test-admin',
        after: expect.objectContaining({ id: o.body.id }),
      }),
    ]);
    const revoked = await a.request('DELETE', `/v1/tenants/circlek-eu-qa-rl/limit-overrides/${o.body.id}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.revokedAt).not.toBeNull();
  });

  it('does not limit platform requests that target no tenant, nor tenants without limits', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await a.request('GET', '/v1/customers');
      expect(r.status).toBe(200);
      expect(r.headers.get('ratelimit')).toBeNull();
    }
    const unlimited = await a.request('GET', '/v1/tenants/circlek-eu-qa-free');
    expect(unlimited.status).toBe(200);
    expect(unlimited.headers.get('ratelimit')).toBeNull();
  });
});

describe("the limiter's cost", () => {
  it('costs no database round trip for a tenant without limits once cached, and one statement per limited request', async () => {
    let queries = 0;
    const db = new Kysely<Database>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: a.t.platformUrl, max: 2 }) }),
      log: (e) => {
        if (e.level === 'query') queries++;
      },
    });
    try {
      const limiter = new RateLimiter(db, { cacheMs: 60_000 });
      expect(await limiter.check('circlek-eu-qa-free', 'read')).toBeUndefined();
      expect(queries).toBeGreaterThan(0);
      queries = 0;
      const started = process.hrtime.bigint();
      for (let i = 0; i < 1000; i++) await limiter.check('circlek-eu-qa-free', 'read');
      const perCheckUs = Number(process.hrtime.bigint() - started) / 1000 / 1000;
      expect(queries).toBe(0);
      console.info(
        `rate limiter, cached tenant without limits: ${perCheckUs.toFixed(2)} µs per request, 0 queries`,
      );
      await limiter.check('circlek-eu-qa-rl', 'write');
      queries = 0;
      for (let i = 0; i < 5; i++) await limiter.check('circlek-eu-qa-rl', 'write');
      expect(queries).toBe(5);
    } finally {
      await db.destroy();
    }
  });
});

describe('usage API', () => {
  it('shows usage against every quota', async () => {
    const r = await a.request('GET', '/v1/tenants/circlek-eu-prod/usage');
    expect(r.status).toBe(200);
    expect(r.body.plan).toBe('enterprise');
    expect(r.body.quotas.map((q: { name: string }) => q.name)).toEqual([
      'deployments',
      'integrationResources',
      'storageGiB',
      'eventsPerPeriod',
      'concurrentOperations',
      'computeUnits',
    ]);
    expect(r.body.quotas[0]).toMatchObject({ name: 'deployments', used: 4, limit: 100, source: 'plan' });
    expect((await a.request('GET', '/v1/tenants/nobody/usage')).body.code).toBe('tenant.not_found');
    const bad = await a.request('POST', '/v1/tenants/circlek-eu-prod/limit-overrides', {
      body: { name: 'cpu', value: 1, reason: 'x' },
    });
    expect(bad.status).toBe(422);
    expect(bad.body.code).toBe('override.unknown_limit');
  });

  it('answers quota.exceeded over HTTP with the quota, use and limit', async () => {
    await a.request('POST', '/v1/tenants/circlek-eu-qa-rl/limit-overrides', {
      body: { name: 'rate.write', value: 1000, reason: 'test' },
    });
    const r = await a.request('POST', '/v1/apply', {
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Deployment',
          metadata: { name: 'circlek-eu-qa-rl-plan' },
          spec: { tenant: 'circlek-eu-qa-rl', system: 'plan' },
        },
      ],
    });
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({
      code: 'quota.exceeded',
      details: { quota: 'deployments', used: 5, limit: 5 },
      errors: [{ pointer: '/0/metadata', code: 'quota.exceeded' }],
    });
  });
});
