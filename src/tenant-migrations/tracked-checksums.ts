import pg from 'pg';
import { ProviderError } from '../providers/provider.js';
import {
  checksums,
  columnNames,
  compare,
  rowAlias,
  type TableCheck,
  type Verification,
  withClient,
} from './pg-copy.js';

const { escapeIdentifier: id } = pg;

/**
 * Checksums that cost the write freeze only what changed, not the size (issue 19: freeze ≤ 2 s at
 * 1M rows, where hashing every row of both sides inside the freeze took 3.4–6.4 s).
 *
 * The checksum of a table is the one `checksums` computes: the row count and the sum of a 64-bit
 * hash of every row's text. Both are sums over rows, so a change moves them by what it inserted
 * minus what it deleted. Before the freeze, each side gets change tracking that writes those moves
 * into a journal table (`tenantry_verify.<name>`, outside the replicated schema):
 * - the source (the tenant's live tables): statement-level AFTER triggers with transition tables,
 *   one journal row per statement, in the writer's own transaction;
 * - the target (the subscriber): row-level triggers enabled ALWAYS, since the logical-replication
 *   apply worker fires row triggers only (PostgreSQL "Logical Replication › Triggers").
 * Then, while replication streams, each side hashes its whole tables once and, in the same
 * snapshot, sums its journal: base = full − journal. Since every change writes its journal row in
 * its own transaction, full − journal is the same in every later snapshot, so inside the freeze a
 * side's checksum is base + journal-now, which reads only the journal. A row missing, extra or
 * altered in the bulk copy shows in the bases; one lost or doubled in the stream shows in the
 * journals; the two sides are computed independently from their own rows.
 *
 * TRUNCATE writes a marker instead of a move (its rows are not listed); a marked table is hashed in
 * full again inside the freeze.
 */

export interface Tracked {
  /** Journal and trigger name: the replication's name (unique per migration and resource). */
  name: string;
  schema: string;
  tables: string[];
}

/** Per table: rows and checksum minus the journal's sums, read in one snapshot. */
export type Baseline = { table: string; rows: string; checksum: string }[];

/**
 * A row's text depends on the session (a timestamptz is printed in its TimeZone, a date in its
 * DateStyle): the triggers run in the writers' and the apply worker's sessions, so every hash here
 * is taken with these settings, fixed on the trigger functions and set on the hashing sessions.
 */
const TEXT_SETTINGS: [string, string][] = [
  ['timezone', 'UTC'],
  ['datestyle', 'ISO, YMD'],
  ['intervalstyle', 'postgres'],
  ['extra_float_digits', '1'],
  ['bytea_output', 'hex'],
];
const functionSettings = TEXT_SETTINGS.map(([k, v]) => `set ${k} = '${v}'`).join(' ');
const sessionSettings = (c: pg.ClientBase) =>
  c.query(TEXT_SETTINGS.map(([k, v]) => `set ${k} = '${v}'`).join('; '));

const journal = (name: string) => `tenantry_verify.${id(name)}`;
const fn = (name: string, kind: 'stmt' | 'row') => `tenantry_verify.${id(`${name}_${kind}`)}`;
const trig = (name: string, op: string) => id(`${name}_${op}`);

async function ensureJournal(c: pg.ClientBase, name: string): Promise<void> {
  await c.query('create schema if not exists tenantry_verify');
  await c.query(
    `create table if not exists ${journal(name)} (
       tbl text not null, rows bigint not null default 0, hash numeric not null default 0,
       truncated boolean not null default false)`,
  );
}

/**
 * Runs `body` for each tracked table (schema-qualified) in one transaction that waits at most 5 s
 * for a table's lock; a failure rolls everything back and is a retryable TrackingBusy.
 */
async function onEachTable(
  c: pg.ClientBase,
  t: Tracked,
  body: (rel: string) => Promise<void>,
): Promise<void> {
  await c.query('begin');
  try {
    await c.query(`set local lock_timeout = '5s'`);
    for (const table of t.tables) await body(`${id(t.schema)}.${id(table)}`);
    await c.query('commit');
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw new ProviderError(
      `change tracking on ${t.schema}: ${(err as Error).message}`,
      'TrackingBusy',
      true,
    );
  }
}

