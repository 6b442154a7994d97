import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { guardClient } from '../db/connection-errors.js';
import { ProviderError } from '../providers/provider.js';

const { escapeIdentifier: id, escapeLiteral: lit } = pg;

/**
 * Moving one tenant schema between PostgreSQL databases (issue 19), as the data plane's superuser.
 * No `pg_dump` is needed (the embedded PostgreSQL ships none): the schema is rebuilt from the
 * catalog with PostgreSQL's own `pg_get_*def` functions, for what a tenant schema holds here —
 * tables, sequences, constraints and indexes. Anything else (views, functions, types, triggers,
 * partitioned tables) makes the schema ineligible, named in the refusal, rather than half copied.
 *
 * Data moves by logical replication (publication on the source schema, subscription in the target:
 * the write freeze lasts only for the cut-over) where the server's `wal_level` is `logical` and
 * every table has a replica identity; otherwise by COPY during the freeze (`freeze-copy`).
 */

/** A database on the data-plane server, as the superuser of the data-plane URL. */
export function databaseUrl(serverUrl: string, database: string): string {
  const u = new URL(serverUrl);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

export async function withClient<T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = guardClient(new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 }));
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * `work` in one transaction on the generated credentials a data plane keeps (`tenantry_resource_secrets`,
 * src/providers/postgres/secret-store.ts) in the database at `url`; nothing where it has no such table.
 */
export async function inSecretsTable(url: string, work: (c: pg.ClientBase) => Promise<void>): Promise<void> {
  await withClient(url, async (c) => {
    const table = await c.query(`select to_regclass('tenantry_resource_secrets') is not null as present`);
    if (!table.rows[0]?.present) return;
    await c.query('begin');
    await work(c);
    await c.query('commit');
  });
}

export interface SchemaInventory {
  tables: string[];
  /** Tables without a primary key or replica identity (logical replication cannot carry their updates). */
  withoutIdentity: string[];
  /** Objects the copy does not carry, e.g. `view t_x.v`. */
  unsupported: string[];
}

export async function inventory(c: pg.ClientBase, schema: string): Promise<SchemaInventory> {
  const r = await c.query<{ relname: string; relkind: string; identity: boolean }>(
    `select c.relname, c.relkind,
            (c.relreplident = 'f' or (c.relreplident = 'd' and exists (select from pg_index i where i.indrelid = c.oid and i.indisprimary))
             or (c.relreplident = 'i' and exists (select from pg_index i where i.indrelid = c.oid and i.indisreplident))) as identity
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = $1 and c.relkind in ('r', 'p', 'v', 'm', 'f') order by c.relname`,
    [schema],
  );
  const kinds: Record<string, string> = {
    p: 'partitioned table',
    v: 'view',
    m: 'materialized view',
    f: 'foreign table',
  };
  const other = await c.query<{ what: string }>(
    `select 'function ' || p.proname as what from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = $1
     union all select 'type ' || t.typname from pg_type t join pg_namespace n on n.oid = t.typnamespace
       where n.nspname = $1 and t.typtype in ('e', 'c', 'd', 'r', 'm') and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')
     union all select 'trigger ' || tg.tgname from pg_trigger tg join pg_class c on c.oid = tg.tgrelid
       join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and not tg.tgisinternal
     order by 1`,
    [schema],
  );
  const tables = r.rows.filter((x) => x.relkind === 'r');
  return {
    tables: tables.map((x) => x.relname),
    withoutIdentity: tables.filter((x) => !x.identity).map((x) => x.relname),
    unsupported: [
      ...r.rows.filter((x) => x.relkind !== 'r').map((x) => `${kinds[x.relkind]} ${schema}.${x.relname}`),
      ...other.rows.map((x) => `${x.what.split(' ')[0]} ${schema}.${x.what.split(' ').slice(1).join(' ')}`),
    ],
  };
}

/**
 * The DDL that rebuilds `schema`'s sequences, tables, constraints and indexes, in order, with every
 * name qualified by `schema` (the definitions are read with an empty search_path).
 */
