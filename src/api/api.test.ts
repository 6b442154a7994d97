import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLE_DIR } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';

let s: TestServer;
const yamlOf = (file: string) => fs.readFileSync(path.join(EXAMPLE_DIR, file), 'utf8');
const allYaml = () =>
  ['00-systems.yaml', '10-circlek-europe.yaml', '20-circlek-north-america.yaml', '30-placement.yaml']
    .map(yamlOf)
    .join('\n---\n');
const tenant = (name: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Tenant',
  metadata: { name },
  spec: { customer: 'circlek-europe', region: 'eu', environmentType: 'qa', ...extra },
});
async function rowCount(): Promise<number> {
  const r = await s.t.owner.query(
    `select (select count(*) from tenants) + (select count(*) from deployments) + (select count(*) from customers) + (select count(*) from object_versions) + (select count(*) from integration_resources) as n`,
  );
  return Number(r.rows[0].n);
}

beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s?.close());

describe('apply', () => {
  it('dry-runs, applies, and re-applies the Circle K example idempotently', async () => {
    const dry = await s.request('POST', '/v1/apply?dryRun=true', {
      raw: allYaml(),
      contentType: 'application/yaml',
    });
    expect(dry.status).toBe(200);
    expect(dry.body.dryRun).toBe(true);
    expect(dry.body.summary).toEqual({ created: 38, configured: 0, unchanged: 0 });
    expect(await rowCount()).toBe(0);

    const first = await s.request('POST', '/v1/apply', { raw: allYaml(), contentType: 'application/yaml' });
    expect(first.status).toBe(200);
    expect(first.body.summary).toEqual({ created: 38, configured: 0, unchanged: 0 });
    const after = await rowCount();
    const second = await s.request('POST', '/v1/apply', { raw: allYaml(), contentType: 'application/yaml' });
    expect(second.body.summary).toEqual({ created: 0, configured: 0, unchanged: 38 });
    expect(await rowCount()).toBe(after);

    const edited = allYaml().replace('displayName: Circle K Europe', 'displayName: Circle K Europa');
    const diff = await s.request('POST', '/v1/apply?dryRun=true', {
      raw: edited,
      contentType: 'application/yaml',
    });
    const changed = diff.body.results.filter((r: { action: string }) => r.action !== 'unchanged');
    expect(changed).toEqual([
      expect.objectContaining({
        kind: 'Customer',
        name: 'circlek-europe',
        action: 'configured',
        changes: [
          { op: 'replace', path: '/spec/displayName', from: 'Circle K Europe', to: 'Circle K Europa' },
        ],
      }),
    ]);
    expect(await rowCount()).toBe(after);
  });

  it('accepts JSON arrays and List documents', async () => {
    const r = await s.request('POST', '/v1/apply', {
      body: { kind: 'List', items: [tenant('circlek-eu-qa')] },
    });
    expect(r.status).toBe(200);
    expect(r.body.results[0]).toMatchObject({ name: 'circlek-eu-qa', action: 'created' });
  });

  it('is all or nothing and reports every offending field with its pointer', async () => {
    const before = await rowCount();
    const r = await s.request('POST', '/v1/apply', {
      body: [
        tenant('circlek-eu-dev', { environmentType: 'dev' }),
        tenant('x', { region: 'mars' }),
        { ...tenant('y'), extra: 1 },
      ],
    });
    expect(r.status).toBe(422);
    expect(r.headers.get('content-type')).toContain('application/problem+json');
    expect(r.body.code).toBe('manifest.invalid');
    expect(r.body.errors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ pointer: '/1/spec/region', code: 'region.unknown' }),
        expect.objectContaining({ pointer: '/2/extra', code: 'field.unknown' }),
      ]),
    );
    expect(await rowCount()).toBe(before);
  });

  it('answers malformed bodies with 400 problem+json', async () => {
    for (const [raw, type] of [
      ['{"a":', 'application/json'],
      ['a: [1, 2', 'application/yaml'],
      ['', 'application/yaml'],
      ['{"__proto__": {"x": 1}}', 'application/json'],
    ]) {
      const r = await s.request('POST', '/v1/apply', { raw, contentType: type });
      expect(r.status, raw).toBe(400);
      expect(r.body.code).toMatch(/^(body|manifest)\./);
    }
    const media = await s.request('POST', '/v1/apply', { raw: '<x/>', contentType: 'application/xml' });
    expect(media.status).toBe(415);
    const big = await s.request('POST', '/v1/apply', {
      raw: `# ${'x'.repeat(2 * 1024 * 1024)}`,
      contentType: 'application/yaml',
    });
    expect(big.status).toBe(413);
    expect(big.body.code).toBe('body.too_large');
  });
});

