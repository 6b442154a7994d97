import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  cellManifest,
  poolTenantManifests,
  startController,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { credentialsOf as revealCredentials } from '../../test/helpers/credentials.js';
import { finished, startWorkflowEngine, stepsOf } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { ISOLATION_STEPS, type Migration, MigrationsService } from './migrations.service.js';
import { databaseUrl, withClient } from './pg-copy.js';

// Roles and databases belong to the whole server: names unique to this run.
const customer = `mg${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const base = tenant.replace(/-/g, '_');
const tenantB = `${customer}b-eu-dev`;
const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    cellManifest(`${customer}-pool`, 'shared'),
    cellManifest(`${customer}-silo`, 'dedicated'),
    ...poolTenantManifests(customer, 'Migrating'),
    ...poolTenantManifests(`${customer}b`, 'Keyless'),
  ]),
);

const credentialsOf = (resourceId: string) => revealCredentials(fx, resourceId);

/** The tenant's application: connects with the credentials the API hands out for its resource now. */
async function tenantClient(resourceId: string): Promise<pg.Client> {
  const c = new pg.Client({
    connectionString: (await credentialsOf(resourceId)).url,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/**
 * Asks for the resource's credentials every 20 ms, as a client that reconnects would, and keeps
 * each answer: the database and user it names, or the refusal's code.
 */
function watchCredentials(resourceId: string) {
  const answers: { at: number; answer: string }[] = [];
  let stop = false;
  const done = (async () => {
    while (!stop) {
      const answer = await credentialsOf(resourceId).then(
        (x) => `${x.username}@${x.database}`,
        (err: { code?: string }) => err.code ?? String(err),
      );
      answers.push({ at: Date.now(), answer });
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    answers,
    /** The distinct answers in the order they came. */
    sequence: () => answers.map((a) => a.answer).filter((a, i, all) => i === 0 || all[i - 1] !== a),
    async stop() {
      stop = true;
      await done;
    },
  };
}

/** The resource's status, and how many times it was announced Ready (`integrationresource.ready`). */
async function readyOf(resourceId: string) {
  const r = await fx.t.owner.query(
    `select phase, observed_generation = generation as current,
            (select c->>'message' from jsonb_array_elements(conditions) c where c->>'type' = 'Ready') as message,
            (select count(*)::int from outbox_events where type = 'dev.tenantry.integrationresource.ready.v1'
               and subject = 'integrationresources/' || r.id) as "readyEvents"
     from integration_resources r where id = $1`,
    [resourceId],
  );
  return r.rows[0] as { phase: string; current: boolean; message: string; readyEvents: number };
}

/** The longest time between two acknowledged writes (the writer's longest pause). */
const longestPause = (ackedAt: number[]) =>
  ackedAt.reduce((max, at, i) => (i === 0 ? 0 : Math.max(max, at - ackedAt[i - 1]!)), 0);

/**
 * Writes one row at a time through the tenant's own credentials and remembers every write the
 * database acknowledged, and when writes were refused; reconnects (asking for the credentials
 * again, a refusal of which counts as a refused write) on error.
 */
function startWriter(resourceId: string, from = 1_000_000) {
  const acked: number[] = [];
  const ackedAt: number[] = [];
  const refusedAt: number[] = [];
  let stop = false;
  let n = from;
  let lastError = '';
  const done = (async () => {
    let c: pg.Client | undefined;
    while (!stop) {
      try {
        c ??= await tenantClient(resourceId);
        const v = ++n;
        await c.query('insert into orders (n, payload) values ($1, $2)', [v, `w${v}`]);
        acked.push(v);
        ackedAt.push(Date.now());
      } catch (err) {
        lastError = (err as Error).message;
        refusedAt.push(Date.now());
        await c?.end().catch(() => undefined);
        c = undefined;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    await c?.end().catch(() => undefined);
  })();
  return {
    acked,
    ackedAt,
    refusedAt,
    lastError: () => lastError,
    async stop() {
      stop = true;
      await done;
    },
  };
}

async function resourceId(of = tenant): Promise<string> {
  const r = await fx.t.owner.query<{ id: string }>(`select id from integration_resources where slug = $1`, [
    `${of}.database`,
  ]);
  return r.rows[0]!.id;
}

async function countsIn(c: pg.Client): Promise<Record<string, number>> {
  const r = await c.query<{ orders: number; items: number; events: number }>(
    `select (select count(*) from orders)::int as orders, (select count(*) from items)::int as items,
            (select count(*) from events)::int as events`,
  );
  return r.rows[0]!;
}

describe('pool → silo migration on real PostgreSQL, with a writer writing throughout', () => {
  it('copies ≥ 100k rows by logical replication, freezes writes only for the cut-over, verifies, cuts over, and rolls back with nothing lost', async () => {
    const c = await startController(fx.t);
    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    const service = new MigrationsService(fx.t.db);
    try {
      const rid = await resourceId();
      await until('the pool database Ready', async () => {
        const r = await fx.t.owner.query(`select phase from integration_resources where id = $1`, [rid]);
        return r.rows[0].phase === 'Ready';
      });
      // The tenant's schema, made by the tenant's own role: 120k rows over three tables.
      const app = await tenantClient(rid);
      await app.query(`
        create table orders (id bigserial primary key, n integer not null unique, payload text, at timestamptz default now());
        create table items (id integer generated always as identity primary key,
                            order_id bigint not null references orders (id), note text);
        create index items_by_order on items (order_id);
        create table events (k text primary key, v jsonb not null default '{}');
        insert into orders (n, payload) select g, md5(g::text) from generate_series(1, 60000) g;
        insert into items (order_id, note) select 1 + (g % 60000), 'note ' || g from generate_series(1, 40000) g;
        insert into events (k, v) select 'e' || g, jsonb_build_object('g', g) from generate_series(1, 20000) g;`);
      await app.end();

      const dry = await service.start(fx.ctx, tenant, { isolation: 'silo' }, { dryRun: true });
      expect(dry).toMatchObject({
        dryRun: true,
        from: { isolation: 'pool', cell: `${customer}-pool` },
        to: { isolation: 'silo', cell: `${customer}-silo`, dataPartition: { name: `tenantry_${base}` } },
      });
      expect(await fx.t.owner.query('select count(*)::int as n from tenant_migrations')).toMatchObject({
        rows: [{ n: 0 }],
      });

      const writer = startWriter(rid);
      await until('the writer writing', async () => writer.acked.length > 50);
      const watch = watchCredentials(rid);
      const m = (await service.start(
        fx.ctx,
        tenant,
        { isolation: 'silo', rollbackWindowSeconds: 3600 },
        { dryRun: false },
      )) as Migration;
      expect(m).toMatchObject({ state: 'Running', from: { isolation: 'pool' }, to: { isolation: 'silo' } });
      // A second migration while this one runs is refused.
      await expect(
        service.start(fx.ctx, tenant, { isolation: 'silo' }, { dryRun: false }),
      ).rejects.toMatchObject({
        code: 'workflow.in_progress',
        status: 409,
      });

      expect(await finished(fx.t, m.id, 120_000)).toMatchObject({ state: 'Succeeded' });
      // The moment the cut-over has committed, the credentials are the silo's: never a 409 between.
      expect(await credentialsOf(rid)).toMatchObject({
        database: `tenantry_${base}`,
        username: `tenantry_${base}`,
        isolation: 'silo',
      });
      const cutOver = await readyOf(rid);
      expect(cutOver).toMatchObject({ phase: 'Ready', current: true, readyEvents: 2 });
      expect(cutOver.message).toMatch(new RegExp(`^postgres: isolation=silo, .*database=tenantry_${base}, `));
      const ackedAtCutOver = writer.acked.length;
      await until('writes on the silo', async () => writer.acked.length > ackedAtCutOver + 50, 30_000);
      await writer.stop();
      await watch.stop();
      expect(watch.sequence()).toEqual([
        `t_${base}@${new URL(defaultDataplaneUrl(fx.t.ownerUrl)).pathname.slice(1)}`,
        `tenantry_${base}@tenantry_${base}`,
      ]);

      expect((await stepsOf(fx.t, m.id)).map((s) => `${s.name}:${s.state}`)).toEqual(
        ISOLATION_STEPS.map((s) => `${s}:Completed`),
      );
      const done = await service.get(fx.ctx, tenant, m.id);
      expect(done).toMatchObject({ state: 'CutOver', mode: 'logical-replication' });
      const v = (done.verification as Record<string, { equal: boolean; tables: unknown[]; method: string }>)[
        rid
      ]!;
      expect(v.equal).toBe(true);
      expect(v.tables).toHaveLength(3);
      // Every row was hashed before the freeze; the freeze read only the changes journalled since.
      expect(v.method).toMatch(/before the freeze.*journalled/);
      expect(done.freeze.durationMs).toBeGreaterThanOrEqual(0);
      // Writes were refused only in the freeze (plus the writer's reconnect right after it): its
      // longest pause is the freeze's, not the freeze's and then a wait for the reconcile.
      const from = Date.parse(done.freeze.startedAt!);
      const to = Date.parse(done.freeze.endedAt!);
      for (const at of writer.refusedAt) {
        expect(at).toBeGreaterThanOrEqual(from - 50);
        expect(at).toBeLessThanOrEqual(to + 2_000);
      }
      const pause = longestPause(writer.ackedAt);
      process.stdout.write(
        `pool → silo: freeze ${done.freeze.durationMs} ms, writer's longest pause ${pause} ms\n`,
      );
      expect(pause).toBeLessThan(done.freeze.durationMs! + 2_000);

      // The silo holds every acknowledged write exactly once, and everything else.
      const silo = await tenantClient(rid);
      expect(silo.database).toBe(`tenantry_${base}`);
      expect(await countsIn(silo)).toEqual({
        orders: 60000 + writer.acked.length,
        items: 40000,
        events: 20000,
      });
      const dupes = await silo.query(
        `select count(*)::int as n from (select n from orders group by n having count(*) > 1) d`,
      );
      expect(dupes.rows[0].n).toBe(0);
      const have = await silo.query<{ n: number }>('select n from orders where n > 1000000 order by n');
      expect(have.rows.map((r) => r.n)).toEqual(writer.acked);
      // Sequences went with the data: the next insert does not collide.
      await silo.query(`insert into orders (n) values (-1)`);
      await silo.query(`insert into items (order_id) values (1)`);
      await silo.end();

      // Placement, spec, secret reference, cells, events and audit follow.
      const t = await fx.t.owner.query(`select spec, placement, cell_id from tenants where slug = $1`, [
        tenant,
      ]);
      expect(t.rows[0].spec.isolation).toBe('silo');
      expect(t.rows[0].placement).toMatchObject({
        isolation: 'silo',
        cell: `${customer}-silo`,
        dataPartition: { kind: 'database', name: `tenantry_${base}` },
      });
      const cells = await fx.t.owner.query(`select slug, allocated from cells order by slug`);
      expect(cells.rows).toEqual([
        { slug: `${customer}-pool`, allocated: 1 }, // tenant B stays in the pool
        { slug: `${customer}-silo`, allocated: 1 },
      ]);
      const ev = await fx.t.owner.query(
        `select data from outbox_events where type = 'dev.tenantry.tenant.migrated.v1' and subject like 'tenants/%'`,
      );
      expect(ev.rows).toHaveLength(1);
      expect(ev.rows[0].data.previous.placement).toMatchObject({ isolation: 'pool' });
      expect(ev.rows[0].data.current.placement).toMatchObject({ isolation: 'silo' });
      const audit = await fx.t.owner.query<{ action: string }>(
        `select action from audit_records where action like 'migration.%' order by time`,
      );
      expect(audit.rows.map((r) => r.action)).toEqual(['migration.start', 'migration.cut_over']);
      // The source is kept for the rollback window, and its old credentials no longer log in.
      const dp = new pg.Client({ connectionString: defaultDataplaneUrl(fx.t.ownerUrl) });
      dp.on('error', () => undefined);
      await dp.connect();
      const src = await dp.query(`select count(*)::int as n from t_${base}.orders`);
      expect(src.rows[0].n).toBeGreaterThanOrEqual(60000);
      const role = await dp.query('select rolcanlogin from pg_roles where rolname = $1', [`t_${base}`]);
      expect(role.rows[0].rolcanlogin).toBe(false);
      // The change tracking of the checksums is gone from both sides.
      for (const database of [null, `tenantry_${base}`]) {
        const url = defaultDataplaneUrl(fx.t.ownerUrl);
        const left = await withClient(database ? databaseUrl(url, database) : url, (c) =>
          c.query(
            `select (select count(*) from pg_trigger where not tgisinternal)::int as triggers,
                    (select count(*) from pg_namespace where nspname = 'tenantry_verify')::int as schemas`,
          ),
        );
        expect(left.rows[0]).toEqual({ triggers: 0, schemas: 0 });
      }
      // The reconcile the cut-over asked for finds what the cut-over wrote: nothing more to change
      // or to announce.
      await until('the silo database reconciled', async () => {
        const r = await fx.t.owner.query(
          `select 1 from reconcile_jobs j, tenant_migrations m where j.object_id = $1 and m.id = $2
             and j.updated_at > m.cut_over_at and j.locked_by is null and j.run_after > now()`,
          [rid, m.id],
        );
        return r.rowCount === 1;
      });
      expect(await readyOf(rid)).toEqual(cutOver);

      // Rollback, while the writer writes on: the pool gets every row, those written on the silo too.
      const writer2 = startWriter(rid, 2_000_000);
      await until('the second writer writing', async () => writer2.acked.length > 50);
      const watch2 = watchCredentials(rid);
      const rb = await service.rollback(fx.ctx, tenant, m.id);
      expect(rb.rollbackWorkflowId).toBeTruthy();
      expect(await finished(fx.t, rb.rollbackWorkflowId!, 120_000)).toMatchObject({ state: 'Succeeded' });
      expect(await credentialsOf(rid)).toMatchObject({ username: `t_${base}`, isolation: 'pool' });
      await watch2.stop();
      expect(watch2.sequence()).toEqual([
        `tenantry_${base}@tenantry_${base}`,
        `t_${base}@${new URL(defaultDataplaneUrl(fx.t.ownerUrl)).pathname.slice(1)}`,
      ]);
      const ackedAtRollback = writer2.acked.length;
      await until(
        'writes on the pool again',
        async () => writer2.acked.length > ackedAtRollback + 50,
        30_000,
      );
      await writer2.stop();
      process.stdout.write(`rollback: writer's longest pause ${longestPause(writer2.ackedAt)} ms\n`);
      expect(await readyOf(rid)).toMatchObject({ phase: 'Ready', current: true, readyEvents: 3 });
      const back = await tenantClient(rid);
      expect(back.database).not.toBe(`tenantry_${base}`);
      const all = [...writer.acked, ...writer2.acked];
      expect(await countsIn(back)).toEqual({ orders: 60000 + all.length + 1, items: 40001, events: 20000 });
      const have2 = await back.query<{ n: number }>('select n from orders where n > 1000000 order by n');
      expect(have2.rows.map((r) => r.n)).toEqual(all.sort((a, b) => a - b));
      await back.end();
      const after = await service.get(fx.ctx, tenant, m.id);
      expect(after.state).toBe('RolledBack');
      // Copied back whole before the freeze; the freeze moved and hashed only what changed since.
      expect((await stepsOf(fx.t, rb.rollbackWorkflowId!)).map((s) => `${s.name}:${s.state}`)).toEqual(
        ['check-window', 'copy-back-bulk', 'freeze-writes', 'copy-back', 'restore-source', 'drop-target'].map(
          (s) => `${s}:Completed`,
        ),
      );
      const back2 = (
        after.rollback as {
          tables: Record<string, { equal: boolean; method: string; changedRows: number; recopied: string[] }>;
        }
      ).tables[rid]!;
      expect(back2).toMatchObject({ equal: true, recopied: [] });
      expect(back2.method).toMatch(/before the freeze.*journalled/);
      expect(back2.changedRows).toBeGreaterThan(0);
      expect(back2.changedRows).toBeLessThan(60000);
      // No change tracking is left on the pool's tables.
      const triggers = await dp.query(
        `select count(*)::int as n from pg_trigger t join pg_class c on c.oid = t.tgrelid
         join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and not t.tgisinternal`,
        [`t_${base}`],
      );
      expect(triggers.rows[0].n).toBe(0);
      const t2 = await fx.t.owner.query(`select placement from tenants where slug = $1`, [tenant]);
      expect(t2.rows[0].placement).toMatchObject({ isolation: 'pool', cell: `${customer}-pool` });
      const gone = await dp.query('select 1 from pg_database where datname = $1', [`tenantry_${base}`]);
      expect(gone.rowCount).toBe(0);
      const slots = await dp.query(
        `select count(*)::int as n from pg_replication_slots where slot_name like $1`,
        [`tenantry_m_${m.id.replace(/-/g, '').slice(0, 12)}_%`],
      );
      expect(slots.rows[0].n).toBe(0);
      await dp.end();
      await expect(service.rollback(fx.ctx, tenant, m.id)).rejects.toMatchObject({
        code: 'migration.rollback_unavailable',
      });
    } finally {
      await e.stop();
      await c.stop();
    }
  }, 300_000);
});