export async function schemaDdl(c: pg.ClientBase, schema: string): Promise<string[]> {
  await c.query(`set search_path = ''`);
  try {
    const out: string[] = [];
    const seqs = await c.query<{
      name: string;
      type: string;
      start: string;
      inc: string;
      min: string;
      max: string;
      cache: string;
      cycle: boolean;
    }>(
      `select s.relname as name, format_type(q.seqtypid, null) as type, q.seqstart::text as start, q.seqincrement::text as inc,
              q.seqmin::text as min, q.seqmax::text as max, q.seqcache::text as cache, q.seqcycle as cycle
       from pg_sequence q join pg_class s on s.oid = q.seqrelid join pg_namespace n on n.oid = s.relnamespace
       where n.nspname = $1
         and not exists (select from pg_depend d where d.objid = s.oid and d.deptype = 'i')
       order by s.relname`,
      [schema],
    );
    for (const s of seqs.rows)
      out.push(
        `create sequence ${id(schema)}.${id(s.name)} as ${s.type} increment ${s.inc} minvalue ${s.min} maxvalue ${s.max} start ${s.start} cache ${s.cache}${s.cycle ? ' cycle' : ''}`,
      );
    const cols = await c.query<{
      table: string;
      name: string;
      type: string;
      notnull: boolean;
      def: string | null;
      identity: string;
      generated: string;
    }>(
      `select c.relname as table, a.attname as name, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as notnull,
              pg_get_expr(d.adbin, d.adrelid) as def, a.attidentity as identity, a.attgenerated as generated
       from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
       left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
       where n.nspname = $1 and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
       order by c.relname, a.attnum`,
      [schema],
    );
    const byTable = new Map<string, string[]>();
    for (const col of cols.rows) {
      let line = `${id(col.name)} ${col.type}`;
      if (col.identity === 'a') line += ' generated always as identity';
      else if (col.identity === 'd') line += ' generated by default as identity';
      else if (col.generated === 's' && col.def) line += ` generated always as (${col.def}) stored`;
      else if (col.def) line += ` default ${col.def}`;
      if (col.notnull) line += ' not null';
      byTable.set(col.table, [...(byTable.get(col.table) ?? []), line]);
    }
    for (const [table, lines] of byTable)
      out.push(`create table ${id(schema)}.${id(table)} (${lines.join(', ')})`);
    const owned = await c.query<{ seq: string; table: string; col: string }>(
      `select s.relname as seq, t.relname as table, a.attname as col
       from pg_depend d join pg_class s on s.oid = d.objid and s.relkind = 'S'
       join pg_class t on t.oid = d.refobjid join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
       join pg_namespace n on n.oid = s.relnamespace
       where n.nspname = $1 and d.deptype = 'a' and d.classid = 'pg_class'::regclass`,
      [schema],
    );
    for (const o of owned.rows)
      out.push(
        `alter sequence ${id(schema)}.${id(o.seq)} owned by ${id(schema)}.${id(o.table)}.${id(o.col)}`,
      );
    // Primary keys, unique and check constraints before foreign keys, which need the keys they name.
    const cons = await c.query<{ table: string; name: string; def: string }>(
      `select t.relname as table, k.conname as name, pg_get_constraintdef(k.oid) as def
       from pg_constraint k join pg_class t on t.oid = k.conrelid join pg_namespace n on n.oid = t.relnamespace
       where n.nspname = $1 and k.contype in ('p', 'u', 'c', 'x', 'f')
       order by case k.contype when 'f' then 1 else 0 end, t.relname, k.conname`,
      [schema],
    );
    for (const k of cons.rows)
      out.push(`alter table ${id(schema)}.${id(k.table)} add constraint ${id(k.name)} ${k.def}`);
    const idx = await c.query<{ def: string }>(
      `select pg_get_indexdef(i.indexrelid) as def
       from pg_index i join pg_class x on x.oid = i.indexrelid join pg_namespace n on n.oid = x.relnamespace
       where n.nspname = $1 and not exists (select from pg_constraint k where k.conindid = i.indexrelid)
       order by x.relname`,
      [schema],
    );
    for (const i of idx.rows) out.push(i.def);
    const ident = await c.query<{ table: string; mode: string; index: string | null }>(
      `select c.relname as table, c.relreplident as mode,
              (select x.relname from pg_index i join pg_class x on x.oid = i.indexrelid where i.indrelid = c.oid and i.indisreplident) as index
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = $1 and c.relkind = 'r' and c.relreplident in ('f', 'i')`,
      [schema],
    );
    for (const r of ident.rows)
      out.push(
        `alter table ${id(schema)}.${id(r.table)} replica identity ${r.mode === 'f' ? 'full' : `using index ${id(r.index ?? '')}`}`,
      );
    return out;
  } finally {
    await c.query('reset search_path');
  }
}

