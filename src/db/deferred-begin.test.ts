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
      const q = args[0] as string | { text?: string };
      const text = typeof q === 'string' ? q : q.text;
      if (text !== undefined) sent.push(text);
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

/** Whether the (one) connection is still in a transaction: asked as a simple query, not prepared. */
const inTransaction = async () =>
  (
    await pool.query<{ n: boolean }>(
      'select pg_current_xact_id_if_assigned() is not null or now() <> statement_timestamp() as n',
    )
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

  it('prepares a statement once per connection: the same text is then only bound and run', async () => {
    const text = 'select $1::int + 1 as y';
    const prepared = async () =>
      (
        await sql<{ n: number }>`select count(*)::int as n from pg_prepared_statements
          where statement = ${text}`.execute(db)
      ).rows[0]?.n;
    for (const v of [1, 2, 3]) {
      const r = await db
        .transaction()
        .execute((trx) => sql<{ y: number }>`select ${v}::int + 1 as y`.execute(trx));
      expect(r.rows[0]?.y).toBe(v + 1);
    }
    // One connection (max 1): one prepared statement for three runs; begin and commit are not prepared.
    expect(await prepared()).toBe(1);
    const r = await sql<{ n: number }>`select count(*)::int as n from pg_prepared_statements
      where statement ~* '^(begin|commit|rollback)'`.execute(db);
    expect(r.rows[0]?.n).toBe(0);
  });

  it('an empty transaction sends nothing', async () => {
    sent.length = 0;
    await db.transaction().execute(async () => undefined);
    expect(sent).toEqual([]);
  });
});
