import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { enterTenant, scopeKey } from '../../test/helpers/tenant-scope.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { tenantScopeProof } from './database.js';

/**
 * Issue 16: a tenant connection cannot set another tenant's id. The attack is an SQL injection in
 * a request of tenant A: raw SQL on the tenant role inside A's transaction. Whatever it sets, it
 * sees none of B's rows, and it cannot enter B's scope without a proof made with a key it cannot
 * read (migration 0020).
 */
let s: TestServer;
let A: string;
let B: string;
let key: Buffer;
let app: pg.Client;

beforeAll(async () => {
  s = await startTestServer();
  const res = await s.request('POST', '/v1/apply', {
    body: [customerDoc('scpa'), tenantDoc('scpa'), customerDoc('scpb'), tenantDoc('scpb')],
  });
  expect(res.status).toBe(200);
  const tenants = res.body.results.filter((r: { kind: string }) => r.kind === 'Tenant');
  A = tenants[0].uuid;
  B = tenants[1].uuid;
  for (const t of tenants) {
    const ep = await s.request('POST', '/v1/webhook-endpoints', {
      body: { metadata: { name: 'ops', tenant: t.name }, spec: { url: 'https://hooks.example.com/x' } },
    });
    expect(ep.status).toBe(201);
  }
  key = await scopeKey(s.t.owner);
  app = new pg.Client({ connectionString: s.t.appUrl });
  await app.connect();
});
afterAll(async () => {
  await app?.end();
  await s?.close();
});

/** Tables with a tenant_id column (and tenants itself), to count B's rows in. */
async function tenantTables(): Promise<string[]> {
  const r = await s.t.owner.query<{ name: string }>(`
    select c.table_name as name from information_schema.columns c
    join pg_tables t on t.tablename = c.table_name and t.schemaname = 'public'
    where c.table_schema = 'public' and c.column_name = 'tenant_id' order by 1`);
  return r.rows.map((x) => x.name);
}

/** Rows of tenant `t` the connection sees, per table (tables it may not read count 0). */
async function visible(t: string, tables: string[]): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  for (const table of [...tables, 'tenants']) {
    await app.query('savepoint probe');
    try {
      const column = table === 'tenants' ? 'id' : 'tenant_id';
      const r = await app.query(`select count(*)::int as n from "${table}" where ${column} = $1`, [t]);
      if (r.rows[0].n > 0) seen[table] = r.rows[0].n;
      await app.query('release savepoint probe');
    } catch (err) {
      expect(String((err as Error).message)).toMatch(/permission denied/);
      await app.query('rollback to savepoint probe');
    }
  }
  return seen;
}

const refused = /insufficient|bound to another tenant/;
const now = () => Math.floor(Date.now() / 1000);