/**
 * Creates `schema` in the target database, owned by `owner`, and runs the DDL as `owner` (so the
 * tenant's role owns what it gets), in one transaction. A schema that exists already is dropped
 * first: it can only be a previous attempt's, since the target database is the migration's own.
 */
export async function createSchema(
  c: pg.ClientBase,
  schema: string,
  owner: string,
  ddl: string[],
): Promise<void> {
  await c.query('begin');
  try {
    await c.query(`drop schema if exists ${id(schema)} cascade`);
    await c.query(`create schema ${id(schema)} authorization ${id(owner)}`);
    await c.query(`set local role ${id(owner)}`);
    for (const s of ddl) await c.query(s);
    await c.query('commit');
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  }
}

export interface TableCheck {
  table: string;
  rows: number;
  /**
   * The sum of a 64-bit hash of every row's text (`hashtextextended`): independent of physical
   * order, changed by a missing, extra, duplicated or altered row, and computed without the sort an
   * ordered aggregate needs (that sort was most of the write freeze: 2.1 s at 120k rows).
   */
  checksum: string;
}

/**
 * A table alias that is none of `columns`: `alias::text` is the whole row's text only when no
 * column has the alias's name (a column `x` would make `x::text` that column alone).
 */
export function rowAlias(columns: Iterable<string>): string {
  const taken = new Set(columns);
  let a = 'r';
  while (taken.has(a)) a += '_';
  return a;
}

/** The column names of `schema`'s tables (every table's, for `rowAlias`). */
export async function columnNames(c: pg.ClientBase, schema: string): Promise<string[]> {
  const r = await c.query<{ name: string }>(
    `select distinct a.attname as name from pg_attribute a join pg_class t on t.oid = a.attrelid
     join pg_namespace n on n.oid = t.relnamespace where n.nspname = $1 and a.attnum > 0`,
    [schema],
  );
  return r.rows.map((x) => x.name);
}

/** Row counts and checksums of `tables` in `schema`, in one snapshot. */
export async function checksums(c: pg.ClientBase, schema: string, tables: string[]): Promise<TableCheck[]> {
  await c.query('begin isolation level repeatable read read only');
  try {
    const x = id(rowAlias(await columnNames(c, schema)));
    const out: TableCheck[] = [];
    for (const t of tables) {
      const r = await c.query<{ rows: string; checksum: string }>(
        `select count(*)::text as rows, coalesce(sum(hashtextextended(${x}::text, 0)), 0)::text as checksum
         from ${id(schema)}.${id(t)} ${x}`,
      );
      out.push({ table: t, rows: Number(r.rows[0]!.rows), checksum: r.rows[0]!.checksum });
    }
    await c.query('commit');
    return out;
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  }
}

export interface Verification {
  equal: boolean;
  at: string;
  tables: {
    table: string;
    sourceRows: number;
    targetRows: number;
    sourceChecksum: string;
    targetChecksum: string;
  }[];
}

export function compare(source: TableCheck[], target: TableCheck[]): Verification {
  const tables = source.map((s) => {
    const t = target.find((x) => x.table === s.table);
    return {
      table: s.table,
      sourceRows: s.rows,
      targetRows: t?.rows ?? -1,
      sourceChecksum: s.checksum,
      targetChecksum: t?.checksum ?? '',
    };
  });
  const equal =
    target.length === source.length &&
    tables.every((t) => t.sourceRows === t.targetRows && t.sourceChecksum === t.targetChecksum);
  return { equal, at: new Date().toISOString(), tables };
}

/** `wal_level` of the server: logical replication needs `logical`. */
export async function walLevel(c: pg.ClientBase): Promise<string> {
  return (await c.query<{ wal_level: string }>('show wal_level')).rows[0]!.wal_level;
}

/**
 * Starts logical replication of `schema` from the source database into the same-named schema of
 * the target: publication and slot on the source, subscription (with the initial copy) in the
 * target. On one server the slot must be made apart from CREATE SUBSCRIPTION (which would wait for
 * itself). Every part is created only if missing, so a re-run after a crash continues.
 */
