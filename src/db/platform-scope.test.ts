import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

/**
 * The attack of an SQL injection in a tenant request: raw SQL on the tenant role (tenantry_app),
 * with every setting it can set, against every table and every security-definer function.
 * Whatever it sets, it sees no row of another tenant nor of the platform, and it cannot become
 * the platform (the platform scope needs the role tenantry_platform, migration 0013).
 */
let s: TestServer;
let A: { uuid: string; customer: string };
let B: { uuid: string; customer: string };
let app: pg.Client;

/** Tables that hold no tenant's data: the catalogue every tenant may read. */
const CATALOGUE = new Set(['systems', 'regions', 'cells', 'plans']);

beforeAll(async () => {
  s = await startTestServer();
  const res = await s.request('POST', '/v1/apply', {
    body: [customerDoc('rawa'), tenantDoc('rawa'), customerDoc('rawb'), tenantDoc('rawb')],
  });
  expect(res.status).toBe(200);
  const tenants = res.body.results.filter((r: { kind: string }) => r.kind === 'Tenant');
  const customers = res.body.results.filter((r: { kind: string }) => r.kind === 'Customer');
  A = { uuid: tenants[0].uuid, customer: customers[0].uuid };
  B = { uuid: tenants[1].uuid, customer: customers[1].uuid };
  // Rows in as many tables as the API writes: endpoints (tenant and platform-wide), sessions,
  // idempotency records, rate-limit buckets, request log, audit, events, jobs.
  for (const [tenant, slug] of [
    [B.uuid, tenants[1].name],
    [A.uuid, tenants[0].name],
  ] as const) {
    const token = await s.token({
      subject: `admin-${tenant}`,
      tenant: slug,
      roles: ['tenant-admin'],
      sessionId: `sid-${tenant}`,
    });
    const ep = await s.request('POST', '/v1/webhook-endpoints', {
      token,
      body: { metadata: { name: 'ops', tenant: slug }, spec: { url: 'https://hooks.example.com/x' } },
      headers: { 'idempotency-key': `k-${tenant}` },
    });
    expect(ep.status, JSON.stringify(ep.body)).toBe(201);
    await s.request('POST', `/v1/tenants/${slug}/suspend`, { token });
  }
  const platformEp = await s.request('POST', '/v1/webhook-endpoints', {
    body: { metadata: { name: 'platform-wide' }, spec: { url: 'https://hooks.example.com/p' } },
    headers: { 'idempotency-key': 'k-platform' },
  });
  expect(platformEp.status).toBe(201);
  app = new pg.Client({ connectionString: s.t.appUrl });
  await app.connect();
});
afterAll(async () => {
  await app?.end();
  await s?.close();
});

async function tables(): Promise<{ name: string; columns: string[] }[]> {
  const r = await s.t.owner.query(`select c.table_name as name, array_agg(c.column_name::text) as columns
    from information_schema.columns c join pg_tables t on t.tablename = c.table_name and t.schemaname = 'public'
    where c.table_schema = 'public' group by c.table_name order by c.table_name`);
  return r.rows;
}

/** Rows of `table` that do not belong to `own` (a tenant UUID, or '' for none at all). */
function foreignRows(table: { name: string; columns: string[] }, own: string, ownCustomer: string): string {
  const t = `"${table.name}"`;
  if (table.name === 'tenants')
    return `select count(*) filter (where id::text is distinct from '${own}') from ${t}`;
  if (table.name === 'customers')
    return `select count(*) filter (where id::text is distinct from '${ownCustomer}') from ${t}`;
  if (table.name === 'event_sequences') return `select count(*) filter (where stream <> '${own}') from ${t}`;
  if (table.name === 'audit_chain_heads') return `select count(*) filter (where chain <> '${own}') from ${t}`;
  if (table.columns.includes('tenant_id'))
    return `select count(*) filter (where tenant_id::text is distinct from '${own}') from ${t}`;
  return `select count(*) from ${t}`; // no tenant column: every row is not this tenant's
}

const SETTINGS = (a: string, b: string) => {
  const platform = ['', 'on', 'true', '1', 'ON'];
  const tenant = ['', a, b, 'platform', '00000000-0000-0000-0000-000000000000'];
  return platform.flatMap((p) => tenant.map((t) => ({ platform: p, tenant: t })));
};