describe('what logical replication cannot carry', () => {
  it('refuses a schema with objects it does not copy, changing nothing; copies a table without a key during the freeze', async () => {
    const c = await startController(fx.t);
    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    const service = new MigrationsService(fx.t.db);
    try {
      const rid = await resourceId(tenantB);
      await until('the pool database Ready', async () => {
        const r = await fx.t.owner.query(`select phase from integration_resources where id = $1`, [rid]);
        return r.rows[0].phase === 'Ready';
      });
      const app = await tenantClient(rid);
      await app.query(`
        create table log (at timestamptz not null default now(), line text);
        insert into log (line) select 'line ' || g from generate_series(1, 5000) g;
        create view recent as select * from log;`);

      const m1 = (await service.start(
        fx.ctx,
        tenantB,
        { isolation: 'silo' },
        { dryRun: false },
      )) as Migration;
      expect(await finished(fx.t, m1.id, 60_000)).toMatchObject({ state: 'Failed' });
      const failed = await service.get(fx.ctx, tenantB, m1.id);
      expect(failed.state).toBe('Failed');
      expect(failed.error).toMatch(/view t_\w+\.recent/);
      const t = await fx.t.owner.query(`select placement from tenants where slug = $1`, [tenantB]);
      expect(t.rows[0].placement).toMatchObject({ isolation: 'pool' });

      await app.query('drop view recent');
      await app.end();
      const m2 = (await service.start(
        fx.ctx,
        tenantB,
        { isolation: 'silo' },
        { dryRun: false },
      )) as Migration;
      expect(await finished(fx.t, m2.id, 120_000)).toMatchObject({ state: 'Succeeded' });
      const done = await service.get(fx.ctx, tenantB, m2.id);
      expect(done).toMatchObject({ state: 'CutOver', mode: 'freeze-copy' });
      expect((done.plan as { modeReason: string }).modeReason).toMatch(/without a primary key/);
      expect(done.freeze.durationMs).toBeGreaterThanOrEqual(0);
      const silo = await tenantClient(rid);
      const n = await silo.query('select count(*)::int as n, count(distinct line)::int as d from log');
      expect(n.rows[0]).toEqual({ n: 5000, d: 5000 });
      await silo.end();

      // Retiring drops the kept source; no rollback after it.
      const baseB = tenantB.replace(/-/g, '_');
      const retiring = await service.retire(fx.ctx, tenantB, m2.id);
      expect(await finished(fx.t, retiring.retireWorkflowId!, 60_000)).toMatchObject({ state: 'Succeeded' });
      expect((await service.get(fx.ctx, tenantB, m2.id)).state).toBe('Retired');
      const dp = new pg.Client({ connectionString: defaultDataplaneUrl(fx.t.ownerUrl) });
      dp.on('error', () => undefined);
      await dp.connect();
      const left = await dp.query(
        `select (select count(*) from pg_namespace where nspname = $1)::int as schemas,
                (select count(*) from pg_roles where rolname = $1)::int as roles`,
        [`t_${baseB}`],
      );
      await dp.end();
      expect(left.rows[0]).toEqual({ schemas: 0, roles: 0 });
      await expect(service.rollback(fx.ctx, tenantB, m2.id)).rejects.toMatchObject({
        code: 'migration.rollback_unavailable',
      });
      const stillThere = await tenantClient(rid);
      expect((await stillThere.query('select count(*)::int as n from log')).rows[0].n).toBe(5000);
      await stillThere.end();
    } finally {
      await e.stop();
      await c.stop();
    }
  }, 300_000);
});