/** Statement-level triggers with transition tables on the source's tables (safe to run twice). */
export async function trackSource(c: pg.ClientBase, t: Tracked): Promise<void> {
  await ensureJournal(c, t.name);
  const j = journal(t.name);
  // The transition tables are read under an alias that no column is named (see rowAlias).
  const x = id(rowAlias(await columnNames(c, t.schema)));
  const h = (rel: string) => `coalesce(sum(hashtextextended(${x}::text, 0)), 0) from ${rel} ${x}`;
  await c.query(`create or replace function ${fn(t.name, 'stmt')}() returns trigger language plpgsql
    security definer set search_path = pg_catalog, pg_temp ${functionSettings} as $f$
    begin
      if tg_op = 'INSERT' then
        insert into ${j} (tbl, rows, hash) select tg_table_name, count(*), ${h('n')} having count(*) > 0;
      elsif tg_op = 'DELETE' then
        insert into ${j} (tbl, rows, hash) select tg_table_name, -count(*), -${h('o')} having count(*) > 0;
      elsif tg_op = 'UPDATE' then
        insert into ${j} (tbl, hash) select tg_table_name, (select ${h('n')}) - (select ${h('o')});
      else
        insert into ${j} (tbl, truncated) values (tg_table_name, true);
      end if;
      return null;
    end $f$`);
  await statementTriggers(c, t, (op) => trig(t.name, op), fn(t.name, 'stmt'));
}

/**
 * AFTER statement triggers with transition tables (`n` new rows, `o` old rows) for INSERT, DELETE,
 * UPDATE and TRUNCATE on every tracked table, all calling `f` (safe to run twice). CREATE TRIGGER
 * waits for the writers' open transactions and holds new ones meanwhile: briefly.
 */
export async function statementTriggers(
  c: pg.ClientBase,
  t: Tracked,
  name: (op: 'i' | 'd' | 'u' | 't') => string,
  f: string,
): Promise<void> {
  await onEachTable(c, t, async (rel) => {
    await c.query(
      `create or replace trigger ${name('i')} after insert on ${rel} referencing new table as n for each statement execute function ${f}()`,
    );
    await c.query(
      `create or replace trigger ${name('d')} after delete on ${rel} referencing old table as o for each statement execute function ${f}()`,
    );
    await c.query(
      `create or replace trigger ${name('u')} after update on ${rel} referencing old table as o new table as n for each statement execute function ${f}()`,
    );
    await c.query(
      `create or replace trigger ${name('t')} after truncate on ${rel} for each statement execute function ${f}()`,
    );
  });
}

/** Row-level triggers, fired by the apply worker too (ENABLE ALWAYS), on the target's tables. */
export async function trackTarget(c: pg.ClientBase, t: Tracked): Promise<void> {
  await ensureJournal(c, t.name);
  const j = journal(t.name);
  await c.query(`create or replace function ${fn(t.name, 'row')}() returns trigger language plpgsql
    security definer set search_path = pg_catalog, pg_temp ${functionSettings} as $f$
    begin
      if tg_op in ('INSERT', 'UPDATE') then
        insert into ${j} (tbl, rows, hash) values (tg_table_name, 1, hashtextextended(new::text, 0));
      end if;
      if tg_op in ('DELETE', 'UPDATE') then
        insert into ${j} (tbl, rows, hash) values (tg_table_name, -1, -hashtextextended(old::text, 0));
      end if;
      return null;
    end $f$`);
  await onEachTable(c, t, async (rel) => {
    await c.query(
      `create or replace trigger ${trig(t.name, 'r')} after insert or update or delete on ${rel} for each row execute function ${fn(t.name, 'row')}()`,
    );
    await c.query(`alter table ${rel} enable always trigger ${trig(t.name, 'r')}`);
  });
}