describe('the tenant role with raw SQL', () => {
  it('sees 0 foreign rows in every table, whatever it sets', async () => {
    const all = await tables();
    expect(all.length).toBeGreaterThan(20);
    let statements = 0;
    const leaks: string[] = [];
    for (const setting of SETTINGS(A.uuid, B.uuid)) {
      // Under the tenant that is set, the rows of every other tenant and of the platform are foreign.
      const own = /^[0-9a-f-]{36}$/.test(setting.tenant) ? setting.tenant : '';
      const ownCustomer = own === A.uuid ? A.customer : own === B.uuid ? B.customer : '';
      for (const table of all) {
        if (CATALOGUE.has(table.name)) continue;
        await app.query('begin');
        await app.query(
          `select set_config('tenantry.platform', $1, true), set_config('tenantry.tenant_id', $2, true)`,
          [setting.platform, setting.tenant],
        );
        statements++;
        try {
          const r = await app.query(foreignRows(table, own, ownCustomer));
          const n = Number(Object.values(r.rows[0])[0]);
          if (n > 0) leaks.push(`${table.name} platform=${setting.platform} tenant=${setting.tenant}: ${n}`);
        } catch (err) {
          // Not readable at all is fine (tenantry_migrations, rate_limit_buckets; a tenant setting
          // that is no UUID makes every policy fail): 0 rows.
          expect(String((err as Error).message)).toMatch(
            /permission denied|invalid input syntax for type uuid/,
          );
        }
        await app.query('rollback');
      }
    }
    expect(leaks).toEqual([]);
    expect(statements).toBeGreaterThan(500);
    // The owner sees the rows the tenant role did not: the test's data is really there.
    const platformRows = await s.t.owner.query(
      `select count(*)::int as n from webhook_endpoints where tenant_id is null`,
    );
    expect(platformRows.rows[0].n).toBe(1);
  });

  it('cannot become the platform role nor switch row-level security off', async () => {
    for (const attempt of [
      'set role tenantry_platform',
      'set session authorization tenantry_platform',
      'set role postgres',
      'alter role tenantry_app bypassrls',
      'grant tenantry_platform to tenantry_app',
    ]) {
      await expect(app.query(attempt), attempt).rejects.toThrow(
        /permission denied|must be|not permitted|privilege/,
      );
    }
    await app.query('begin');
    await expect(app.query('set local row_security = off; select count(*) from tenants')).rejects.toThrow();
    await app.query('rollback');
    await expect(
      app.query(`insert into tenantry_migrations (name, timestamp) values ('x', 'y')`),
    ).rejects.toThrow(/permission denied/);
    await expect(app.query(`delete from tenantry_migrations`)).rejects.toThrow(/permission denied/);
  });

  it('cannot use a security-definer function across tenants', async () => {
    const definers = await s.t.owner.query<{ sig: string; app: boolean }>(`
      select p.oid::regprocedure::text as sig, has_function_privilege('tenantry_app', p.oid, 'execute') as app
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'public' and p.prosecdef order by 1`);
    // The only ones the tenant role may call: entering a tenant's scope with a proof (migration
    // 0020), and appending an event for its own tenant only.
    expect(definers.rows.filter((r) => r.app).map((r) => r.sig)).toEqual([
      'tenantry_enter_tenant(uuid,bigint,bytea)',
      'tenantry_event_appended(uuid,uuid,text,text,bigint)',
    ]);
    const calls: Record<string, string> = {
      'tenantry_identify(text,text,text,text,text,integer)': `select * from tenantry_identify($T, 'i', 'p', 'a', 'sid-${B.uuid}', 60)`,
      'tenantry_identify_unchecked(text,text,text,text,text,integer)': `select * from tenantry_identify_unchecked($T, 'i', 'p', 'a', 'sid-x', 60)`,
      'tenantry_audit_scan(text,text,bigint,integer)': `select * from tenantry_audit_scan($T, '', 0, 10)`,
      'tenantry_audit_sequence(uuid[],bigint[],text[],text[])': `select tenantry_audit_sequence(array[gen_random_uuid()], array[1::bigint], array[repeat('0', 64)], array[repeat('1', 64)])`,
      'tenantry_audit_apply_retention(uuid,timestamp with time zone)': `select * from tenantry_audit_apply_retention(gen_random_uuid(), now())`,
      'tenantry_audit_apply_retention_unchecked(uuid,timestamp with time zone)': `select * from tenantry_audit_apply_retention_unchecked(gen_random_uuid(), now())`,
      'tenantry_event_appended(uuid,uuid,text,text,bigint)': `select tenantry_event_appended(gen_random_uuid(), $T::uuid, 't', 's', 1)`,
      'tenantry_event_appended_unchecked(uuid,uuid,text,text,bigint)': `select tenantry_event_appended_unchecked(gen_random_uuid(), $T::uuid, 't', 's', 1)`,
      'tenantry_enter_tenant(uuid,bigint,bytea)': `select tenantry_enter_tenant($T::uuid, extract(epoch from now())::bigint + 60, sha256(convert_to($T, 'UTF8')))`,
      // The trigger that numbers events at commit (migration 0045): executable by no role.
      'tenantry_sequence_events()': 'select tenantry_sequence_events()',
      // The trigger that queues audit records for the sequencer (migration 0051): executable by no role.
      'tenantry_audit_enqueue()': 'select tenantry_audit_enqueue()',
    };
    for (const { sig } of definers.rows) expect(Object.keys(calls), `an attack for ${sig}`).toContain(sig);
    let tried = 0;
    for (const setting of SETTINGS(A.uuid, B.uuid)) {
      for (const sig of Object.keys(calls)) {
        await app.query('begin');
        await app.query(
          `select set_config('tenantry.platform', $1, true), set_config('tenantry.tenant_id', $2, true)`,
          [setting.platform, setting.tenant === B.uuid ? A.uuid : setting.tenant],
        );
        tried++;
        // Always aimed at tenant B while the connection says A (or nothing, or the platform).
        await expect(app.query(calls[sig]!.replaceAll('$T', `'${B.uuid}'`)), sig).rejects.toThrow(
          /permission denied|platform|insufficient/,
        );
        await app.query('rollback');
      }
    }
    expect(tried).toBe(SETTINGS('a', 'b').length * Object.keys(calls).length);
    const sessions = await s.t.owner.query(`select count(*)::int as n from sessions where id = 'sid-x'`);
    expect(sessions.rows[0].n).toBe(0);
  });
});
