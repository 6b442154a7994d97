import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropDataplane } from '../../../test/helpers/controller.js';
import { desiredDatabase } from '../../../test/helpers/desired-database.js';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/test-database.js';
import { defaultDataplaneUrl } from '../../controller/providers.js';
import { asTenant } from '../../db/database.js';
import { secretCipherFor } from '../../secrets/index.js';
import type { DesiredResource } from '../provider.js';
import { PostgresDatabaseProvider } from './postgres-database.provider.js';
import { SecretStore } from './secret-store.js';

let t: TestDatabase;
let provider: PostgresDatabaseProvider;
let secrets: SecretStore;
// Roles and databases belong to the whole server: names unique to this run.
const run = randomBytes(3).toString('hex');

beforeAll(async () => {
  t = await createTestDatabase();
  secrets = new SecretStore(t.db, secretCipherFor(t.db, t.config));
  provider = new PostgresDatabaseProvider(defaultDataplaneUrl(t.ownerUrl), secrets);
});
afterAll(async () => {
  await provider?.close();
  await dropDataplane(t);
  await t?.destroy();
});

const desired = (isolation: 'shared' | 'pool' | 'silo', who: string) =>
  desiredDatabase(isolation, `iso${run}-${who}-eu-prod`);

/** A client logged in as the resource's own role, with the password from the secret store. */
async function connectAs(d: DesiredResource, database?: string): Promise<pg.Client> {
  const s = await secrets.get(d.id);
  if (!s) throw new Error('no secret');
  const url = new URL(defaultDataplaneUrl(t.ownerUrl));
  url.username = s.username ?? '';
  url.password = s.password ?? '';
  if (database) url.pathname = `/${database}`;
  const c = new pg.Client({ connectionString: url.toString() });
  await c.connect();
  return c;
}

async function refused(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err, 'expected the database to refuse').toBeInstanceOf(Error);
  return (err as Error).message;
}

