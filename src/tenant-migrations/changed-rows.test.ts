import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { copyChangedRows, primaryKeys, trackRows, untrackRows } from './changed-rows.js';
import { checksums, copyTables, createSchema, databaseUrl, schemaDdl, withClient } from './pg-copy.js';
import { checksumBulk, type TrackedPair, untrackPair, verifyFrozen } from './tracked-checksums.js';

/**
 * The copy back of a rollback (changed-rows.ts) on two real databases whose schemas are named
 * differently (the silo's `public`, the pool's `t_…`): the tables copied whole while a writer
 * writes, then only the journalled rows moved, proven equal by the checksums from baselines and
 * journals; and a change lost on the way, or a row altered behind the journal, is caught.
 */
const serverUrl = inject('serverUrl');
const suffix = randomBytes(4).toString('hex');
const liveDb = `cr_live_${suffix}`;
const intoDb = `cr_into_${suffix}`;
const liveSchema = 'public';
const intoSchema = 't_back';
const tables = ['accounts', 'lines', 'nokey'];
const pair = (name: string): TrackedPair => ({
  sourceUrl: databaseUrl(serverUrl, liveDb),
  targetUrl: databaseUrl(serverUrl, intoDb),
  tracked: { name, schema: liveSchema, tables },
  targetSchema: intoSchema,
});
const live = (sql: string) => withClient(databaseUrl(serverUrl, liveDb), (c) => c.query(sql));
const hashes = async () => ({
  live: await withClient(databaseUrl(serverUrl, liveDb), (c) => checksums(c, liveSchema, tables)),
  into: await withClient(databaseUrl(serverUrl, intoDb), (c) => checksums(c, intoSchema, tables)),
});

beforeAll(async () => {
  await withClient(serverUrl, async (c) => {
    await c.query(`create database ${liveDb}`);
    await c.query(`create database ${intoDb}`);
  });
  await live(`
    create table accounts (id bigserial primary key, name text not null, balance numeric, at timestamptz default now());
    create table lines (account bigint not null references accounts (id), n int not null,
                        total numeric generated always as (n * 2) stored, primary key (account, n));
    create table nokey (v text);
    alter table nokey replica identity full;
    insert into accounts (name, balance) select 'a' || g, g * 1.5 from generate_series(1, 20000) g;
    insert into lines (account, n) select 1 + (g % 20000), g from generate_series(1, 10000) g;
    insert into nokey select 'v' || g from generate_series(1, 300) g;`);
  const ddl = await withClient(databaseUrl(serverUrl, liveDb), (c) => schemaDdl(c, liveSchema));
  await withClient(databaseUrl(serverUrl, intoDb), (c) =>
    createSchema(
      c,
      intoSchema,
      decodeURIComponent(new URL(serverUrl).username),
      ddl.map((s) => s.replaceAll('"public".', `"${intoSchema}".`).replaceAll('public.', `${intoSchema}.`)),
    ),
  );
}, 60_000);

afterAll(async () => {
  await withClient(serverUrl, async (c) => {
    await c.query(`drop database if exists ${liveDb} with (force)`);
    await c.query(`drop database if exists ${intoDb} with (force)`);
  });
});

/** The bulk part, as the rollback's copy-back-bulk step runs it, while `during` writes. */
async function bulk(p: TrackedPair, during: () => Promise<unknown>) {
  const keys = await withClient(p.sourceUrl, async (c) => {
    await trackRows(c, p.tracked);
    return primaryKeys(c, liveSchema, tables);
  });
  const writes = during();
  await withClient(p.sourceUrl, (s) =>
    withClient(p.targetUrl, (t) =>
      copyTables(s, t, { fromSchema: liveSchema, toSchema: intoSchema, tables }),
    ),
  );
  await writes;
  return { keys, bases: await checksumBulk(p) };
}

async function cleanUp(p: TrackedPair) {
  await withClient(p.sourceUrl, (c) => untrackRows(c, p.tracked));
  await untrackPair(p);
}

