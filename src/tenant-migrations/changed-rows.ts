import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { columnNames, copyTables, rowAlias, syncSequences } from './pg-copy.js';
import { statementTriggers, type Tracked } from './tracked-checksums.js';

const { escapeIdentifier: id, escapeLiteral: lit } = pg;

/**
 * Copying a live schema into another database with only the rows changed since inside the write
 * freeze (the rollback of a pool → silo migration, issue 19: the silo's `public` back into the
 * kept pool schema, whose name differs, so logical replication, which maps tables by qualified
 * name, cannot carry it).
 *
 * Before the freeze: statement-level AFTER triggers with transition tables on the live tables
 * journal every row a statement wrote or removed (`tenantry_verify.<name>_keys`, in the writer's
 * own transaction; TRUNCATE writes a marker), then every table is copied whole (COPY, one
 * transaction on the receiving side). A row changed after its table's copy read it is in the
 * journal, since the triggers were in place before the copy began (CREATE TRIGGER waits for the
 * writers' open transactions). Inside the freeze only the journalled rows move: the receiving
 * side's rows with those keys are deleted and the live side's current rows with those keys copied
 * in, in one transaction; a table truncated since, or without a primary key, is copied whole again.
 * Repeating it is harmless (the same keys get the same rows). The checksums (tracked-checksums.ts)
 * then prove both sides equal, independently of this.
 */

/** Per table, its primary key's columns; a table without one is absent. */
export async function primaryKeys(
  c: pg.ClientBase,
  schema: string,
  tables: string[],
): Promise<Record<string, string[]>> {
  const r = await c.query<{ tbl: string; cols: string[] }>(
    `select t.relname as tbl, array_agg(a.attname::text order by k.ord) as cols
     from pg_index i join pg_class t on t.oid = i.indrelid join pg_namespace n on n.oid = t.relnamespace
     cross join lateral unnest(i.indkey) with ordinality k(attnum, ord)
     join pg_attribute a on a.attrelid = t.oid and a.attnum = k.attnum
     where n.nspname = $1 and i.indisprimary and t.relname = any($2)
     group by t.relname`,
    [schema, tables],
  );
  return Object.fromEntries(r.rows.map((x) => [x.tbl, x.cols]));
}

const journal = (name: string) => `tenantry_verify.${id(`${name}_keys`)}`;
const fn = (name: string) => `tenantry_verify.${id(`${name}_keys`)}`;
const trig = (name: string, op: string) => id(`${name}_k${op}`);

/** The triggers that journal changed rows, on the live side's tables (safe to run twice). */
export async function trackRows(c: pg.ClientBase, t: Tracked): Promise<void> {
  await c.query('create schema if not exists tenantry_verify');
  await c.query(`create table if not exists ${journal(t.name)} (tbl text not null, row jsonb)`);
  const j = journal(t.name);
  // The transition tables are read under an alias that no column is named (see rowAlias).
  const x = id(rowAlias(await columnNames(c, t.schema)));
  await c.query(`create or replace function ${fn(t.name)}() returns trigger language plpgsql
    security definer set search_path = pg_catalog, pg_temp as $f$
    begin
      if tg_op in ('INSERT', 'UPDATE') then
        insert into ${j} (tbl, row) select tg_table_name, to_jsonb(${x}) from n ${x};
      end if;
      if tg_op in ('DELETE', 'UPDATE') then
        insert into ${j} (tbl, row) select tg_table_name, to_jsonb(${x}) from o ${x};
      end if;
      if tg_op = 'TRUNCATE' then
        insert into ${j} (tbl, row) values (tg_table_name, null);
      end if;
      return null;
    end $f$`);
  await statementTriggers(c, t, (op) => trig(t.name, op), fn(t.name));
}

/** Removes the row journal's triggers, function and table (absent parts are skipped). */
export async function untrackRows(c: pg.ClientBase, t: Tracked): Promise<void> {
  for (const table of t.tables) {
    const exists = await c.query('select 1 from pg_tables where schemaname = $1 and tablename = $2', [
      t.schema,
      table,
    ]);
    if ((exists.rowCount ?? 0) === 0) continue;
    for (const op of ['i', 'd', 'u', 't'])
      await c.query(`drop trigger if exists ${trig(t.name, op)} on ${id(t.schema)}.${id(table)}`);
  }
  await c.query(`drop function if exists ${fn(t.name)}()`);
  await c.query(`drop table if exists ${journal(t.name)}`);
}