describe('PostgreSQL isolation provider', () => {
  it('pool: a schema per tenant; tenant A cannot read tenant B’s schema', async () => {
    const a = desired('pool', 'a');
    const b = desired('pool', 'b');
    expect((await provider.observe(a)).exists).toBe(false);
    const seen = await provider.ensure(a);
    expect(seen).toMatchObject({ exists: true, drift: [] });
    expect(seen.details).toMatchObject({
      isolation: 'pool',
      schema: a.physicalName,
      secretRef: `resource-secrets/${a.id}`,
    });
    expect(JSON.stringify(seen.details)).not.toContain((await secrets.get(a.id))?.password);
    await provider.ensure(b);
    // The secret is visible to the platform scope only, not even to its own tenant's scope.
    const asOwnTenant = await asTenant(t.db, a.tenantId, (trx) =>
      sql`select count(*)::int as n from resource_secrets`.execute(trx),
    );
    expect(asOwnTenant.rows).toEqual([{ n: 0 }]);
    // Idempotent: a second ensure keeps the same credentials and changes nothing.
    const secret = await secrets.get(a.id);
    expect(await provider.ensure(a)).toMatchObject({ exists: true, drift: [] });
    expect(await secrets.get(a.id)).toEqual(secret);

    const ca = await connectAs(a);
    const cb = await connectAs(b);
    try {
      await cb.query('create table orders (id int primary key)');
      await cb.query('insert into orders values (1)');
      await ca.query('create table orders (id int primary key)');
      expect((await ca.query('select count(*)::int as n from orders')).rows[0].n).toBe(0);
      expect(await refused(ca.query(`select * from ${b.physicalName}.orders`))).toMatch(/permission denied/);
      expect(await refused(ca.query(`create table ${b.physicalName}.x (id int)`))).toMatch(
        /permission denied/,
      );
    } finally {
      await ca.end();
      await cb.end();
    }
    // Drift: a grant removed behind our back is reported, and ensure repairs it.
    const owner = new pg.Client({ connectionString: defaultDataplaneUrl(t.ownerUrl) });
    await owner.connect();
    await owner.query(`revoke usage, create on schema ${a.physicalName} from ${a.physicalName}`);
    await owner.end();
    expect((await provider.observe(a)).drift).toEqual([
      `role ${a.physicalName} lacks USAGE, CREATE on schema ${a.physicalName}`,
    ]);
    expect((await provider.ensure(a)).drift).toEqual([]);

    await provider.delete(a);
    await provider.delete(a);
    expect(await provider.observe(a)).toMatchObject({ exists: false });
    expect(await secrets.get(a.id)).toBeUndefined();
    await provider.delete(b);
  });

  it('pool: a suspended tenant’s role may not log in, and that is no drift (its session is not probed)', async () => {
    const a = { ...desired('pool', 's'), suspended: true };
    try {
      expect(await provider.ensure(a)).toMatchObject({ exists: true, drift: [] });
      expect((await provider.observe(a)).drift).toEqual([]);
      const login = await t.owner.query('select rolcanlogin from pg_roles where rolname = $1', [
        a.physicalName,
      ]);
      expect(login.rows[0].rolcanlogin).toBe(false);
      // Resumed: the role logs in again, and its session is checked again.
      const { suspended: _, ...resumed } = a;
      expect(await provider.ensure(resumed)).toMatchObject({ exists: true, drift: [] });
      await (await connectAs(resumed)).end();
    } finally {
      await provider.delete(a);
    }
  });

  it('pool: observe checks the contract as the tenant sees it; each broken piece is drift that ensure repairs', async () => {
    const a = desired('pool', 'c');
    const b = desired('pool', 'd');
    await provider.ensure(a);
    await provider.ensure(b);
    const dataplane = new URL(defaultDataplaneUrl(t.ownerUrl)).pathname.slice(1);
    const owner = new pg.Client({ connectionString: defaultDataplaneUrl(t.ownerUrl) });
    owner.on('error', () => undefined);
    await owner.connect();
    try {
      const role = a.physicalName;
      const breakages: [string, string][] = [
        [
          `revoke connect on database ${dataplane} from ${role}`,
          `role ${role} lacks CONNECT on database ${dataplane}`,
        ],
        [`alter role ${role} reset search_path`, `role ${role} has search_path "$user", public, not ${role}`],
        [
          `alter role ${role} password 'not-the-stored-one'`,
          `role ${role} cannot log in with its stored secret`,
        ],
        [
          `grant usage on schema ${b.physicalName} to ${role}`,
          `role ${role} may use other schemas: ${b.physicalName}`,
        ],
      ];
      for (const [breakage, drift] of breakages) {
        await owner.query(breakage);
        expect((await provider.observe(a)).drift, breakage).toEqual([drift]);
        if (breakage.startsWith('grant')) {
          // Someone else's grant is not ours to take back: it stays drift (the object ends Failed).
          expect((await provider.ensure(a)).drift).toEqual([drift]);
          // It is a foreign grant on B's schema: B's reconcile reports it and takes it back.
          expect((await provider.observe(b)).drift).toEqual([
            `${role} has privileges on schema ${b.physicalName} that Tenantry did not grant`,
          ]);
          expect((await provider.ensure(b)).drift).toEqual([]);
        } else {
          expect((await provider.ensure(a)).drift, breakage).toEqual([]);
        }
      }
      expect((await provider.observe(a)).drift).toEqual([]);
    } finally {
      await owner.end();
      await provider.delete(a);
      await provider.delete(b);
    }
  });

  it('silo: a database per tenant that only its own role may connect to', async () => {
    const a = desired('silo', 'a');
    const b = desired('silo', 'b');
    expect(await provider.ensure(a)).toMatchObject({ exists: true, drift: [] });
    expect(await provider.ensure(b)).toMatchObject({ exists: true, drift: [] });
    const ca = await connectAs(a, a.physicalName);
    await ca.query('create table orders (id int)');
    await ca.end();
    expect(await refused(connectAs(a, b.physicalName))).toMatch(/permission denied/);
    expect(await refused(connectAs(b, a.physicalName))).toMatch(/permission denied/);
    await provider.delete(a);
    await provider.delete(b);
    expect((await provider.observe(a)).exists).toBe(false);
  });

  it('foreign grants on a tenant’s schema or database are drift, revoked at reconcile: a real role loses its way in', async () => {
    const pool = desired('pool', 'f');
    const silo = desired('silo', 'f');
    await provider.ensure(pool);
    await provider.ensure(silo);
    const dataplaneUrl = defaultDataplaneUrl(t.ownerUrl);
    const dataplane = new URL(dataplaneUrl).pathname.slice(1);
    const owner = new pg.Client({ connectionString: dataplaneUrl });
    await owner.connect();
    const intruder = `intruder_${run}`;
    const asIntruder = (database: string) => {
      const u = new URL(dataplaneUrl);
      u.username = intruder;
      u.password = 'intruder-pw';
      u.pathname = `/${database}`;
      const c = new pg.Client({ connectionString: u.toString() });
      return c.connect().then(() => c);
    };
    try {
      await owner.query(`create role ${intruder} login password 'intruder-pw'`);
      await owner.query(`grant connect on database ${dataplane} to ${intruder}`);
      await owner.query(`grant usage, create on schema ${pool.physicalName} to ${intruder}`);
      await owner.query(`grant connect on database ${silo.physicalName} to ${intruder}`);
      // The grants work: the intruder gets into the silo and writes into the pool schema.
      await (await asIntruder(silo.physicalName)).end();
      const before = await asIntruder(dataplane);
      await before.query(`create table ${pool.physicalName}.planted (id int)`);
      await before.end();
      expect((await provider.observe(pool)).drift).toEqual([
        `${intruder} has privileges on schema ${pool.physicalName} that Tenantry did not grant`,
      ]);
      expect((await provider.observe(silo)).drift).toEqual([
        `${intruder} has privileges on database ${silo.physicalName} that Tenantry did not grant`,
      ]);
      expect((await provider.ensure(pool)).drift).toEqual([]);
      expect((await provider.ensure(silo)).drift).toEqual([]);
      expect(await refused(asIntruder(silo.physicalName))).toMatch(/permission denied/);
      const after = await asIntruder(dataplane);
      try {
        expect(await refused(after.query(`create table ${pool.physicalName}.again (id int)`))).toMatch(
          /permission denied/,
        );
        expect(await refused(after.query(`select * from ${pool.physicalName}.planted`))).toMatch(
          /permission denied/,
        );
      } finally {
        await after.end();
      }
    } finally {
      await owner.query(`drop table if exists ${pool.physicalName}.planted`);
      await provider.delete(pool);
      await provider.delete(silo);
      await owner.query(`drop owned by ${intruder}`).catch(() => undefined);
      await owner.query(`drop role if exists ${intruder}`);
      await owner.end();
    }
  });

  it('a tenant’s role connects to its own database only: not the control plane’s, not another silo', async () => {
    const a = desired('pool', 'g');
    const silo = desired('silo', 'g');
    await provider.ensure(a);
    await provider.ensure(silo);
    const owner = new pg.Client({ connectionString: t.ownerUrl });
    await owner.connect();
    try {
      // Tenantry's own database takes CONNECT from PUBLIC (src/db/database.ts restrictConnect).
      expect(await refused(connectAs(a, t.name))).toMatch(/permission denied/);
      expect(await refused(connectAs(a, silo.physicalName))).toMatch(/permission denied/);
      // Nor the server's maintenance databases, open to PUBLIC as PostgreSQL ships them.
      expect(await refused(connectAs(a, 'postgres'))).toMatch(/permission denied/);
      expect(await refused(connectAs(a, 'template1'))).toMatch(/permission denied/);
      // A CONNECT given behind Tenantry's back is drift, and the reconcile takes it back.
      await owner.query(`grant connect on database ${t.name} to ${a.physicalName}`);
      await (await connectAs(a, t.name)).end();
      expect((await provider.observe(a)).drift).toEqual([
        `role ${a.physicalName} may connect to other databases: ${t.name}`,
      ]);
      expect((await provider.ensure(a)).drift).toEqual([]);
      expect(await refused(connectAs(a, t.name))).toMatch(/permission denied/);
    } finally {
      await owner.end();
      await provider.delete(a);
      await provider.delete(silo);
    }
  });

  it('shared: rows in shared tables, each role sees only its own tenant’s rows', async () => {
    const a = desired('shared', 'a');
    const b = desired('shared', 'b');
    await provider.ensure(a);
    await provider.ensure(b);
    expect(await provider.observe(a)).toMatchObject({ exists: true, drift: [] });
    const ca = await connectAs(a);
    const cb = await connectAs(b);
    try {
      await ca.query(`insert into records (key, value) values ('k', '{"owner":"a"}')`);
      await cb.query(`insert into records (key, value) values ('k', '{"owner":"b"}')`);
      expect((await ca.query('select value from records')).rows).toEqual([{ value: { owner: 'a' } }]);
      expect((await cb.query('select value from records')).rows).toEqual([{ value: { owner: 'b' } }]);
      // Writing a row for another tenant is refused by the policy.
      expect(
        await refused(ca.query(`insert into records (tenant_id, key) values ($1, 'x')`, [b.tenantId])),
      ).toMatch(/row-level security/);
      expect(await refused(ca.query('select * from bindings'))).toMatch(/permission denied/);
    } finally {
      await ca.end();
      await cb.end();
    }
    await provider.delete(a);
    await provider.delete(b);
  });

  it('a name PostgreSQL would truncate is refused, not silently shortened', async () => {
    const d = desired('pool', 'a');
    d.physicalName = `t_${'x'.repeat(70)}`;
    await expect(provider.ensure(d)).rejects.toMatchObject({ reason: 'InvalidName', retryable: false });
  });
});
