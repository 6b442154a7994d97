import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  checksums,
  createSchema,
  databaseUrl,
  schemaDdl,
  startReplication,
  stopReplication,
  tablesSyncing,
  withClient,
} from './pg-copy.js';
import { checksumBulk, type TrackedPair, untrackPair, verifyFrozen } from './tracked-checksums.js';

/**
 * The freeze's checksums from baselines and journals (tracked-checksums.ts), on real logical
 * replication between two databases: equal to hashing every row when nothing is lost, and
 * unequal when the stream or the bulk copy lost a row.
 */
const serverUrl = inject('serverUrl');
const suffix = randomBytes(4).toString('hex');
const srcDb = `tc_src_${suffix}`;
const dstDb = `tc_dst_${suffix}`;
const schema = 't_tracked';
const name = `tenantry_m_tc${suffix}`;
const tables = ['accounts', 'notes', 'wiped'];
const pair: TrackedPair = {
  sourceUrl: databaseUrl(serverUrl, srcDb),
  targetUrl: databaseUrl(serverUrl, dstDb),
  tracked: { name, schema, tables },
};
const src = () => withClient(pair.sourceUrl, (c) => checksums(c, schema, tables));
const dst = () => withClient(pair.targetUrl, (c) => checksums(c, schema, tables));

async function until(what: string, check: () => Promise<boolean>, ms = 30_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  await withClient(serverUrl, async (c) => {
    await c.query(`create database ${srcDb}`);
    await c.query(`create database ${dstDb}`);
  });
  await withClient(pair.sourceUrl, (c) =>
    c.query(`
      create schema ${schema};
      create table ${schema}.accounts (id bigserial primary key, name text not null, balance numeric,
                                       n int default 0, x int default 0, r int default 0);
      create table ${schema}.notes (k text primary key, v jsonb not null, at timestamptz default now());
      create table ${schema}.wiped (id int primary key);
      insert into ${schema}.accounts (name, balance) select 'a' || g, g * 1.5 from generate_series(1, 20000) g;
      insert into ${schema}.notes (k, v) select 'n' || g, jsonb_build_object('g', g) from generate_series(1, 5000) g;
      insert into ${schema}.wiped select generate_series(1, 100);`),
  );
  const ddl = await withClient(pair.sourceUrl, (c) => schemaDdl(c, schema));
  await withClient(pair.targetUrl, (c) =>
    createSchema(c, schema, decodeURIComponent(new URL(serverUrl).username), ddl),
  );
  await withClient(pair.sourceUrl, (s) =>
    withClient(pair.targetUrl, (t) => startReplication(s, t, { name, schema, sourceUrl: pair.sourceUrl })),
  );
  await until('the initial copy', () =>
    withClient(pair.targetUrl, async (t) => (await tablesSyncing(t, name, tables.length)) === 0),
  );
}, 60_000);

afterAll(async () => {
  await withClient(pair.sourceUrl, (s) => withClient(pair.targetUrl, (t) => stopReplication(s, t, name)));
  await withClient(serverUrl, async (c) => {
    await c.query(`drop database if exists ${srcDb} with (force)`);
    await c.query(`drop database if exists ${dstDb} with (force)`);
  });
});