export async function startReplication(
  source: pg.ClientBase,
  target: pg.ClientBase,
  o: { name: string; schema: string; sourceUrl: string },
): Promise<void> {
  const pub = await source.query('select 1 from pg_publication where pubname = $1', [o.name]);
  if (pub.rowCount === 0)
    await source.query(`create publication ${id(o.name)} for tables in schema ${id(o.schema)}`);
  const slot = await source.query('select 1 from pg_replication_slots where slot_name = $1', [o.name]);
  if (slot.rowCount === 0)
    await source.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [o.name]);
  if (!(await hasSubscription(target, o.name)))
    await target.query(
      `create subscription ${id(o.name)} connection ${lit(o.sourceUrl)} publication ${id(o.name)}
       with (create_slot = false, slot_name = ${lit(o.name)}, copy_data = true)`,
    );
}

/** Tables whose initial copy has not finished (`srsubstate` other than ready). */
export async function tablesSyncing(target: pg.ClientBase, name: string, expected: number): Promise<number> {
  const r = await target.query<{ ready: number; total: number }>(
    `select count(*) filter (where srsubstate = 'r')::int as ready, count(*)::int as total
     from pg_subscription_rel where srsubid = (select oid from pg_subscription where subname = $1)`,
    [name],
  );
  const x = r.rows[0]!;
  return Math.max(expected, x.total) - x.ready;
}

/**
 * The subscription's failed attempts so far (`pg_stat_subscription_stats`, PostgreSQL 15 on; zero
 * before): a table sync or apply worker that errors is restarted by PostgreSQL every
 * `wal_retrieve_retry_interval` (5 s) and says why in the server log only.
 */
export async function subscriptionErrors(
  target: pg.ClientBase,
  name: string,
): Promise<{ sync: number; apply: number }> {
  const view = await target.query<{ present: boolean }>(
    `select to_regclass('pg_catalog.pg_stat_subscription_stats') is not null as present`,
  );
  if (!view.rows[0]?.present) return { sync: 0, apply: 0 };
  const r = await target.query<{ sync: number; apply: number }>(
    `select sync_error_count::int as sync, apply_error_count::int as apply
     from pg_stat_subscription_stats where subname = $1`,
    [name],
  );
  return r.rows[0] ?? { sync: 0, apply: 0 };
}

/**
 * What the role `reader` lacks to replicate `tables` of `schema` in this database (LOGIN,
 * REPLICATION, CONNECT, USAGE on the schema, SELECT on each table): empty when nothing.
 */
export async function readerLacks(
  c: pg.ClientBase,
  reader: string,
  schema: string,
  tables: string[],
): Promise<string[]> {
  const r = await c.query<{
    login: boolean;
    replication: boolean;
    connect: boolean;
    usage: boolean;
    unreadable: string[];
  }>(
    `select r.rolcanlogin as login, r.rolreplication as replication,
            has_database_privilege(r.oid, current_database(), 'CONNECT') as connect,
            has_schema_privilege(r.oid, n.oid, 'USAGE') as usage,
            array(select t from unnest($3::text[]) t
                  where to_regclass(format('%I.%I', $2::text, t)) is null
                     or not has_table_privilege(r.oid, to_regclass(format('%I.%I', $2::text, t)), 'SELECT')) as unreadable
     from pg_roles r, pg_namespace n where r.rolname = $1 and n.nspname = $2`,
    [reader, schema, tables],
  );
  const x = r.rows[0];
  if (!x) return [`role ${reader} or schema ${schema} (missing)`];
  return [
    ...(x.login ? [] : ['LOGIN']),
    ...(x.replication ? [] : ['REPLICATION']),
    ...(x.connect ? [] : ['CONNECT on the database']),
    ...(x.usage ? [] : [`USAGE on schema ${schema}`]),
    ...x.unreadable.map((t) => `SELECT on ${schema}.${t}`),
  ];
}

/** The subscription's tables still in their initial copy, and its workers' failed attempts so far. */
export async function syncState(
  target: pg.ClientBase,
  name: string,
  expected: number,
): Promise<{ left: number; syncErrors: number; applyErrors: number }> {
  const errors = await subscriptionErrors(target, name);
  return {
    left: await tablesSyncing(target, name, expected),
    syncErrors: errors.sync,
    applyErrors: errors.apply,
  };
}

