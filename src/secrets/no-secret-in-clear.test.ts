import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploymentManifests, dropDataplane, startController, until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { secretCipherFor } from './index.js';

/**
 * Issue 16, secrets at rest: after databases are provisioned (generated role passwords) and
 * webhook endpoints created (a generated secret, a given one, a rotation), through the HTTP API
 * with idempotency keys, and database credentials read through GET …/credentials, no secret value
 * appears in any column of any table.
 */
let s: TestServer;
const customer = `nc${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;

beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => {
  if (s) await dropDataplane(s.t);
  await s?.close();
});

const resource = (spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'IntegrationResource',
  metadata: {},
  spec,
});
const endpoint = (name: string, spec: Record<string, unknown>, tenantRef?: string) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'WebhookEndpoint',
  metadata: { name, ...(tenantRef ? { tenant: tenantRef } : {}) },
  spec: { url: 'https://hooks.example.com/in', ...spec },
});

describe('no secret in clear', () => {
  it('finds no provisioned password nor webhook signing secret in any table', async () => {
    const given = `whsec_${randomBytes(32).toString('base64')}`;
    const rotated = `whsec_${randomBytes(32).toString('base64')}`;
    const applied = await s.request('POST', '/v1/apply', {
      headers: { 'idempotency-key': `nc-${customer}` },
      body: [
        ...deploymentManifests(customer, 'plan'),
        resource({ scope: { tenant }, type: 'database', database: { isolation: 'pool' } }),
        resource({ scope: { deployment }, type: 'database', database: { isolation: 'silo' } }),
        endpoint('generated', {}, tenant),
        endpoint('given', { secret: given }, tenant),
        endpoint(`platform-${customer}`, {}),
      ],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    const generated: string[] = applied.body.results
      .filter((r: { kind: string; secret?: string }) => r.kind === 'WebhookEndpoint' && r.secret)
      .map((r: { secret: string }) => r.secret);
    expect(generated).toHaveLength(2);
    const rotation = await s.request('POST', '/v1/apply', {
      headers: { 'idempotency-key': `nc-rot-${customer}` },
      body: [endpoint('given', { secret: rotated }, tenant)],
    });
    expect(rotation.status, JSON.stringify(rotation.body)).toBe(200);
    const viaEndpoint = await s.request('POST', '/v1/webhook-endpoints', {
      headers: { 'idempotency-key': `nc-ep-${customer}` },
      body: { metadata: { name: 'direct', tenant }, spec: { url: 'https://hooks.example.com/d' } },
    });
    expect(viaEndpoint.status, JSON.stringify(viaEndpoint.body)).toBe(201);
    generated.push(viaEndpoint.body.status.secret);

    const c = await startController(s.t);
    let passwords: string[];
    try {
      await until(
        'databases Ready',
        async () => {
          const r = await s.t.owner.query(
            `select count(*)::int as n from integration_resources where phase = 'Ready'`,
          );
          return r.rows[0].n === 2;
        },
        60_000,
      );
      const ids = await s.t.owner.query<{ id: string }>('select id from integration_resources');
      const store = new SecretStore(s.t.db, secretCipherFor(s.t.db, s.t.config));
      passwords = [];
      for (const { id } of ids.rows) passwords.push((await store.get(id))!.password!);
      // Handed out over HTTP (GET …/credentials): the request log and the audit keep no copy either.
      for (const { id } of ids.rows) {
        const r = await s.request('GET', `/v1/integration-resources/${id}/credentials`);
        expect(passwords).toContain(r.body.password);
      }
    } finally {
      await c.stop();
    }

    const secrets = [given, rotated, ...generated]
      .flatMap((w) => [
        w,
        w.slice('whsec_'.length),
        Buffer.from(w.slice('whsec_'.length), 'base64').toString('hex'),
      ])
      .concat(passwords);
    expect(secrets.every((v) => typeof v === 'string' && v.length >= 16)).toBe(true);
    expect(passwords).toHaveLength(2);

    // Every row of every table, as JSON text (bytea as hex), read as the owner: nothing hidden by RLS.
    const tables = await s.t.owner.query<{ name: string }>(
      `select tablename as name from pg_tables where schemaname = 'public' order by 1`,
    );
    expect(tables.rows.length).toBeGreaterThan(20);
    const dump: string[] = [];
    for (const { name } of tables.rows) {
      const r = await s.t.owner.query<{ j: string }>(`select row_to_json(x)::text as j from "${name}" x`);
      dump.push(...r.rows.map((x) => `${name}: ${x.j}`));
    }
    const all = dump.join('\n');
    const leaks = dump.filter((row) => secrets.some((v) => row.includes(v)));
    expect(leaks).toEqual([]);
    // The secrets are there, sealed: 2 database credentials, 4 endpoints' signing secrets (5 entries).
    expect(all.match(/resource_secrets: [^\n]*"sealed":"tenc1\./g)).toHaveLength(2);
    expect(all.match(/"sealed" ?: ?"tenc1\./g)?.length).toBeGreaterThanOrEqual(5);
  }, 120_000);
});
