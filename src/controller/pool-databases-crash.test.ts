import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropDataplane, tempDataDir, until } from '../../test/helpers/controller.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { guardClient } from '../db/connection-errors.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { secretCipherFor } from '../secrets/index.js';
import { defaultDataplaneUrl } from './providers.js';

/**
 * Issue 15: two controller processes provision ≥ 300 tenants' pool databases on one data-plane
 * PostgreSQL while one of them is killed with SIGKILL again and again. Every generated credential
 * must log in and see only its own schema; nothing is duplicated; nothing is left unfinished.
 */
const TENANTS = 300;
const ROOT = path.resolve(import.meta.dirname, '../..');
// Roles belong to the whole server: a customer (and so role names) unique to this run.
const customer = `pc${randomBytes(3).toString('hex')}`;
let t: TestDatabase;
let dataplaneUrl: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  t = await createTestDatabase();
  dataplaneUrl = defaultDataplaneUrl(t.ownerUrl);
  const registry = createRegistry(t.db, t.config);
  const ctx = systemContext('test-operator');
  await registry.apply(ctx, [
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Customer',
      metadata: { name: customer },
      spec: { displayName: 'Pool', shortCode: customer },
    },
  ]);
  for (let batch = 0; batch < TENANTS; batch += 50) {
    const docs: unknown[] = [];
    for (let i = batch; i < Math.min(TENANTS, batch + 50); i++) {
      docs.push(
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Tenant',
          metadata: {},
          spec: { customer, region: 'eu', environmentType: 'dev', qualifier: `t${i}` },
        },
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'IntegrationResource',
          metadata: {},
          spec: {
            scope: { tenant: `${customer}-eu-dev-t${i}` },
            type: 'database',
            database: { isolation: 'pool' },
          },
        },
      );
    }
    await registry.apply(ctx, docs);
  }
}, 120_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  if (!t) return;
  // The roles outlive the data-plane database: drop them with it.
  const { rows } = await t.owner.query<{ rolname: string }>(
    'select rolname from pg_roles where rolname like $1',
    [`t_${customer}%`],
  );
  await dropDataplane(t);
  for (const r of rows) await t.owner.query(`drop role if exists ${pg.escapeIdentifier(r.rolname)}`);
  await t.destroy();
}, 60_000);

function spawnController(dataDir: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/controller-process.ts'], {
      cwd: ROOT,
      env: {
        ...process.env,
        APP_URL: t.appUrl,
        PLATFORM_URL: t.platformUrl,
        DATA_DIR: dataDir,
        DATAPLANE_URL: dataplaneUrl,
        WORKERS: '8',
      },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    children.add(child);
    child.stdout?.once('data', () => resolve(child));
    child.once('error', reject);
  });
}

const notReady = async () => {
  const r = await t.owner.query<{ n: number }>(
    `select (select count(*)::int from tenants where slug like $1 and phase <> 'Ready')
          + (select count(*)::int from integration_resources where slug like $1 and phase <> 'Ready') as n`,
    [`${customer}-%`],
  );
  return r.rows[0]!.n;
};

describe('two controllers provisioning pool databases, one killed repeatedly', () => {
  it(`${TENANTS} tenants: every credential logs in and sees only its own schema; nothing duplicated or stuck`, {
    timeout: 300_000,
  }, async () => {
    const dataDir = await tempDataDir();
    const steady = await spawnController(dataDir);
    let victim = await spawnController(dataDir);
    let kills = 0;
    const started = Date.now();
    // Kill the second controller every 1.5 s (and start another) while work remains, at least 4 times.
    while ((await notReady()) > 0 || kills < 4) {
      await new Promise((r) => setTimeout(r, 1_500));
      if (Date.now() - started > 200_000) break;
      victim.kill('SIGKILL');
      await new Promise((r) => victim.once('exit', r));
      kills++;
      victim = await spawnController(dataDir);
    }
    await until('every tenant and database Ready', async () => (await notReady()) === 0, 60_000);
    console.info(`${TENANTS} pool databases Ready in ${Date.now() - started} ms with ${kills} kills`);
    expect(kills).toBeGreaterThanOrEqual(4);
    expect(steady.exitCode).toBeNull();

    // Nothing duplicated: one secret, one role and one schema per resource; no job left leased.
    const { rows: resources } = await t.owner.query<{ id: string; physical_name: string }>(
      `select id, physical_name from integration_resources where slug like $1`,
      [`${customer}-%`],
    );
    expect(resources).toHaveLength(TENANTS);
    const sealed = await t.owner.query<{ resource_id: string }>(
      'select resource_id from resource_secrets where resource_id = any($1::uuid[])',
      [resources.map((r) => r.id)],
    );
    expect(sealed.rows).toHaveLength(TENANTS);
    // Stored sealed (src/secrets): read through the secret store, as the provider does.
    const store = new SecretStore(t.db, secretCipherFor(t.db, t.config));
    const secrets = {
      rows: await Promise.all(
        sealed.rows.map(async (r) => ({
          resource_id: r.resource_id,
          value: (await store.get(r.resource_id))!,
        })),
      ),
    };
    const dp = guardClient(new pg.Client({ connectionString: dataplaneUrl }));
    await dp.connect();
    const roles = await dp.query('select count(*)::int as n from pg_roles where rolname like $1', [
      `t_${customer}%`,
    ]);
    const schemas = await dp.query('select count(*)::int as n from pg_namespace where nspname like $1', [
      `t_${customer}%`,
    ]);
    await dp.end();
    expect(roles.rows[0].n).toBe(TENANTS);
    expect(schemas.rows[0].n).toBe(TENANTS);

    // Every credential logs in, lands in its own schema, may create there, and sees no other schema.
    const byId = new Map(secrets.rows.map((s) => [s.resource_id, s.value]));
    const failures: string[] = [];
    for (const r of resources) {
      const s = byId.get(r.id)!;
      const url = new URL(dataplaneUrl);
      url.username = s.username ?? '';
      url.password = s.password ?? '';
      const c = guardClient(new pg.Client({ connectionString: url.toString() }));
      try {
        await c.connect();
        const { rows } = await c.query(
          `select current_schema() as schema,
                  array(select nspname::text from pg_namespace where nspname <> all (array[current_schema(), 'public', 'information_schema'])
                        and nspname not like 'pg\\_%' and has_schema_privilege(oid, 'USAGE')) as others`,
        );
        if (rows[0].schema !== r.physical_name) failures.push(`${s.username}: schema ${rows[0].schema}`);
        if (rows[0].others.length > 0) failures.push(`${s.username}: sees ${rows[0].others.join(', ')}`);
        await c.query('create table if not exists probe (id int)');
      } catch (err) {
        failures.push(`${s.username}: ${(err as Error).message}`);
      } finally {
        await c.end().catch(() => undefined);
      }
    }
    expect(failures).toEqual([]);
  });
});