/** The columns COPY writes (generated ones are computed, not copied), in table order. */
async function copyColumns(c: pg.ClientBase, schema: string, table: string): Promise<string[]> {
  const r = await c.query<{ name: string }>(
    `select a.attname as name from pg_attribute a
     where a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass
       and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
     order by a.attnum`,
    [schema, table],
  );
  return r.rows.map((x) => x.name);
}

export interface ChangedRows {
  /** Distinct keys journalled and moved, over every table. */
  changedRows: number;
  /** Tables copied whole again: truncated since, or without a primary key. */
  recopied: string[];
}

/**
 * Inside the freeze: the journalled rows of `live` (its tables as they are now, one snapshot) into
 * `into`, in one transaction there (foreign keys and ordinary triggers off while loading, as
 * copyTables does; triggers enabled ALWAYS still fire), then the sequences.
 */
export async function copyChangedRows(
  live: pg.ClientBase,
  into: pg.ClientBase,
  o: {
    name: string;
    liveSchema: string;
    intoSchema: string;
    tables: string[];
    keys: Record<string, string[]>;
  },
): Promise<ChangedRows> {
  const j = journal(o.name);
  await live.query('begin isolation level repeatable read read only');
  await into.query('begin');
  try {
    await into.query('set local session_replication_role = replica');
    const marks = await live.query<{ tbl: string; truncated: boolean }>(
      `select tbl, bool_or(row is null) as truncated from ${j} group by tbl`,
    );
    const touched = new Map(marks.rows.map((m) => [m.tbl, m.truncated]));
    const recopied = o.tables.filter((t) => !o.keys[t] || touched.get(t) === true);
    let changedRows = 0;
    for (const table of o.tables) {
      const key = o.keys[table];
      if (!key || !touched.has(table) || recopied.includes(table)) continue;
      const liveRel = `${id(o.liveSchema)}.${id(table)}`;
      const intoRel = `${id(o.intoSchema)}.${id(table)}`;
      const keys = `(select distinct jsonb_build_object(${key.map((k) => `${lit(k)}, row->${lit(k)}`).join(', ')}) as key
                     from ${j} where tbl = ${lit(table)} and row is not null) c`;
      const match = (a: string, b: string) => key.map((k) => `${a}.${id(k)} = ${b}.${id(k)}`).join(' and ');
      // The keys, to the receiving side: its rows with them go.
      await into.query('create temp table tenantry_changed (key jsonb) on commit drop');
      await pipeline(
        live.query(copyTo(`copy (select key from ${keys}) to stdout`)),
        into.query(copyFrom('copy tenantry_changed (key) from stdin')),
      );
      await into.query('analyze tenantry_changed');
      await into.query(
        `delete from ${intoRel} x using tenantry_changed c, lateral jsonb_populate_record(null::${intoRel}, c.key) k
         where ${match('x', 'k')}`,
      );
      const n = await into.query<{ n: number }>('select count(*)::int as n from tenantry_changed');
      changedRows += n.rows[0]!.n;
      await into.query('drop table tenantry_changed');
      // The live side's rows with those keys now (those deleted since are simply not there).
      const cols = await copyColumns(live, o.liveSchema, table);
      await pipeline(
        live.query(
          copyTo(
            `copy (select ${cols.map((c) => `x.${id(c)}`).join(', ')}
                   from ${keys} cross join lateral jsonb_populate_record(null::${liveRel}, c.key) k
                   join ${liveRel} x on ${match('x', 'k')}) to stdout`,
          ),
        ),
        into.query(copyFrom(`copy ${intoRel} (${cols.map(id).join(', ')}) from stdin`)),
      );
    }
    await into.query('commit');
    await live.query('commit');
    if (recopied.length > 0)
      await copyTables(live, into, { fromSchema: o.liveSchema, toSchema: o.intoSchema, tables: recopied });
    await syncSequences(live, into, o.liveSchema, o.intoSchema);
    return { changedRows, recopied };
  } catch (err) {
    await into.query('rollback').catch(() => undefined);
    await live.query('rollback').catch(() => undefined);
    throw err;
  }
}