/** Removes the triggers, functions and journal (absent parts are skipped). */
export async function untrack(c: pg.ClientBase, t: Tracked): Promise<void> {
  const schema = await c.query('select 1 from pg_namespace where nspname = $1', [t.schema]);
  if ((schema.rowCount ?? 0) > 0)
    for (const table of t.tables) {
      const exists = await c.query('select 1 from pg_tables where schemaname = $1 and tablename = $2', [
        t.schema,
        table,
      ]);
      if ((exists.rowCount ?? 0) === 0) continue;
      for (const op of ['i', 'd', 'u', 't', 'r'])
        await c.query(`drop trigger if exists ${trig(t.name, op)} on ${id(t.schema)}.${id(table)}`);
    }
  await c.query(`drop function if exists ${fn(t.name, 'stmt')}()`);
  await c.query(`drop function if exists ${fn(t.name, 'row')}()`);
  await c.query(`drop table if exists ${journal(t.name)}`);
  const left = await c.query(
    `select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'tenantry_verify'
     union all select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'tenantry_verify'`,
  );
  // Another migration may have just put its journal there: then the schema stays, for it to drop.
  if ((left.rowCount ?? 0) === 0)
    await c.query('drop schema if exists tenantry_verify').catch((err: { code?: string }) => {
      if (err.code !== '2BP01') throw err;
    });
}

interface JournalSum {
  tbl: string;
  rows: string;
  hash: string;
  truncated: boolean;
}

const journalSums = (c: pg.ClientBase, name: string) =>
  c.query<JournalSum>(
    `select tbl, sum(rows)::text as rows, sum(hash)::text as hash, bool_or(truncated) as truncated
     from ${journal(name)} group by tbl`,
  );

/**
 * Hashes every row of the tracked tables and sums the journal, in one snapshot: the baseline that
 * the journal alone brings up to date from then on. Run before the freeze; it costs a full scan.
 */
export async function baseline(c: pg.ClientBase, t: Tracked): Promise<Baseline> {
  await sessionSettings(c);
  await c.query('begin isolation level repeatable read read only');
  try {
    const j = new Map((await journalSums(c, t.name)).rows.map((r) => [r.tbl, r]));
    const x = id(rowAlias(await columnNames(c, t.schema)));
    const out: Baseline = [];
    for (const table of t.tables) {
      const r = await c.query<{ rows: string; checksum: string }>(
        `select count(*)::text as rows, coalesce(sum(hashtextextended(${x}::text, 0)), 0)::text as checksum
         from ${id(t.schema)}.${id(table)} ${x}`,
      );
      const d = j.get(table);
      out.push({
        table,
        rows: (BigInt(r.rows[0]!.rows) - BigInt(d?.rows ?? '0')).toString(),
        checksum: (BigInt(r.rows[0]!.checksum) - BigInt(d?.hash ?? '0')).toString(),
      });
    }
    await c.query('commit');
    return out;
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  }
}

/**
 * The tables' row counts and checksums now, from the baseline and the journal; a table truncated
 * since is hashed in full (`full` is that side's `checksums`).
 */
export async function trackedChecksums(
  c: pg.ClientBase,
  t: Tracked,
  base: Baseline,
  full: (c: pg.ClientBase, tables: string[]) => Promise<TableCheck[]>,
  alsoRehash: string[] = [],
): Promise<{ checks: TableCheck[]; rehashed: string[] }> {
  await sessionSettings(c);
  await c.query('begin isolation level repeatable read read only');
  let sums: JournalSum[];
  try {
    sums = (await journalSums(c, t.name)).rows;
    await c.query('commit');
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  }
  const j = new Map(sums.map((r) => [r.tbl, r]));
  const rehashed = t.tables.filter((x) => j.get(x)?.truncated || alsoRehash.includes(x));
  const again = rehashed.length > 0 ? await full(c, rehashed) : [];
  const checks = t.tables.map((table): TableCheck => {
    const redone = again.find((x) => x.table === table);
    if (redone) return redone;
    const b = base.find((x) => x.table === table);
    const d = j.get(table);
    if (!b) throw new ProviderError(`no baseline for ${table}`, 'NoBaseline', false);
    return {
      table,
      rows: Number(BigInt(b.rows) + BigInt(d?.rows ?? '0')),
      checksum: (BigInt(b.checksum) + BigInt(d?.hash ?? '0')).toString(),
    };
  });
  return { checks, rehashed };
}