/**
 * What the role `url` connects as lacks to replicate `tables` of `schema` there (see readerLacks):
 * the reader of a subscription whose connection is `url`.
 */
export async function connectingRoleLacks(url: string, schema: string, tables: string[]): Promise<string[]> {
  return withClient(url, async (c) => {
    const me = (await c.query<{ name: string }>('select current_user as name')).rows[0]!.name;
    return readerLacks(c, me, schema, tables);
  });
}

/** Bytes of WAL the subscription has not confirmed yet (the replication lag). */
export async function replicationLag(source: pg.ClientBase, name: string): Promise<number | null> {
  const r = await source.query<{ lag: string | null }>(
    `select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text as lag from pg_replication_slots where slot_name = $1`,
    [name],
  );
  const lag = r.rows[0]?.lag;
  return lag == null ? null : Number(lag);
}

/** Ends the replication: subscription, then slot and publication. Absent parts are skipped. */
export async function stopReplication(
  source: pg.ClientBase,
  target: pg.ClientBase | undefined,
  name: string,
): Promise<void> {
  if (target) await dropSubscription(target, name);
  // The walsender lets go of the slot shortly after its subscription went.
  for (let i = 0; ; i++) {
    const r = await source.query<{ active: boolean }>(
      'select active from pg_replication_slots where slot_name = $1',
      [name],
    );
    const slot = r.rows[0];
    if (!slot) break;
    if (!slot.active) {
      await source.query('select pg_drop_replication_slot($1)', [name]);
      break;
    }
    if (i > 100) throw new ProviderError(`replication slot ${name} stays active`, 'SlotBusy', true);
    await source.query(
      'select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1 and active_pid is not null',
      [name],
    );
    await new Promise((r) => setTimeout(r, 100));
  }
  await source.query(`drop publication if exists ${id(name)}`);
}

/**
 * Replaces the rows of every table in `to.schema` with those of `from.schema` (COPY streams, one
 * transaction on the receiving side, triggers and foreign-key checks off while loading), then sets
 * the sequences to the source's values. Safe to repeat: the target is truncated first.
 */
export async function copyTables(
  from: pg.ClientBase,
  to: pg.ClientBase,
  o: { fromSchema: string; toSchema: string; tables: string[] },
): Promise<void> {
  await to.query('begin');
  try {
    await to.query('set local session_replication_role = replica');
    if (o.tables.length > 0)
      await to.query(`truncate ${o.tables.map((t) => `${id(o.toSchema)}.${id(t)}`).join(', ')}`);
    for (const t of o.tables) {
      const out = from.query(copyTo(`copy ${id(o.fromSchema)}.${id(t)} to stdout`));
      const into = to.query(copyFrom(`copy ${id(o.toSchema)}.${id(t)} from stdin`));
      await pipeline(out, into);
    }
    await syncSequences(from, to, o.fromSchema, o.toSchema);
    await to.query('commit');
  } catch (err) {
    await to.query('rollback').catch(() => undefined);
    throw err;
  }
}

/** Sets every sequence of `toSchema` to the value of the same-named one in `fromSchema` (logical replication does not carry them). */
export async function syncSequences(
  from: pg.ClientBase,
  to: pg.ClientBase,
  fromSchema: string,
  toSchema: string,
): Promise<number> {
  return setSequences(to, toSchema, await readSequences(from, fromSchema));
}

export type SequenceValues = { name: string; last: string | null }[];

export async function readSequences(c: pg.ClientBase, schema: string): Promise<SequenceValues> {
  const r = await c.query<{ name: string; last: string | null }>(
    'select sequencename as name, last_value::text as last from pg_sequences where schemaname = $1',
    [schema],
  );
  return r.rows;
}

export async function setSequences(
  c: pg.ClientBase,
  schema: string,
  values: SequenceValues,
): Promise<number> {
  let n = 0;
  for (const s of values) {
    if (s.last === null) continue;
    await c.query(`select setval(${lit(`${id(schema)}.${id(s.name)}`)}::regclass, $1::bigint, true)`, [
      s.last,
    ]);
    n++;
  }
  return n;
}

/** Whether this database has the subscription `name`. */
export async function hasSubscription(c: pg.ClientBase, name: string): Promise<boolean> {
  const sub = await c.query(
    'select 1 from pg_subscription where subname = $1 and subdbid = (select oid from pg_database where datname = current_database())',
    [name],
  );
  return (sub.rowCount ?? 0) > 0;
}

