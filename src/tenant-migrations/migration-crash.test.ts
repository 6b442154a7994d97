import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  cellManifest,
  poolTenantManifests,
  startController,
  tempDataDir,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { killingEngine, runsAfterKill, stepLog } from '../../test/helpers/killed-engines.js';
import { exited, finishedOnEngine, logged, stepRuns, stepsOf } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { secretCipherFor } from '../secrets/index.js';
import { workflowTypes } from './migration-workflows.js';
import { ISOLATION_STEPS, type Migration, MigrationsService } from './migrations.service.js';
import { withClient } from './pg-copy.js';

const customer = `mk${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    cellManifest(`${customer}-pool`, 'shared'),
    cellManifest(`${customer}-silo`, 'dedicated'),
    ...poolTenantManifests(customer, 'Crash'),
  ]),
);

/** A query as the tenant, through its connection secret, wherever it lives now. */
async function asTenant(resourceId: string, text: string): Promise<pg.QueryResult> {
  const s = await new SecretStore(fx.t.db, secretCipherFor(fx.t.db, fx.t.config)).get(resourceId);
  const r = await fx.t.owner.query(`select physical_name, spec from integration_resources where id = $1`, [
    resourceId,
  ]);
  const url = new URL(defaultDataplaneUrl(fx.t.ownerUrl));
  if (r.rows[0].spec.database.isolation === 'silo') url.pathname = `/${r.rows[0].physical_name}`;
  url.username = s?.username ?? '';
  url.password = s?.password ?? '';
  const c = new pg.Client({ connectionString: url.toString() });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await c.query(text);
  } finally {
    await c.end();
  }
}

/** Rows as the tenant sees them. */
const tenantRows = async (resourceId: string): Promise<number> =>
  (await asTenant(resourceId, 'select count(*)::int as n from things')).rows[0].n;

/** The steps of the pool → silo rollback, as its workflow runs them. */
const ROLLBACK_STEPS = [
  'check-window',
  'copy-back-bulk',
  'freeze-writes',
  'copy-back',
  'restore-source',
  'drop-target',
];

describe('SIGKILL at every step boundary of a migration', () => {
  it('pool → silo resumes on another engine where the process died and ends in one consistent state', {
    timeout: 900_000,
  }, async () => {
    const dataDir = await tempDataDir();
    const c = await startController(fx.t, { dataDir });
    const service = new MigrationsService(fx.t.db);
    try {
      const rid = (
        await fx.t.owner.query(`select id from integration_resources where slug = $1`, [`${tenant}.database`])
      ).rows[0].id as string;
      await until('database Ready', async () => {
        const r = await fx.t.owner.query(`select phase from integration_resources where id = $1`, [rid]);
        return r.rows[0].phase === 'Ready';
      });
      const s = await new SecretStore(fx.t.db, secretCipherFor(fx.t.db, fx.t.config)).get(rid);
      const url = new URL(defaultDataplaneUrl(fx.t.ownerUrl));
      url.username = s?.username ?? '';
      url.password = s?.password ?? '';
      const app = new pg.Client({ connectionString: url.toString() });
      await app.connect();
      await app.query(`create table things (id bigserial primary key, v text);
        insert into things (v) select 'v' || g from generate_series(1, 2000) g;`);
      await app.end();

      /** The workflows' steps, each run logged to `log`, on an engine of this process. */
      const loggedTypes = (log: string) => ({
        registry: logged(workflowTypes(fx.t.db, c.providers, defaultDataplaneUrl(fx.t.ownerUrl)), log),
      });
      const cases = [...ISOLATION_STEPS.map((step) => `after:${step}`), 'before:cut-over'];
      let rows = 2000;
      const prefixes: string[] = [];
      for (const [n, killAt] of cases.entries()) {
        const log = stepLog(dataDir, `steps-${n}.log`);
        const child = await killingEngine(fx.t, { dataDir, log, killAt });
        const m = (await service.start(
          fx.ctx,
          tenant,
          { isolation: 'silo' },
          { dryRun: false },
        )) as Migration;
        prefixes.push(`tenantry_m_${m.id.replace(/-/g, '').slice(0, 12)}_%`);
        expect(await exited(child), killAt).toBe('SIGKILL');
        expect(await finishedOnEngine(fx.t, m.id, loggedTypes(log), 120_000), killAt).toMatchObject({
          state: 'Succeeded',
        });
        // The step the process died in (after its effect) runs again; no other step runs twice.
        expect(
          stepRuns(log).map((r) => r[1]),
          killAt,
        ).toEqual(runsAfterKill(ISOLATION_STEPS, killAt));
        expect(
          (await stepsOf(fx.t, m.id)).every((x) => x.state === 'Completed'),
          killAt,
        ).toBe(true);
        const done = await service.get(fx.ctx, tenant, m.id);
        expect(done.state, killAt).toBe('CutOver');
        expect(Object.values(done.verification as Record<string, { equal: boolean }>)[0]?.equal, killAt).toBe(
          true,
        );
        expect(await tenantRows(rid), killAt).toBe(rows);

        // Back to the pool for the next case, with a row written on the silo, the rollback killed
        // after one of its steps (each of them in turn) and resumed by another engine.
        await asTenant(rid, `insert into things (v) values ('on the silo ${n}')`);
        rows++;
        const rbStep = ROLLBACK_STEPS[n % ROLLBACK_STEPS.length]!;
        const rbLog = stepLog(dataDir, `rollback-${n}.log`);
        const killer = await killingEngine(fx.t, { dataDir, log: rbLog, killAt: `after:${rbStep}` });
        const rb = await service.rollback(fx.ctx, tenant, m.id);
        expect(await exited(killer), `rollback after:${rbStep}`).toBe('SIGKILL');
        expect(
          await finishedOnEngine(fx.t, rb.rollbackWorkflowId!, loggedTypes(rbLog), 120_000),
          `rollback after:${rbStep}`,
        ).toMatchObject({ state: 'Succeeded' });
        expect(
          stepRuns(rbLog).map((r) => r[1]),
          `rollback after:${rbStep}`,
        ).toEqual(runsAfterKill(ROLLBACK_STEPS, `after:${rbStep}`));
        expect((await service.get(fx.ctx, tenant, m.id)).state, `rollback after:${rbStep}`).toBe(
          'RolledBack',
        );
        expect(await tenantRows(rid), `rollback after:${rbStep}`).toBe(rows);
        const left = await withClient(defaultDataplaneUrl(fx.t.ownerUrl), (dp) =>
          dp.query(
            `select count(*)::int as n from pg_trigger t join pg_class c on c.oid = t.tgrelid
             join pg_namespace s on s.oid = c.relnamespace where s.nspname = $1 and not t.tgisinternal`,
            [`t_${tenant.replace(/-/g, '_')}`],
          ),
        );
        expect(left.rows[0].n, `rollback after:${rbStep}: change tracking left on the pool`).toBe(0);
      }
      const dp = new pg.Client({ connectionString: defaultDataplaneUrl(fx.t.ownerUrl) });
      await dp.connect();
      const left = await dp.query(
        `select (select count(*) from pg_replication_slots where slot_name like any ($1))::int as slots,
                (select count(*) from pg_publication where pubname like any ($1))::int as pubs`,
        [prefixes],
      );
      expect(left.rows[0]).toEqual({ slots: 0, pubs: 0 });
      await dp.end();
    } finally {
      await c.stop();
    }
  });
});
