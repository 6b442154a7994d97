import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type TestController,
  tempDataDir,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { killingEngine, stepLog } from '../../test/helpers/killed-engines.js';
import {
  databaseAndContainer,
  movableCustomer,
  startTwoRegions,
  type TwoRegions,
  tenantClient,
} from '../../test/helpers/two-regions.js';
import {
  exited,
  finishedOnEngine,
  logged,
  startWorkflowEngine,
  stepRuns,
  stepsOf,
} from '../../test/helpers/workflows.js';
import { azuriteUnavailableReason } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import type { Consistency } from './failover.js';
import { FAILOVER_STEPS, type Failover, FailoverService } from './failover.service.js';
import { workflowTypes } from './migration-workflows.js';
import { StandbyKeeper } from './standby-keeper.js';

// A region failover (eu's PostgreSQL stopped) whose engine process is SIGKILLed after every step's
// effect, before its checkpoint: each next process resumes the step that died, runs the next and
// dies after it, until the last; the failover ends promoted, switched and verified, once.
const unavailable = skipReason(
  'failover crash test on two PostgreSQL servers and Azurite',
  azuriteUnavailableReason(),
);

const customer = `fk${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    ...movableCustomer(customer, 'Crashing', { standby: { region: 'us', failoverAfterChecks: 2 } }),
    ...databaseAndContainer(tenant),
  ]),
);

describe.skipIf(unavailable)('SIGKILL after every step of a region failover', () => {
  let regions: TwoRegions;
  let c: TestController;
  let env: Record<string, string>;

  beforeAll(async () => {
    regions = await startTwoRegions(fx.t, { ownEu: true, dataDir: true });
    ({ controller: c, env } = regions);
  }, 300_000);

  afterAll(() => regions?.stop());

  it('resumes each step where the process died and ends failed over once, verified', {
    timeout: 600_000,
  }, async () => {
    const service = new FailoverService(fx.t.db);
    const keeper = new StandbyKeeper({ db: fx.t.db, providers: c.providers });
    const resources = async () =>
      (
        await fx.t.owner.query<{ id: string; type: string; phase: string }>(
          `select id, spec->>'type' as type, phase from integration_resources where deleted_at is null`,
        )
      ).rows;
    await until(
      'database and container Ready in eu',
      async () => {
        const r = await resources();
        return r.length === 2 && r.every((x) => x.phase === 'Ready');
      },
      120_000,
    );
    const rid = (await resources()).find((r) => r.type === 'database')!.id;
    const login = (server: string) => tenantClient(fx.t, rid, server);
    const app = await login(regions.euUrl);
    await app.query(`create table things (id integer generated always as identity primary key, v text);
      insert into things (v) select 'v' || g from generate_series(1, 2000) g;`);
    await app.end();

    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    try {
      await keeper.tick();
      await until(
        'standby streaming',
        async () => (await service.standby(fx.ctx, tenant).catch(() => null))?.state === 'Streaming',
        120_000,
      );
      await until(
        'caught up',
        async () => Object.values((await keeper.tick()).measured)[0]?.caughtUp,
        60_000,
      );
    } finally {
      await e.stop();
    }
    await regions.servers.eu!.stop();

    const dataDir = await tempDataDir();
    const log = stepLog(dataDir, 'steps.log');
    const child = (step: string) =>
      killingEngine(fx.t, {
        dataDir,
        log,
        killAt: `after:${step}`,
        env: { CONFIG_ENV: JSON.stringify(env) },
      });
    let running = await child(FAILOVER_STEPS[0]!);
    // The failover policy: the primary unreachable for 2 measurements in a row.
    expect((await keeper.tick()).failedOver).toEqual([]);
    expect((await keeper.tick()).failedOver).toEqual([tenant]);
    const [f] = (await service.list(fx.ctx, tenant)) as [Failover];
    expect(f.reason).toBe('policy: primary unreachable for 2 checks');
    for (const step of FAILOVER_STEPS.slice(1)) {
      expect(await exited(running), step).toBe('SIGKILL');
      running = await child(step);
    }
    expect(await exited(running)).toBe('SIGKILL');
    const last = {
      registry: logged(workflowTypes(fx.t.db, c.providers, defaultDataplaneUrl(fx.t.ownerUrl)), log),
    };
    expect(await finishedOnEngine(fx.t, f.id, last, 120_000)).toMatchObject({ state: 'Succeeded' });
    const runs = stepRuns(log)
      .filter((r) => r[0] === 'failover.region')
      .map((r) => r[1]);
    // Every step ran twice: in the process that died after it, and again in the next.
    expect(runs).toEqual(FAILOVER_STEPS.flatMap((s) => [s, s]));
    expect((await stepsOf(fx.t, f.id)).every((x) => x.state === 'Completed')).toBe(true);
    const done = await service.get(fx.ctx, tenant, f.id);
    expect(done.state).toBe('FailedOver');
    expect((done.consistency as Consistency).consistent).toBe(true);
    const us = await login(regions.usUrl);
    expect((await us.query('select count(*)::int as n from things')).rows[0].n).toBe(2000);
    expect((await us.query(`insert into things (v) values ('after') returning id`)).rows[0].id).toBe(2001);
    await us.end();
    expect(
      (
        await fx.t.owner.query(
          `select count(*)::int as n from outbox_events where type = 'dev.tenantry.tenant.failed_over.v1'`,
        )
      ).rows[0].n,
    ).toBe(1);
    expect(
      (
        await fx.t.owner.query(
          `select count(*)::int as n from audit_records where action = 'failover.promoted'`,
        )
      ).rows[0].n,
    ).toBe(1);
  });
});