describe('object routes', () => {
  it('creates, gets by UUID and slug, and refuses a duplicate', async () => {
    const created = await s.request('POST', '/v1/tenants', {
      body: tenant('circlek-eu-staging', { environmentType: 'staging' }),
    });
    expect(created.status).toBe(201);
    expect(created.headers.get('etag')).toBe('"1"');
    const uuid = created.body.metadata.uuid;
    expect(created.headers.get('location')).toBe(`/v1/tenants/${uuid}`);
    expect(created.body.status).toMatchObject({
      observedGeneration: 0,
      phase: 'Pending',
      lifecycle: 'Active',
    });
    expect(created.body.status.conditions[0]).toMatchObject({
      type: 'Ready',
      status: 'Unknown',
      reason: 'AwaitingReconcile',
    });
    const bySlug = await s.request('GET', '/v1/tenants/circlek-eu-staging');
    const byUuid = await s.request('GET', `/v1/tenants/${uuid}`);
    expect(bySlug.body).toEqual(byUuid.body);
    const dup = await s.request('POST', '/v1/tenants', {
      body: tenant('circlek-eu-staging', { environmentType: 'staging' }),
    });
    expect(dup.status).toBe(409);
    expect(dup.body.code).toBe('tenant.exists');
  });

  it('answers 404 with a stable code for every kind', async () => {
    for (const p of ['customers', 'systems', 'tenants', 'deployments', 'integration-resources']) {
      const r = await s.request('GET', `/v1/${p}/does-not-exist`);
      expect(r.status).toBe(404);
      expect(r.body.code).toMatch(/\.not_found$/);
    }
    const route = await s.request('GET', '/v1/planets');
    expect(route.status).toBe(404);
    expect(route.body.code).toBe('route.not_found');
  });

  it('validates single-object bodies with pointers relative to the body', async () => {
    const r = await s.request('POST', '/v1/deployments', {
      body: { metadata: {}, spec: { tenant: 'circlek-eu-prod', system: 'nope', colour: 1 } },
    });
    expect(r.status).toBe(422);
    expect(r.body.errors).toContainEqual(
      expect.objectContaining({ pointer: '/spec/colour', code: 'field.unknown' }),
    );
    const wrongKind = await s.request('POST', '/v1/deployments', { body: tenant('x') });
    expect(wrongKind.status).toBe(422);
    expect(wrongKind.body.errors[0].pointer).toBe('/kind');
  });

  it('uses ETag / If-Match for optimistic concurrency', async () => {
    const got = await s.request('GET', '/v1/tenants/circlek-eu-staging');
    const etag = got.headers.get('etag')!;
    const body = tenant('circlek-eu-staging', { environmentType: 'staging', description: 'v2' });
    const ok = await s.request('PUT', '/v1/tenants/circlek-eu-staging', {
      body,
      headers: { 'if-match': etag },
    });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('etag')).toBe('"2"');
    const stale = await s.request('PUT', '/v1/tenants/circlek-eu-staging', {
      body: { ...body, spec: { ...body.spec, description: 'v3' } },
      headers: { 'if-match': etag },
    });
    expect(stale.status).toBe(412);
    expect(stale.body.code).toBe('object.generation_conflict');
    const staleVerb = await s.request('POST', '/v1/tenants/circlek-eu-staging/suspend', {
      headers: { 'if-match': etag },
    });
    expect(staleVerb.status).toBe(412);
    const badHeader = await s.request('PUT', '/v1/tenants/circlek-eu-staging', {
      body,
      headers: { 'if-match': 'nonsense' },
    });
    expect(badHeader.status).toBe(400);
    const other = await s.request('PUT', '/v1/tenants/circlek-eu-staging', { body: tenant('circlek-eu-qa') });
    expect(other.status).toBe(422);
    expect((await s.request('GET', '/v1/tenants/circlek-eu-staging')).body.spec.description).toBe('v2');
  });

  it('replays an Idempotency-Key and refuses it for another body', async () => {
    const key = 'create-dev-tenant-1';
    const a = await s.request('POST', '/v1/tenants', {
      body: tenant('circlek-eu-dev', { environmentType: 'dev' }),
      headers: { 'idempotency-key': key },
    });
    const b = await s.request('POST', '/v1/tenants', {
      body: tenant('circlek-eu-dev', { environmentType: 'dev' }),
      headers: { 'idempotency-key': key },
    });
    expect(a.status).toBe(201);
    expect(b.status).toBe(201);
    expect(b.body).toEqual(a.body);
    expect(b.headers.get('idempotency-replayed')).toBe('true');
    expect(b.headers.get('etag')).toBe(a.headers.get('etag'));
    const c = await s.request('POST', '/v1/tenants', {
      body: tenant('circlek-eu-uat', { environmentType: 'uat', qualifier: 'x' }),
      headers: { 'idempotency-key': key },
    });
    expect(c.status).toBe(422);
    expect(c.body.code).toBe('idempotency.key_reused');
    const versions = await s.t.owner.query(
      `select count(*)::int as n from object_versions v join tenants t on t.id = v.object_id where t.slug = 'circlek-eu-dev'`,
    );
    expect(versions.rows[0].n).toBe(1);
  });

  it('runs lifecycle verbs and deletes with tombstones', async () => {
    expect((await s.request('POST', '/v1/tenants/circlek-eu-dev/suspend')).body.status.lifecycle).toBe(
      'Suspended',
    );
    const again = await s.request('POST', '/v1/tenants/circlek-eu-dev/suspend');
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('lifecycle.invalid_transition');
    await settleWorkflows(s.t);
    expect((await s.request('POST', '/v1/tenants/circlek-eu-dev/archive')).status).toBe(200);
    await settleWorkflows(s.t);
    const del = await s.request('DELETE', '/v1/tenants/circlek-eu-dev');
    expect(del.status).toBe(200);
    expect(del.body.status.lifecycle).toBe('Deleted');
    expect((await s.request('GET', '/v1/tenants/circlek-eu-dev')).status).toBe(404);
    expect(
      (await s.request('GET', `/v1/tenants/${del.body.metadata.uuid}?includeDeleted=true`)).body.metadata
        .deletedAt,
    ).toBeDefined();
    const inUse = await s.request('DELETE', '/v1/systems/plan');
    expect(inUse.status).toBe(409);
    expect(inUse.body.code).toBe('system.in_use');
    const history = await s.request('GET', '/v1/tenants/circlek-eu-dev/history');
    expect(history.status).toBe(404);
    const h2 = await s.request('GET', `/v1/tenants/${del.body.metadata.uuid}/history`);
    expect(h2.body.items.map((i: { action: string }) => i.action)).toEqual([
      'create',
      'suspend',
      'archive',
      'delete',
    ]);
  });
});