describe("a tenant connection and another tenant's id", () => {
  it('sees its own rows after entering its scope, and none of B whatever it sets afterwards', async () => {
    const tables = await tenantTables();
    expect(tables.length).toBeGreaterThan(15);
    await app.query('begin');
    await enterTenant(app, key, A);
    expect(Object.keys(await visible(A, tables))).toEqual(
      expect.arrayContaining(['tenants', 'webhook_endpoints']),
    );
    let attempts = 0;
    for (const sql of [
      `select set_config('tenantry.tenant_id', '${B}', true)`,
      `select set_config('tenantry.tenant_id', '${B}', false)`,
      `set local tenantry.tenant_id = '${B}'`,
      `set tenantry.tenant_id = '${B}'`,
      `select set_config('tenantry.platform', 'on', true)`,
    ]) {
      await app.query(sql);
      attempts++;
      expect(await visible(B, tables), sql).toEqual({});
    }
    expect(attempts).toBe(5);
    // The setting says B; the scope is still A's.
    expect((await app.query(`select tenantry_current_tenant() as t`)).rows[0].t).toBe(A);
    await app.query('rollback');
    await app.query(`reset tenantry.tenant_id`);
    await app.query(`reset tenantry.platform`);
  });

  it('shows nothing to a transaction that only sets the tenant id, as the application did until now', async () => {
    const tables = await tenantTables();
    await app.query('begin');
    await app.query(`select set_config('tenantry.tenant_id', $1, true)`, [B]);
    expect(await visible(B, tables)).toEqual({});
    expect(await visible(A, tables)).toEqual({});
    // Nor does it write for B, nor append B's events.
    await expect(
      app.query(
        `insert into webhook_endpoints (id, tenant_id, name, slug, spec) values (gen_random_uuid(), $1, 'x', 'x.x', '{}')`,
        [B],
      ),
    ).rejects.toThrow(/row-level security/);
    await app.query('rollback');
    await app.query('begin');
    await app.query(`select set_config('tenantry.tenant_id', $1, true)`, [B]);
    await expect(
      app.query(`select tenantry_event_appended(gen_random_uuid(), $1::uuid, 't', 's', 1)`, [B]),
    ).rejects.toThrow(/platform|insufficient/);
    await app.query('rollback');
  });

  it('cannot enter B without a proof of B: forged, of A, expired, too far ahead, or after A', async () => {
    const exp = now() + 60;
    const attempts: [string, unknown[]][] = [
      ['forged', [B, exp, Buffer.alloc(32)]],
      ["A's proof with B's id", [B, exp, tenantScopeProof(key, A, exp)]],
      ["B's proof with another expiry", [B, exp + 1, tenantScopeProof(key, B, exp)]],
      ['expired', [B, now() - 1, tenantScopeProof(key, B, now() - 1)]],
      ['too far ahead', [B, now() + 3600, tenantScopeProof(key, B, now() + 3600)]],
      ['a proof under another key', [B, exp, tenantScopeProof(Buffer.alloc(32, 7), B, exp)]],
    ];
    for (const [what, params] of attempts) {
      await app.query('begin');
      await expect(
        app.query('select tenantry_enter_tenant($1::uuid, $2::bigint, $3)', params),
        what,
      ).rejects.toThrow(refused);
      await app.query('rollback');
    }
    // Even a valid proof of B does not switch a transaction bound to A.
    await app.query('begin');
    await enterTenant(app, key, A);
    await expect(enterTenant(app, key, B)).rejects.toThrow(refused);
    await app.query('rollback');
    // A valid proof of B works in a transaction of its own (the test's proof is right).
    await app.query('begin');
    await enterTenant(app, key, B);
    expect(await visible(B, await tenantTables())).toHaveProperty('tenants', 1);
    await app.query('rollback');
  });

  it('keeps the scope to its transaction, and the key and the bindings out of reach', async () => {
    await app.query('begin');
    await enterTenant(app, key, A);
    await app.query('commit');
    await app.query('begin');
    expect((await app.query('select tenantry_current_tenant() as t')).rows[0].t).toBeNull();
    expect((await app.query('select count(*)::int as n from tenants')).rows[0].n).toBe(0);
    await app.query('rollback');
    for (const sql of [
      'select key from tenantry_scope_key',
      `insert into tenantry_scope_bindings values (pg_backend_pid(), pg_current_xact_id(), '${B}')`,
      `update tenantry_scope_bindings set tenant_id = '${B}'`,
      'delete from tenantry_scope_bindings',
    ]) {
      await expect(app.query(sql), sql).rejects.toThrow(/permission denied/);
    }
    // Another connection's binding is not visible.
    const other = new pg.Client({ connectionString: s.t.appUrl });
    await other.connect();
    try {
      await other.query('begin');
      await enterTenant(other, key, B);
      expect(
        (await app.query('select count(*)::int as n from tenantry_scope_bindings where tenant_id = $1', [B]))
          .rows[0].n,
      ).toBe(0);
      await other.query('rollback');
    } finally {
      await other.end();
    }
  });
});
