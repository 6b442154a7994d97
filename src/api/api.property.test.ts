import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

/**
 * Throws generated malformed manifests and requests at the real server: never a 5xx, always
 * problem+json with a code, and nothing persisted.
 */
let s: TestServer;
const TABLES = [
  'customers',
  'systems',
  'tenants',
  'deployments',
  'integration_resources',
  'object_versions',
  'audit_records',
  'outbox_events',
  'reconcile_jobs',
];
async function snapshot(): Promise<string> {
  const parts: string[] = [];
  for (const t of TABLES) {
    const r = await s.t.owner.query(
      `select count(*) as n, coalesce(max(updated_at_or_time)::text, '') as m from (select ${t === 'object_versions' ? 'created_at' : t === 'audit_records' || t === 'outbox_events' ? 'time' : 'updated_at'} as updated_at_or_time from ${t}) x`,
    );
    parts.push(`${t}:${r.rows[0].n}:${r.rows[0].m}`);
  }
  return parts.join('|');
}

const valid = circleK() as Record<string, unknown>[];
const KINDS = ['Customer', 'System', 'Tenant', 'Deployment', 'IntegrationResource', 'Region', 'Cell', 'Plan'];
const PATHS = ['customers', 'systems', 'tenants', 'deployments', 'integration-resources'];

/** A valid manifest made invalid for sure: an unknown field somewhere, or a value of the wrong type. */
const broken = fc
  .record({
    base: fc.constantFrom(...valid),
    where: fc.constantFrom('root', 'metadata', 'spec'),
    how: fc.constantFrom('unknown-field', 'wrong-type', 'drop-spec', 'bad-uuid', 'bad-kind'),
    key: fc
      .string({ minLength: 1, maxLength: 12 })
      .filter(
        (k) =>
          ![
            'apiVersion',
            'kind',
            'metadata',
            'spec',
            'name',
            'uuid',
            'labels',
            'generation',
            '__proto__',
          ].includes(k) &&
          !/^(displayName|shortCode|description|serviceId|customer|region|environmentType|qualifier|tenant|system|parameters|scope|type|kafkaTopic|blobContainer|database|plan|isolation|residency|cell|jurisdiction|stage|environmentTypes|tenancy|capacity|isolationModels|quotas|rateLimits)$/.test(
            k,
          ),
      ),
    value: fc.oneof(
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.integer(), { maxLength: 3 }),
      fc.object({ maxDepth: 1 }),
    ),
  })
  .map(({ base, where, how, key, value }) => {
    const doc = structuredClone(base) as Record<string, any>;
    const target = where === 'root' ? doc : doc[where];
    if (how === 'unknown-field') target[key] = value;
    else if (how === 'wrong-type') {
      const keys = Object.keys(doc.spec);
      const field = keys[Math.abs(String(key).length) % keys.length]!;
      // Of another type than the field's value for sure: `{}` into `parameters` (an object) or `[]`
      // into a list would be a valid change, not a malformed one.
      const kindOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
      const wrong = value ?? 7;
      doc.spec[field] =
        kindOf(wrong) !== kindOf(doc.spec[field]) ? wrong : typeof doc.spec[field] === 'number' ? 'x' : 42;
    } else if (how === 'drop-spec') delete doc.spec;
    else if (how === 'bad-uuid') doc.metadata.uuid = `${key}-not-a-uuid`;
    else doc.kind = `${key}x`;
    return doc;
  });