/** What the freeze's verification records: the comparison and how it was computed. */
export type TrackedVerification = Verification & { method: string; rehashed: string[] };

/**
 * Inside the freeze: the source (no longer written) read once, the target polled until it equals
 * the source or `timeoutMs` passes (the stream's last transactions may still be applying). A table
 * the source truncated is hashed in full on the target too: the apply worker replays a TRUNCATE
 * without firing the target's triggers, so the target's journal does not know of it.
 */
export async function verifyTracked(o: {
  source: () => Promise<{ checks: TableCheck[]; rehashed: string[] }>;
  target: (alsoRehash: string[]) => Promise<{ checks: TableCheck[]; rehashed: string[] }>;
  timeoutMs: number;
}): Promise<TrackedVerification> {
  const deadline = Date.now() + o.timeoutMs;
  const source = await o.source();
  for (;;) {
    const target = await o.target(source.rehashed);
    const v = compare(source.checks, target.checks);
    if (v.equal || Date.now() > deadline)
      return {
        ...v,
        method:
          'full row hashes of both sides before the freeze, brought up to date by the changes journalled on each side since',
        rehashed: [...new Set([...source.rehashed, ...target.rehashed])],
      };
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** Both sides of one replicated schema: the source database's URL, the target's, what is tracked. */
export interface TrackedPair {
  sourceUrl: string;
  targetUrl: string;
  tracked: Tracked;
  /** The target's schema of the same tables, where it is not the source's (a rollback's copy back). */
  targetSchema?: string;
}

/** What is tracked on the target side: the same tables, in the target's schema. */
const onTarget = (p: Pick<TrackedPair, 'tracked' | 'targetSchema'>): Tracked => ({
  ...p.tracked,
  schema: p.targetSchema ?? p.tracked.schema,
});

export interface Baselines {
  source: Baseline;
  target: Baseline;
  ms: number;
}

/**
 * Before the freeze, with replication streaming (the initial copy done): tracking on both sides,
 * then both baselines, computed at once. Safe to run twice (the triggers are replaced, and a
 * baseline taken later is the same one).
 */
export async function checksumBulk(p: TrackedPair): Promise<Baselines> {
  const t0 = performance.now();
  await withClient(p.sourceUrl, (s) => trackSource(s, p.tracked));
  await withClient(p.targetUrl, (t) => trackTarget(t, onTarget(p)));
  const [source, target] = await Promise.all([
    withClient(p.sourceUrl, (s) => baseline(s, p.tracked)),
    withClient(p.targetUrl, (t) => baseline(t, onTarget(p))),
  ]);
  return { source, target, ms: Math.round(performance.now() - t0) };
}

/**
 * Inside the freeze: both sides' checksums now from their baselines and journals, compared.
 * `rehashTarget`: tables the target got by other means than tracked writes (copied anew), hashed
 * in full there.
 */
export async function verifyFrozen(
  p: TrackedPair,
  base: Baselines,
  timeoutMs: number,
  rehashTarget: string[] = [],
) {
  const side =
    (url: string, t: Tracked, b: Baseline, also: string[]) =>
    (alsoRehash: string[] = []) =>
      withClient(url, (c) =>
        trackedChecksums(c, t, b, (cc, tables) => checksums(cc, t.schema, tables), [...also, ...alsoRehash]),
      );
  return verifyTracked({
    source: side(p.sourceUrl, p.tracked, base.source, []),
    target: side(p.targetUrl, onTarget(p), base.target, rehashTarget),
    timeoutMs,
  });
}

/** Tracking removed from both sides (the target's database may be gone already). */
export async function untrackPair(p: {
  sourceUrl: string;
  targetUrl?: string | undefined;
  tracked: Tracked;
  targetSchema?: string;
}) {
  await withClient(p.sourceUrl, (s) => untrack(s, p.tracked));
  if (p.targetUrl) await withClient(p.targetUrl, (t) => untrack(t, onTarget(p)));
}