describe('lists', () => {
  it('filters and caps the page size', async () => {
    const eu = await s.request('GET', '/v1/tenants?region=eu&environmentType=prod');
    expect(eu.body.items.map((i: { metadata: { name: string } }) => i.metadata.name)).toEqual([
      'circlek-eu-prod',
    ]);
    const byCustomer = await s.request('GET', '/v1/tenants?customer=circlek-north-america');
    expect(byCustomer.body.items.map((i: { metadata: { name: string } }) => i.metadata.name)).toEqual([
      'circlek-us-prod',
    ]);
    const tooBig = await s.request('GET', '/v1/tenants?limit=100000');
    expect(tooBig.status).toBe(400);
    expect(tooBig.body.errors[0].pointer).toBe('/limit');
    const unknown = await s.request('GET', '/v1/tenants?colour=red');
    expect(unknown.status).toBe(400);
    const badCursor = await s.request('GET', '/v1/tenants?cursor=bm9wZQ');
    expect(badCursor.status).toBe(400);
    expect(badCursor.body.code).toBe('cursor.invalid');
  });

  it('paginates stably while other requests insert', async () => {
    for (let i = 0; i < 30; i++)
      await s.request('POST', '/v1/systems', {
        body: {
          metadata: { name: `sys-${String(i).padStart(2, '0')}` },
          spec: { displayName: `S${i}`, serviceId: `${i}` },
        },
      });
    const existing = (await s.request('GET', '/v1/systems?limit=500')).body.items.map(
      (i: { metadata: { name: string } }) => i.metadata.name,
    );
    const seen: string[] = [];
    let cursor: string | null = null;
    let n = 0;
    do {
      const page: { body: { items: { metadata: { name: string } }[]; nextCursor: string | null } } =
        await s.request('GET', `/v1/systems?limit=7${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.body.items.map((i) => i.metadata.name));
      cursor = page.body.nextCursor;
      // Concurrent inserts before and after the cursor position.
      await Promise.all([
        s.request('POST', '/v1/systems', {
          body: { metadata: { name: `aaa-${n}` }, spec: { displayName: 'x', serviceId: 'x' } },
        }),
        s.request('POST', '/v1/systems', {
          body: { metadata: { name: `zzz-${n}` }, spec: { displayName: 'x', serviceId: 'x' } },
        }),
      ]);
      n++;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    for (const name of existing) expect(seen).toContain(name);
  });
});

describe('health and docs', () => {
  it('reports health, readiness and a valid OpenAPI document', async () => {
    expect((await s.request('GET', '/healthz')).body).toEqual({ status: 'ok' });
    expect((await s.request('GET', '/readyz')).body).toEqual({
      status: 'ok',
      checks: { database: 'ok', migrations: 'ok' },
    });
    const doc = await s.request('GET', '/openapi.json');
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining(['/v1/apply', '/v1/tenants/{ref}', '/v1/tenants/{ref}/suspend']),
    );
    expect((await fetch(`${s.url}/docs/`)).status).toBe(200);
  });
});