const anyJson = fc.jsonValue({ maxDepth: 4 });
const request = fc.oneof(
  fc.record({
    method: fc.constant('POST'),
    url: fc.constant('/v1/apply'),
    payload: fc.array(broken, { minLength: 1, maxLength: 4 }).map((d) => JSON.stringify(d)),
    type: fc.constant('application/json'),
  }),
  fc.record({
    method: fc.constant('POST'),
    url: fc.constantFrom('/v1/apply', '/v1/apply?dryRun=true'),
    payload: anyJson
      .filter((j) => !(typeof j === 'object' && j && 'apiVersion' in j))
      .map((j) => JSON.stringify(j)),
    type: fc.constant('application/json'),
  }),
  fc.record({
    method: fc.constant('POST'),
    url: fc.constant('/v1/apply'),
    payload: fc.string({ maxLength: 200 }),
    type: fc.constantFrom('application/yaml', 'application/json', 'text/plain'),
  }),
  fc.record({
    method: fc.constant('POST'),
    url: fc.constantFrom(...PATHS.map((p) => `/v1/${p}`)),
    payload: broken.map((d) => JSON.stringify(d)),
    type: fc.constant('application/json'),
  }),
  fc.record({
    method: fc.constantFrom('PUT', 'DELETE', 'GET'),
    url: fc
      .tuple(fc.constantFrom(...PATHS), fc.string({ minLength: 1, maxLength: 40 }))
      .map(([p, r]) => `/v1/${p}/${encodeURIComponent(r)}`),
    payload: broken.map((d) => JSON.stringify(d)),
    type: fc.constant('application/json'),
  }),
  fc.record({
    method: fc.constant('PUT'),
    url: fc.constantFrom(
      '/v1/tenants/circlek-eu-prod',
      '/v1/deployments/circlek-eu-prod-plan',
      '/v1/customers/circlek-europe',
    ),
    payload: broken.map((d) => JSON.stringify(d)),
    type: fc.constant('application/json'),
  }),
  fc.record({
    method: fc.constant('GET'),
    url: fc
      .tuple(
        fc.constantFrom(...PATHS),
        fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 }), { maxKeys: 3 }),
      )
      .map(([p, q]) => `/v1/${p}?${new URLSearchParams(q)}`),
    payload: fc.constant(''),
    type: fc.constant('application/json'),
  }),
  fc.record({
    method: fc.constant('POST'),
    url: fc
      .tuple(
        fc.string({ minLength: 1, maxLength: 30 }),
        fc.constantFrom('suspend', 'resume', 'archive', 'activate'),
      )
      .map(([r, v]) => `/v1/tenants/${encodeURIComponent(`x${r}`)}/${v}`),
    payload: fc.constant('{}'),
    type: fc.constant('application/json'),
  }),
);
const headers = fc.record(
  {
    'if-match': fc.string({ maxLength: 12 }),
    'idempotency-key': fc.string({ maxLength: 20 }),
    'x-correlation-id': fc.string({ maxLength: 20 }),
  },
  { requiredKeys: [] },
);

beforeAll(async () => {
  s = await startTestServer();
  const r = await s.request('POST', '/v1/apply', { body: valid });
  expect(r.status).toBe(200);
});
afterAll(async () => s?.close());

describe('malformed input', () => {
  it('never answers 5xx and never persists a change (10,000 generated requests)', async () => {
    const before = await snapshot();
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(request, headers, async (req, hdrs) => {
        const res = await s.app.inject({
          method: req.method as 'GET',
          url: req.url,
          payload: req.method === 'GET' ? undefined : req.payload,
          headers: { 'content-type': req.type, authorization: `Bearer ${s.adminToken}`, ...hdrs },
        });
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        expect(
          res.statusCode,
          `${req.method} ${req.url} ${req.payload.slice(0, 300)} → ${res.body.slice(0, 300)}`,
        ).toBeLessThan(500);
        if (res.statusCode >= 400) {
          expect(res.headers['content-type']).toContain('application/problem+json');
          expect(JSON.parse(res.body).code).toMatch(/^[a-z_]+\.[a-z_]+$/);
        } else {
          // Only reads and no-op verbs may succeed.
          expect(req.method === 'GET' || req.url.includes('dryRun')).toBe(true);
        }
      }),
      { numRuns: 10_000 },
    );
    expect(await snapshot()).toBe(before);
    expect([...statuses.keys()].every((c) => c < 500)).toBe(true);
  }, 300_000);
});

describe('kinds', () => {
  it('covers every kind', () => {
    expect(new Set(valid.map((d) => d.kind))).toEqual(new Set(KINDS));
  });
});

