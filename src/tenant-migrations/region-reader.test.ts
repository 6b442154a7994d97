import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropDataplane } from '../../test/helpers/controller.js';
import { desiredDatabase } from '../../test/helpers/desired-database.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { secretCipherFor } from '../secrets/index.js';
import { withClient } from './pg-copy.js';
import { localOpener, openSealed, RegionDataPlane, type SideDatabase, sealToOf } from './region-dataplane.js';

/**
 * The reader a region migration opens on a tenant's schema for the other region (openReader), on
 * a real PostgreSQL: it reads the schema's tables and sequences and writes nothing there (no
 * INSERT, UPDATE, DELETE, TRUNCATE, CREATE, DROP, nor the owner's role), and the database
 * provider's drift repair of the live tenant leaves its way in alone, while any other privilege
 * granted to it is still drift that the repair takes back.
 */
let t: TestDatabase;
let provider: PostgresDatabaseProvider;
let secrets: SecretStore;
let dataplaneUrl: string;
let dp: RegionDataPlane;
// Roles and databases belong to the whole server: names unique to this run.
const run = randomBytes(3).toString('hex');
const readerName = (n: number) => `tenantry_r_${randomBytes(6).toString('hex')}_${n}`;

beforeAll(async () => {
  t = await createTestDatabase();
  secrets = new SecretStore(t.db, secretCipherFor(t.db, t.config));
  dataplaneUrl = defaultDataplaneUrl(t.ownerUrl);
  provider = new PostgresDatabaseProvider(dataplaneUrl, secrets);
  const none = { missing: 'not in this test' };
  dp = new RegionDataPlane({
    dataplaneUrl: () => dataplaneUrl,
    providers: { database: { provider }, 'blob-container': none, 'kafka-topic': none, regions: {} },
    region: 'eu',
  });
});
afterAll(async () => {
  await provider?.close();
  await dropDataplane(t);
  await t?.destroy();
});

/** A URL of the data-plane server for `database`, as `user` (the admin's when absent). */
function urlFor(database: string, user?: { name: string; password: string }): string {
  const u = new URL(dataplaneUrl);
  u.pathname = `/${database}`;
  if (user) {
    u.username = user.name;
    u.password = user.password;
  }
  return u.toString();
}

/** The SQLSTATE a statement fails with (undefined: it worked). */
const failure = (c: pg.Client, text: string) =>
  c.query(text).then(
    () => undefined,
    (err: { code?: string }) => err.code,
  );

/** What the reader at `connection` may do in `side`'s schema, whose table `orders` holds rows. */
async function readerCan(connection: string, side: SideDatabase, owner: string) {
  const c = new pg.Client({ connectionString: connection });
  await c.connect();
  const q = (name: string) => `${pg.escapeIdentifier(side.schema)}.${pg.escapeIdentifier(name)}`;
  try {
    const rows = await c.query<{ n: number }>(`select count(*)::int as n from ${q('orders')}`);
    const seq = await c.query<{ last: string | null }>(
      'select last_value::text as last from pg_sequences where schemaname = $1',
      [side.schema],
    );
    // What a pull and a subscription's first copy do as the reader.
    let copied = '';
    for await (const chunk of c.query(copyTo(`copy ${q('orders')} to stdout`))) copied += String(chunk);
    return {
      rows: rows.rows[0]!.n,
      copied: copied.trim().split('\n').length,
      sequences: seq.rows.map((r) => r.last),
      refused: {
        insert: await failure(c, `insert into ${q('orders')} (n) values (-1)`),
        update: await failure(c, `update ${q('orders')} set n = -n`),
        delete: await failure(c, `delete from ${q('orders')}`),
        truncate: await failure(c, `truncate ${q('orders')}`),
        create: await failure(c, `create table ${q('planted')} (id int)`),
        alter: await failure(c, `alter table ${q('orders')} add column planted int`),
        drop: await failure(c, `drop table ${q('orders')}`),
        setval: await failure(c, `select setval(${pg.escapeLiteral(q('orders_id_seq'))}, 1000)`),
        owner: await failure(c, `set role ${pg.escapeIdentifier(owner)}`),
      },
    };
  } finally {
    await c.end();
  }
}

const NOTHING_WRITES = {
  insert: '42501',
  update: '42501',
  delete: '42501',
  truncate: '42501',
  create: '42501',
  alter: '42501',
  drop: '42501',
  setval: '42501',
  owner: '42501',
};

