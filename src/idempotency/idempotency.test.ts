import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { enterTenant, scopeKey } from '../../test/helpers/tenant-scope.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { asPlatform } from '../db/database.js';
import { deleteExpiredKeys } from './idempotency.repository.js';
import { REDACTED_SECRET, redactSecrets } from './redact-response.js';

let s: TestServer;
let A: { slug: string; uuid: string };
let B: { slug: string; uuid: string };

beforeAll(async () => {
  s = await startTestServer();
  const res = await s.request('POST', '/v1/apply', {
    body: [customerDoc('idema'), tenantDoc('idema'), customerDoc('idemb'), tenantDoc('idemb')],
  });
  expect(res.status).toBe(200);
  const tenants = res.body.results.filter((r: { kind: string }) => r.kind === 'Tenant');
  A = { slug: tenants[0].name, uuid: tenants[0].uuid };
  B = { slug: tenants[1].name, uuid: tenants[1].uuid };
});
afterAll(async () => s?.close());

const endpointYaml = (tenant: string, name: string) => `apiVersion: tenantry.dev/v1
kind: WebhookEndpoint
metadata:
  name: ${name}
  tenant: ${tenant}
spec:
  url: https://hooks.example.com/${name}
`;

describe('Idempotency-Key across callers and tenants', () => {
  it('never replays a platform caller’s response to a tenant caller with the same subject and key', async () => {
    // The platform admin "alice" creates an endpoint of tenant A: the response shows its secret once.
    const platform = await s.token({ subject: 'alice', roles: ['platform-admin'], sessionId: null });
    const key = 'same-key-1';
    const first = await s.request('POST', '/v1/apply', {
      token: platform,
      raw: endpointYaml(A.slug, 'ops'),
      contentType: 'application/yaml',
      headers: { 'idempotency-key': key },
    });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const secret: string = first.body.results[0].secret;
    expect(secret).toMatch(/^whsec_/);

    // "alice" as tenant-admin of B sends the very same bytes under the same key: no replay, and the
    // foreign tenant in the body is refused as spoofing (YAML and JSON take the same check).
    const tenantB = await s.token({
      subject: 'alice',
      tenant: B.slug,
      roles: ['tenant-admin'],
      sessionId: null,
    });
    const cross = await s.request('POST', '/v1/apply', {
      token: tenantB,
      raw: endpointYaml(A.slug, 'ops'),
      contentType: 'application/yaml',
      headers: { 'idempotency-key': key },
    });
    expect(cross.headers.get('idempotency-replayed')).toBeNull();
    expect(cross.status).toBe(403);
    expect(cross.body.code).toBe('tenant.spoofing');
    expect(JSON.stringify(cross.body)).not.toContain(secret);

    // Tenant A's admin "alice" (another scope) under the same key gets a fresh creation, not the replay.
    const tenantA = await s.token({
      subject: 'alice',
      tenant: A.slug,
      roles: ['tenant-admin'],
      sessionId: null,
    });
    const own = await s.request('POST', '/v1/apply', {
      token: tenantA,
      raw: endpointYaml(A.slug, 'ops'),
      contentType: 'application/yaml',
      headers: { 'idempotency-key': key },
    });
    expect(own.headers.get('idempotency-replayed')).toBeNull();
    expect(own.status).toBe(200); // applied afresh (unchanged), not the platform caller's response
    expect(own.body.results[0].action).toBe('unchanged');
    expect(JSON.stringify(own.body)).not.toContain(secret);

    // Another application of the same subject and scope does not share the record either.
    const otherApp = await s.token({
      subject: 'alice',
      roles: ['platform-admin'],
      sessionId: null,
      appId: 'other',
    });
    const viaOther = await s.request('POST', '/v1/apply', {
      token: otherApp,
      raw: endpointYaml(A.slug, 'ops'),
      contentType: 'application/yaml',
      headers: { 'idempotency-key': key },
    });
    expect(viaOther.headers.get('idempotency-replayed')).toBeNull();

    // The same caller gets the replay, with the secret replaced by a notice that it was shown once.
    const replay = await s.request('POST', '/v1/apply', {
      token: platform,
      raw: endpointYaml(A.slug, 'ops'),
      contentType: 'application/yaml',
      headers: { 'idempotency-key': key },
    });
    expect(replay.status).toBe(200);
    expect(replay.headers.get('idempotency-replayed')).toBe('true');
    expect(replay.headers.get('idempotency-redacted')).toBe('true');
    expect(replay.body.results[0].uuid).toBe(first.body.results[0].uuid);
    expect(replay.body.results[0].secret).toBe(REDACTED_SECRET);

    // The stored copy never holds the secret.
    const stored = await s.t.owner.query(`select response::text as r from idempotency_keys`);
    expect(stored.rows.length).toBeGreaterThan(0);
    for (const row of stored.rows) expect(row.r).not.toContain('whsec_');
  });

  it('replays only after deciding again: a caller whose roles no longer allow it gets 403', async () => {
    const admin = await s.token({ subject: 'bob', tenant: B.slug, roles: ['tenant-admin'], sessionId: null });
    const body = { metadata: { name: 'bobs', tenant: B.slug }, spec: { url: 'https://hooks.example.com/b' } };
    const first = await s.request('POST', '/v1/webhook-endpoints', {
      token: admin,
      body,
      headers: { 'idempotency-key': 'bob-1' },
    });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const again = await s.request('POST', '/v1/webhook-endpoints', {
      token: admin,
      body,
      headers: { 'idempotency-key': 'bob-1' },
    });
    expect(again.headers.get('idempotency-replayed')).toBe('true');
    // Same issuer, subject, app and tenant, now only a reader: the replay is decided again and refused.
    const reader = await s.token({
      subject: 'bob',
      tenant: B.slug,
      roles: ['tenant-reader'],
      sessionId: null,
    });
    const refused = await s.request('POST', '/v1/webhook-endpoints', {
      token: reader,
      body,
      headers: { 'idempotency-key': 'bob-1' },
    });
    expect(refused.status).toBe(403);
    expect(refused.headers.get('idempotency-replayed')).toBeNull();
  });

  it('keeps records under row-level security: a tenant connection sees its own only, whatever it sets', async () => {
    const app = new pg.Client({ connectionString: s.t.appUrl });
    await app.connect();
    try {
      const count = async (tenant: string) => {
        await app.query('begin');
        // The tenant scope as the application enters it (a proof, migration 0020); then whatever it sets.
        await enterTenant(app, await scopeKey(s.t.owner), tenant);
        await app.query(`select set_config('tenantry.tenant_id', $1, true)`, [
          A.uuid === tenant ? B.uuid : A.uuid,
        ]);
        const r = await app.query(
          `select count(*)::int as n, count(*) filter (where tenant_id <> $1)::int as foreign
          from idempotency_keys`,
          [tenant],
        );
        await app.query('rollback');
        return r.rows[0] as { n: number; foreign: number };
      };
      const b = await count(B.uuid);
      expect(b.n).toBeGreaterThan(0);
      expect(b.foreign).toBe(0);
      await app.query('begin');
      await expect(
        app.query(
          `insert into idempotency_keys (issuer, principal, app_id, scope, tenant_id, method, path, key,
          request_hash, expires_at) values ('x', 'x', 'x', $1::text, $1::uuid, 'POST', '/x', 'k', 'h', now() + interval '1 day')`,
          [A.uuid],
        ),
      ).rejects.toThrow(/row-level security/);
      await app.query('rollback');
    } finally {
      await app.end();
    }
  });

  it('expires records: an expired key runs the request again', async () => {
    const body = { metadata: { name: 'expiring' }, spec: { url: 'https://hooks.example.com/e' } };
    const first = await s.request('POST', '/v1/webhook-endpoints', {
      body,
      headers: { 'idempotency-key': 'exp-1' },
    });
    expect(first.status).toBe(201);
    await s.t.owner.query(
      `update idempotency_keys set expires_at = now() - interval '1 second' where key = 'exp-1'`,
    );
    const again = await s.request('POST', '/v1/webhook-endpoints', {
      body,
      headers: { 'idempotency-key': 'exp-1' },
    });
    expect(again.headers.get('idempotency-replayed')).toBeNull();
    expect(again.status).toBe(409);
    // The sweep removes expired records of every caller.
    await s.t.owner.query(`update idempotency_keys set expires_at = now() - interval '1 second'`);
    const total = (await s.t.owner.query(`select count(*)::int as n from idempotency_keys`)).rows[0].n;
    expect(await asPlatform(s.t.db, (trx) => deleteExpiredKeys(trx))).toBe(total);
  });
});

describe('redactSecrets', () => {
  it('replaces secret fields and whsec_ values anywhere, keeps references', () => {
    const { value, redacted } = redactSecrets({
      status: { secret: 'whsec_abc', ref: 'ref:sha256:0123' },
      spec: { secret: 'ref:sha256:0123', password: 'hunter2' },
      results: [{ note: 'whsec_x' }, { name: 'ok' }],
    });
    expect(redacted).toBe(true);
    expect(value).toEqual({
      status: { secret: REDACTED_SECRET, ref: 'ref:sha256:0123' },
      spec: { secret: 'ref:sha256:0123', password: REDACTED_SECRET },
      results: [{ note: REDACTED_SECRET }, { name: 'ok' }],
    });
    expect(redactSecrets({ a: 1 }).redacted).toBe(false);
  });
});
