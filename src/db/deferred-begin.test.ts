import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { deferBegin } from './deferred-begin.js';

/** `begin` travels with a transaction's first statement: fewer round trips, the same transactions. */
let t: TestDatabase;
let pool: pg.Pool;
let db: Kysely<unknown>;
/** What reached the server, one entry per round trip. */
const sent: string[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  pool = new pg.Pool({ connectionString: t.ownerUrl, max: 1 });
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...a: unknown[]) => unknown;
    (client as unknown as { query: unknown }).query = (...args: unknown[]) => {
      if (typeof args[0] === 'string') sent.push(args[0]);
      return query(...args);
    };
  });
  db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: deferBegin(pool) }) });
  await sql`create table deferred_begin_probe (n int)`.execute(db);
});
afterAll(async () => {
  await db?.destroy();
  await t?.destroy();
});

const inTransaction = async () =>
  (
    await sql<{
      n: boolean;
    }>`select pg_current_xact_id_if_assigned() is not null or now() <> statement_timestamp() as n`.execute(db)
  ).rows[0]?.n;

describe('deferred begin', () => {
  it('sends begin with a first statement without parameters, and both run in one transaction', async () => {
    sent.length = 0;
    const r = await db.transaction().execute(async (trx) => {
      const a = await sql<{ x: number }>`select 1 as x`.execute(trx);
      await sql`insert into deferred_begin_probe values (${1})`.execute(trx);
      const b = await sql<{ same: boolean }>`select now() = statement_timestamp() as same`.execute(trx);
      return { x: a.rows[0]?.x, same: b.rows[0]?.same };
    });
    // `select 1` answered as itself; later statements see the transaction's start time, not theirs.
    expect(r).toEqual({ x: 1, same: false });
    expect(sent).toEqual([
      'begin;\nselect 1 as x',
      'insert into deferred_begin_probe values ($1)',
      'select now() = statement_timestamp() as same',
      'commit',
    ]);
    expect(await inTransaction()).toBe(false);
  });

  it('sends begin on its own before a first statement with parameters', async () => {
    sent.length = 0;
    await db.transaction().execute(async (trx) => {
      await sql`insert into deferred_begin_probe values (${2})`.execute(trx);
    });
    expect(sent).toEqual(['begin', 'insert into deferred_begin_probe values ($1)', 'commit']);
  });

  it('a failing first statement leaves nothing behind: the transaction is rolled back, the connection reusable', async () => {
    await expect(
      db.transaction().execute(async (trx) => {
        await sql`select 1/0`.execute(trx);
      }),
    ).rejects.toThrow(/division by zero/);
    await expect(
      db.transaction().execute(async (trx) => {
        await sql`insert into deferred_begin_probe values (99)`.execute(trx);
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    const r = await sql<{
      n: number;
    }>`select count(*)::int as n from deferred_begin_probe where n = 99`.execute(db);
    expect(r.rows[0]?.n).toBe(0);
    expect(await inTransaction()).toBe(false);
  });

  it('an empty transaction sends nothing', async () => {
    sent.length = 0;
    await db.transaction().execute(async () => undefined);
    expect(sent).toEqual([]);
  });
});