/** Inputs that once gave 500 (issue 16): a NUL byte anywhere, JSON nested deeper than any manifest. */
describe('the inputs that gave 5xx', () => {
  const inject = (o: { method: string; url: string; payload?: string; headers?: Record<string, string> }) =>
    s.app.inject({
      method: o.method as 'GET',
      url: o.url,
      ...(o.payload !== undefined ? { payload: o.payload } : {}),
      headers: { authorization: `Bearer ${s.adminToken}`, ...o.headers },
    });
  /** JSON text nested `depth` levels (built as text: the test's own JSON.stringify would overflow). */
  const nest = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;
  const expectProblem = (
    res: { statusCode: number; headers: Record<string, unknown>; body: string },
    code: string,
    what: string,
  ) => {
    expect(res.statusCode, `${what} → ${res.body.slice(0, 300)}`).toBe(400);
    expect(String(res.headers['content-type'])).toContain('application/problem+json');
    expect(JSON.parse(res.body).code, what).toBe(code);
  };

  it('answers 400 request.invalid_character to a NUL byte in a path, query, filter, header-keyed body or manifest', async () => {
    const before = await snapshot();
    const fixed = [
      ['GET', '/v1/tenants/circlek-eu-uat%00', undefined],
      ['GET', '/v1/deployments?tenant=%00', undefined],
      ['GET', '/v1/audit?correlationId=%00', undefined],
      ['GET', '/v1/tenants?customer=a%00b', undefined],
      ['POST', '/v1/tenants/%00/suspend', '{}'],
      ['POST', '/v1/apply', JSON.stringify([{ ...(valid[0] as object), metadata: { name: 'x\u0000y' } }])],
      ['POST', '/v1/apply', JSON.stringify([{ ...(valid[0] as object), spec: { 'k\u0000': 1 } }])],
      [
        'POST',
        '/v1/webhook-endpoints',
        JSON.stringify({ metadata: { name: 'n' }, spec: { url: 'https://a\u0000.example' } }),
      ],
    ] as const;
    for (const [method, url, payload] of fixed) {
      const res = await inject({
        method,
        url,
        payload,
        headers: { 'content-type': 'application/json', 'idempotency-key': `nul-${url.length}` },
      });
      expectProblem(res, 'request.invalid_character', `${method} ${url}`);
    }
    // And generated: a NUL at a random place of a path segment, a query value or a manifest string.
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...PATHS),
        fc.string({ maxLength: 20 }),
        fc.string({ maxLength: 20 }),
        fc.constantFrom('path', 'query', 'body'),
        async (p, head, tail, where) => {
          const bad = `${head}\u0000${tail}`;
          const res = await inject(
            where === 'path'
              ? { method: 'GET', url: `/v1/${p}/${encodeURIComponent(bad)}` }
              : where === 'query'
                ? { method: 'GET', url: `/v1/${p}?${new URLSearchParams({ tenant: bad })}` }
                : {
                    method: 'POST',
                    url: '/v1/apply',
                    payload: JSON.stringify([{ ...(valid[1] as object), metadata: { name: bad } }]),
                    headers: { 'content-type': 'application/json' },
                  },
          );
          expectProblem(res, 'request.invalid_character', `${where} ${JSON.stringify(bad)}`);
        },
      ),
      { numRuns: 300 },
    );
    expect(await snapshot()).toBe(before);
  });

  it('answers 400 body.too_deep to deeply nested JSON, with or without an Idempotency-Key', async () => {
    const before = await snapshot();
    for (const depth of [65, 1_000, 10_000, 100_000]) {
      for (const url of ['/v1/apply', '/v1/tenants', '/v1/webhook-endpoints']) {
        for (const key of [undefined, `deep-${depth}`]) {
          const res = await inject({
            method: 'POST',
            url,
            payload:
              url === '/v1/apply' ? `[${nest(depth)}]` : `{"metadata":{"name":"x"},"spec":${nest(depth)}}`,
            headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
          });
          expectProblem(res, 'body.too_deep', `${url} depth ${depth} key ${key}`);
        }
      }
    }
    // YAML nested as deep never gives 5xx either.
    const yaml = `${'- '.repeat(2_000)}1\n`;
    const res = await inject({
      method: 'POST',
      url: '/v1/apply',
      payload: yaml,
      headers: { 'content-type': 'application/yaml', 'idempotency-key': 'deep-yaml' },
    });
    expect(res.statusCode, res.body.slice(0, 300)).toBeGreaterThanOrEqual(400);
    expect(res.statusCode).toBeLessThan(500);
    expect(await snapshot()).toBe(before);
  });
});