describe('checksums from a baseline and the changes journalled since', () => {
  it('equal every row hashed on both sides after inserts, updates, deletes and a truncate streamed meanwhile', async () => {
    const bases = await checksumBulk(pair);
    expect(bases.source.map((b) => b.table)).toEqual(tables);
    // The tenant writes on while the bulk is hashed and after: single rows, many rows, no rows.
    await withClient(pair.sourceUrl, async (c) => {
      // A session of its own settings: its rows' text (timestamptz, dates) is printed differently.
      await c.query(`set timezone = 'Pacific/Chatham'; set datestyle = 'SQL, DMY'`);
      await c.query(`insert into ${schema}.notes (k, v) values ('stamped', '{}')`);
      for (let i = 0; i < 50; i++)
        await c.query(`insert into ${schema}.accounts (name, balance) values ($1, $2)`, [`w${i}`, i]);
      await c.query(`update ${schema}.accounts set balance = balance + 1 where id % 7 = 0`);
      await c.query(`update ${schema}.accounts set name = name where id < 10`);
      await c.query(`delete from ${schema}.accounts where id % 11 = 0`);
      await c.query(`delete from ${schema}.accounts where id < 0`);
      await c.query('begin');
      await c.query(`update ${schema}.notes set v = v || '{"x":1}' where k like 'n1%'`);
      await c.query(`insert into ${schema}.notes (k, v) values ('rolled back', '{}')`);
      await c.query('rollback');
      await c.query(
        `insert into ${schema}.notes (k, v) values ('n1', '{"dup":true}') on conflict (k) do update set v = excluded.v`,
      );
      await c.query(`truncate ${schema}.wiped`);
      await c.query(`insert into ${schema}.wiped select generate_series(1, 7)`);
    });
    const v = await verifyFrozen(pair, bases, 30_000);
    expect(v.equal).toBe(true);
    expect(v.rehashed).toEqual(['wiped']);
    // What the journals say is what hashing every row says, on both sides.
    const [s, t] = [await src(), await dst()];
    expect(v.tables.map((x) => [x.table, x.sourceRows, x.sourceChecksum])).toEqual(
      s.map((x) => [x.table, x.rows, x.checksum]),
    );
    expect(v.tables.map((x) => [x.table, x.targetRows, x.targetChecksum])).toEqual(
      t.map((x) => [x.table, x.rows, x.checksum]),
    );
    expect(v.tables.find((x) => x.table === 'accounts')!.sourceRows).toBe(20050 - Math.floor(20050 / 11));
    // The checksum covers whole rows, even with columns named like the aliases (n, x, r).
    const before = (await src()).find((x) => x.table === 'accounts')!.checksum;
    await withClient(pair.sourceUrl, (c) =>
      c.query(`update ${schema}.accounts set name = 'renamed' where id = 1`),
    );
    expect((await src()).find((x) => x.table === 'accounts')!.checksum).not.toBe(before);
  }, 60_000);

  it('equal with a writer writing while the bulk is hashed', async () => {
    let stop = false;
    let written = 0;
    const writing = withClient(pair.sourceUrl, async (c) => {
      while (!stop) {
        await c.query(`insert into ${schema}.notes (k, v) values ($1, '{}')`, [`c${written++}`]);
      }
    });
    await new Promise((r) => setTimeout(r, 200));
    const bases = await checksumBulk(pair);
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await writing;
    const v = await verifyFrozen(pair, bases, 10_000);
    expect(written).toBeGreaterThan(10);
    expect(v.equal).toBe(true);
  }, 60_000);

  it('differs when the stream loses a change', async () => {
    const bases = await checksumBulk(pair);
    await withClient(pair.targetUrl, (t) => t.query(`alter subscription ${name} disable`));
    try {
      await withClient(pair.sourceUrl, (c) => c.query(`delete from ${schema}.notes where k = 'n42'`));
      const v = await verifyFrozen(pair, bases, 500);
      expect(v.equal).toBe(false);
      const notes = v.tables.find((x) => x.table === 'notes')!;
      expect(notes.sourceRows).toBe(notes.targetRows - 1);
    } finally {
      await withClient(pair.targetUrl, (t) => t.query(`alter subscription ${name} enable`));
    }
    await until('the stream caught up', async () => (await verifyFrozen(pair, bases, 0)).equal);
  }, 60_000);

  it('differs when the bulk copy lost a row, and leaves nothing behind when removed', async () => {
    await untrackPair(pair);
    // A row the copy lost: gone from the target only, before tracking starts.
    await withClient(pair.targetUrl, (t) => t.query(`delete from ${schema}.accounts where id = 5`));
    const bases = await checksumBulk(pair);
    const v = await verifyFrozen(pair, bases, 300);
    expect(v.equal).toBe(false);
    expect(v.tables.filter((x) => x.sourceChecksum !== x.targetChecksum).map((x) => x.table)).toEqual([
      'accounts',
    ]);
    await untrackPair(pair);
    for (const url of [pair.sourceUrl, pair.targetUrl]) {
      const left = await withClient(url, (c) =>
        c.query(
          `select (select count(*) from pg_trigger where tgname like $1)::int as triggers,
                  (select count(*) from pg_namespace where nspname = 'tenantry_verify')::int as schemas`,
          [`${name}%`],
        ),
      );
      expect(left.rows[0]).toEqual({ triggers: 0, schemas: 0 });
    }
  }, 60_000);
});