/** The subscription gone, leaving its slot (on the other server) to its publisher's side. */
export async function dropSubscription(c: pg.ClientBase, name: string): Promise<void> {
  if (!(await hasSubscription(c, name))) return;
  await c.query(`alter subscription ${id(name)} disable`);
  await c.query(`alter subscription ${id(name)} set (slot_name = none)`);
  await c.query(`drop subscription ${id(name)}`);
}

/** NOLOGIN (or LOGIN) for the roles that exist, and their open sessions ended when taken away. */
export async function setRolesLogin(c: pg.ClientBase, roles: string[], login: boolean): Promise<void> {
  for (const role of roles) {
    const exists = await c.query('select 1 from pg_roles where rolname = $1', [role]);
    if ((exists.rowCount ?? 0) === 0) continue;
    await c.query(`alter role ${id(role)} ${login ? 'login' : 'nologin'}`);
    if (!login)
      await c.query(
        'select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()',
        [role],
      );
  }
}

/**
 * Waits (at most 3 s) until the subscription has received the publisher's WAL up to `lsn`, so that
 * the checksums are usually computed once; the checksums, not this, decide.
 */
export async function waitReceived(target: pg.ClientBase, name: string, lsn: string): Promise<void> {
  const deadline = Date.now() + 3_000;
  while (Date.now() < deadline) {
    const q = await target.query<{ done: boolean }>(
      `select coalesce(bool_and(received_lsn >= $2::pg_lsn), false) as done
       from pg_stat_subscription where subname = $1 and relid is null`,
      [name, lsn],
    );
    if (q.rows[0]?.done) return;
    await new Promise((res) => setTimeout(res, 20));
  }
}

/**
 * The subscription ends on the standby's side alone (the primary may be gone): disabled, cut from
 * its slot (which stays on the primary until fenced), dropped. False when it was gone already.
 */
export async function detachSubscription(t: pg.ClientBase, name: string): Promise<boolean> {
  const sub = await t.query(
    'select 1 from pg_subscription where subname = $1 and subdbid = (select oid from pg_database where datname = current_database())',
    [name],
  );
  if ((sub.rowCount ?? 0) === 0) return false;
  await t.query(`alter subscription ${id(name)} disable`);
  await t.query(`alter subscription ${id(name)} set (slot_name = none)`);
  await t.query(`drop subscription ${id(name)}`);
  return true;
}

/**
 * Sets every sequence of `schema` past what the data holds: for a sequence owned by a column (serial
 * or identity), the column's maximum; and never below the primary's last known value (values handed
 * out but rolled back, or deleted since). The new primary's next value collides with no row.
 */
export async function continueSequences(
  c: pg.ClientBase,
  schema: string,
  lastKnown: Record<string, string>,
): Promise<Record<string, string>> {
  const seqs = await c.query<{ seq: string; table: string | null; col: string | null; last: string | null }>(
    `select s.relname as seq, t.relname as table, a.attname as col, q.last_value::text as last
     from pg_class s join pg_namespace n on n.oid = s.relnamespace
     join pg_sequences q on q.schemaname = n.nspname and q.sequencename = s.relname
     left join pg_depend d on d.objid = s.oid and d.classid = 'pg_class'::regclass and d.deptype in ('a', 'i')
       and d.refclassid = 'pg_class'::regclass
     left join pg_class t on t.oid = d.refobjid
     left join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
     where n.nspname = $1 and s.relkind = 'S'`,
    [schema],
  );
  const out: Record<string, string> = {};
  for (const s of seqs.rows) {
    let value = BigInt(s.last ?? '0');
    const known = lastKnown[s.seq];
    if (known !== undefined && BigInt(known) > value) value = BigInt(known);
    if (s.table && s.col) {
      const m = await c.query<{ max: string | null }>(
        `select max(${id(s.col)})::text as max from ${id(schema)}.${id(s.table)}`,
      );
      const max = m.rows[0]?.max;
      if (max != null && BigInt(max) > value) value = BigInt(max);
    }
    if (value > 0n) {
      await c.query(`select setval($1::regclass, $2::bigint, true)`, [
        `${id(schema)}.${id(s.seq)}`,
        value.toString(),
      ]);
      out[s.seq] = value.toString();
    }
  }
  return out;
}