describe('copying back only the rows changed since the bulk copy', () => {
  it('ends equal to hashing every row, with writes during the bulk copy and after it', async () => {
    const p = pair(`tenantry_cr_a${suffix}`);
    const { keys, bases } = await bulk(p, async () => {
      for (let i = 0; i < 20; i++) {
        await live(`insert into accounts (name) values ('during ${i}')`);
        await live(`update accounts set balance = balance + 1 where id % 997 = ${i}`);
        await live(`delete from lines where account = ${100 + i}`);
      }
    });
    expect(keys).toEqual({ accounts: ['id'], lines: ['account', 'n'] });
    // After the bulk copy, before the freeze: more changes of every kind, a key changed too.
    await live(`
      insert into accounts (name) select 'after ' || g from generate_series(1, 500) g;
      update accounts set name = name || '!' where id between 50 and 80;
      update accounts set id = -id where id = 15007;
      delete from accounts where id between 15200 and 15210;
      insert into lines (account, n) values (1, -1), (2, -2);
      update lines set n = n + 100000 where account = 3;
      insert into nokey values ('after');
      update nokey set v = v || '+' where v = 'v1';`);
    const moved = await withClient(p.sourceUrl, (s) =>
      withClient(p.targetUrl, (t) =>
        copyChangedRows(s, t, { name: p.tracked.name, liveSchema, intoSchema, tables, keys }),
      ),
    );
    expect(moved.recopied).toEqual(['nokey']);
    expect(moved.changedRows).toBeGreaterThan(500);
    expect(moved.changedRows).toBeLessThan(5000);
    const v = await verifyFrozen(p, bases, 0, moved.recopied);
    expect(v.equal, JSON.stringify(v.tables)).toBe(true);
    const h = await hashes();
    expect(h.into).toEqual(h.live);
    // Applying the same journal twice changes nothing.
    const again = await withClient(p.sourceUrl, (s) =>
      withClient(p.targetUrl, (t) =>
        copyChangedRows(s, t, { name: p.tracked.name, liveSchema, intoSchema, tables, keys }),
      ),
    );
    expect(again.changedRows).toBe(moved.changedRows);
    expect((await verifyFrozen(p, bases, 0, again.recopied)).equal).toBe(true);
    await cleanUp(p);
  });

  it('is caught unequal when a journalled change is lost, or a row of the receiving side goes meanwhile', async () => {
    const p = pair(`tenantry_cr_b${suffix}`);
    const { keys, bases } = await bulk(p, async () => undefined);
    await live(`update accounts set balance = 0 where id = 42; insert into accounts (name) values ('lost');`);
    // The journal loses the update of account 42 (as a trigger that missed it would).
    await live(
      `delete from tenantry_verify."${p.tracked.name}_keys" where tbl = 'accounts' and (row->>'id')::bigint = 42`,
    );
    const moved = await withClient(p.sourceUrl, (s) =>
      withClient(p.targetUrl, (t) =>
        copyChangedRows(s, t, { name: p.tracked.name, liveSchema, intoSchema, tables, keys }),
      ),
    );
    const v = await verifyFrozen(p, bases, 0, moved.recopied);
    expect(v.equal).toBe(false);
    expect(v.tables.filter((t) => t.sourceChecksum !== t.targetChecksum).map((t) => t.table)).toEqual([
      'accounts',
    ]);
    await cleanUp(p);

    // A fresh bulk: now a row of the receiving side is deleted by someone else meanwhile.
    const q = pair(`tenantry_cr_c${suffix}`);
    const second = await bulk(q, async () => undefined);
    await withClient(q.targetUrl, (c) => c.query(`delete from ${intoSchema}.accounts where id = 19999`));
    const moved2 = await withClient(q.sourceUrl, (s) =>
      withClient(q.targetUrl, (t) =>
        copyChangedRows(s, t, { name: q.tracked.name, liveSchema, intoSchema, tables, keys: second.keys }),
      ),
    );
    const v2 = await verifyFrozen(q, second.bases, 0, moved2.recopied);
    expect(v2.equal).toBe(false);
    const accounts = v2.tables.find((t) => t.table === 'accounts')!;
    expect(accounts.targetRows).toBe(accounts.sourceRows - 1);
    await cleanUp(q);
  });
});