describe.each(['pool', 'silo'] as const)('a region migration reader of a %s tenant', (isolation) => {
  it('reads the schema, writes nothing there, and survives the drift repair of the live tenant', async () => {
    const d = desiredDatabase(isolation, `rr${run}-${isolation}-eu-dev`);
    expect(await provider.ensure(d)).toMatchObject({ exists: true, drift: [] });
    const home = decodeURIComponent(new URL(dataplaneUrl).pathname.slice(1));
    const side: SideDatabase =
      isolation === 'pool'
        ? { database: home, schema: d.physicalName }
        : { database: d.physicalName, schema: 'public' };
    const secret = (await secrets.get(d.id))!;
    // The tenant's data, written by the tenant's own role.
    await withClient(urlFor(side.database, { name: d.physicalName, password: secret.password! }), (c) =>
      c.query(`create table ${pg.escapeIdentifier(side.schema)}.orders (id bigserial primary key, n int);
        insert into ${pg.escapeIdentifier(side.schema)}.orders (n) select g from generate_series(1, 50) g`),
    );
    const name = readerName(0);
    try {
      // As an earlier version left it: a member of the schema's owner (which writes). Opened again,
      // it is not any more.
      await withClient(urlFor(home), async (c) => {
        await c.query(`create role ${name} login`);
        await c.query(`grant ${pg.escapeIdentifier(d.physicalName)} to ${name}`);
      });
      const opener = await localOpener();
      const sealed = await dp.openReader({ ...side, name, publish: false, sealTo: sealToOf(opener) });
      // Ciphertext for this process's key only: the connection string is not in it.
      expect(sealed.connection).toMatch(/^sealed:ey/);
      expect(sealed.connection).not.toContain(name);
      const connection = await openSealed(opener, sealed.connection, name);
      // Sealed for another reader (or cell), it does not open: retryable, a new one is asked for.
      await expect(openSealed(opener, sealed.connection, `${name}_b`)).rejects.toMatchObject({
        reason: 'SealedForAnotherKey',
        retryable: true,
      });
      expect(new URL(connection).username).toBe(name);
      expect(await readerCan(connection, side, d.physicalName)).toEqual({
        rows: 50,
        copied: 50,
        sequences: ['50'],
        refused: NOTHING_WRITES,
      });

      // The live tenant reconciled: its USAGE (pool) and CONNECT (silo) are not drift, and stay.
      expect((await provider.observe(d)).drift).toEqual([]);
      expect(await provider.ensure(d)).toMatchObject({ exists: true, drift: [] });
      expect(await readerCan(connection, side, d.physicalName)).toMatchObject({
        rows: 50,
        refused: NOTHING_WRITES,
      });

      // Anything more granted to a reader is drift all the same, and the repair takes it back.
      const more =
        isolation === 'pool'
          ? `grant usage, create on schema ${pg.escapeIdentifier(side.schema)} to ${name}`
          : `grant connect, create on database ${pg.escapeIdentifier(side.database)} to ${name}`;
      await withClient(urlFor(home), (c) => c.query(more));
      const what = isolation === 'pool' ? `schema ${side.schema}` : `database ${side.database}`;
      expect((await provider.observe(d)).drift).toEqual([
        `${name} has privileges on ${what} that Tenantry did not grant`,
      ]);
      expect(await provider.ensure(d)).toMatchObject({ exists: true, drift: [] });
      const left = await withClient(urlFor(home), (c) =>
        c.query<{ ok: boolean }>(
          isolation === 'pool'
            ? `select has_schema_privilege($1, $2, 'CREATE') as ok`
            : `select has_database_privilege($1, $2, 'CREATE') as ok`,
          [name, isolation === 'pool' ? side.schema : side.database],
        ),
      );
      expect(left.rows[0]!.ok).toBe(false);

      // Closed: the role is gone.
      await dp.closeReader({ ...side, name, tables: ['orders'] });
      const role = await withClient(urlFor(home), (c) =>
        c.query('select 1 from pg_roles where rolname = $1', [name]),
      );
      expect(role.rowCount).toBe(0);
    } finally {
      await provider.delete(d);
      await withClient(urlFor(home), async (c) => {
        if ((await c.query('select 1 from pg_roles where rolname = $1', [name])).rowCount) {
          await c.query(`drop owned by ${name}`);
          await c.query(`drop role ${name}`);
        }
      });
    }
  });
});

it('refuses to open a reader whose name the drift repair would not know', async () => {
  await expect(
    dp.openReader({
      database: 'postgres',
      schema: 'public',
      name: `reader_${run}`,
      publish: false,
      sealTo: sealToOf(await localOpener()),
    }),
  ).rejects.toMatchObject({ reason: 'InvalidName', retryable: false });
});
