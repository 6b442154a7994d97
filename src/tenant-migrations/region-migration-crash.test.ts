import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type TestController,
  tempDataDir,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import {
  doc,
  movableTenant,
  regionCell,
  startTwoRegions,
  type TwoRegions,
  tenantClient,
} from '../../test/helpers/two-regions.js';
import {
  exited,
  finished,
  logged,
  spawnEngine,
  startWorkflowEngine,
  stepRuns,
  stepsOf,
} from '../../test/helpers/workflows.js';
import { azuriteUnavailableReason } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { workflowTypes } from './migration-workflows.js';
import { type Migration, MigrationsService, REGION_STEPS } from './migrations.service.js';

// Region migration eu → us killed (SIGKILL) at every step boundary (issue 19): a second engine
// resumes it, it ends cut over and verified, and the rollback brings the tenant back for the next
// case. Two PostgreSQL servers and two Azurite accounts; the topics' move is in region-migration.test.ts
// (a topic deleted and made again at once, per case, is Kafka's own waiting, not the migration's).
const unavailable = skipReason(
  'region migration crash test on two PostgreSQL servers and Azurite',
  azuriteUnavailableReason(),
);

/**
 * The engines of this process: nothing takes a workflow over from them, so their lease can be long.
 * A 1 s lease is lost at a load of 20 on 2 cores (the renewal comes late: "reconcile leases lost to
 * another worker" a dozen times a run), and another worker of the engine then runs the step again
 * beside the one still running it.
 */
const LIVE_ENGINE = { leaseMs: 30_000 };

const customer = `rk${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    regionCell(`${customer}-eu`, 'eu'),
    regionCell(`${customer}-us`, 'us'),
    doc('Customer', customer, { displayName: 'Crashing', shortCode: customer }),
    movableTenant(customer),
    doc('System', 'plan', { displayName: 'Plan', serviceId: 'plan' }),
    doc('Deployment', undefined, { tenant, system: 'plan' }),
    doc('IntegrationResource', undefined, {
      scope: { tenant },
      type: 'database',
      database: { isolation: 'pool' },
    }),
    doc('IntegrationResource', undefined, { scope: { deployment }, type: 'blob-container' }),
  ]),
);

describe.skipIf(unavailable)('SIGKILL at every step boundary of a region migration', () => {
  let regions: TwoRegions;
  let blobs: TwoRegions['blobs'];
  let c: TestController;
  let usUrl: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    regions = await startTwoRegions(fx.t, { dataDir: true });
    ({ controller: c, blobs, usUrl, env } = regions);
  }, 300_000);

  afterAll(() => regions?.stop());

  /** The tenant's rows, through its credentials, on the server of the region it is placed in. */
  async function tenantRows(resourceId: string): Promise<number> {
    const region = (await fx.t.owner.query(`select region from tenants where slug = $1`, [tenant])).rows[0]
      .region as string;
    const client = await tenantClient(fx.t, resourceId, region === 'us' ? usUrl : regions.euUrl);
    try {
      return (await client.query('select count(*)::int as n from things')).rows[0].n;
    } finally {
      await client.end();
    }
  }

  it('resumes on another engine where the process died, ends cut over and verified, and rolls back', {
    timeout: 1_200_000,
  }, async () => {
    const service = new MigrationsService(fx.t.db);
    const resources = async () =>
      (
        await fx.t.owner.query<{ id: string; type: string; physical_name: string; phase: string }>(
          `select id, spec->>'type' as type, physical_name, phase from integration_resources where deleted_at is null`,
        )
      ).rows;
    await until(
      'database and container Ready in eu',
      async () => (await resources()).every((r) => r.phase === 'Ready'),
      120_000,
    );
    const byType = Object.fromEntries((await resources()).map((r) => [r.type, r]));
    const rid = byType.database!.id;
    const container = byType['blob-container']!.physical_name;
    const app = await tenantClient(fx.t, rid, regions.euUrl);
    await app.query(`create table things (id bigserial primary key, v text);
      insert into things (v) select 'v' || g from generate_series(1, 2000) g;`);
    await app.end();
    const euBlobs = BlobServiceClient.fromConnectionString(blobs.eu.connectionString).getContainerClient(
      container,
    );
    await euBlobs.getBlockBlobClient('a.bin').uploadData(randomBytes(3_000));
    await euBlobs.getBlockBlobClient('b.bin').uploadData(randomBytes(5_000));
    const usBlobs = BlobServiceClient.fromConnectionString(blobs.us.connectionString).getContainerClient(
      container,
    );

    const dataDir = await tempDataDir();
    const prefixes: string[] = [];
    const cases = [...REGION_STEPS.map((step) => `after:${step}`), 'before:cut-over'];
    for (const [n, killAt] of cases.entries()) {
      const [when, step] = killAt.split(':') as [string, string];
      const log = path.join(dataDir, `steps-${n}.log`);
      fs.writeFileSync(log, '');
      const child = await spawnEngine({
        APP_URL: fx.t.appUrl,
        PLATFORM_URL: fx.t.platformUrl,
        DATAPLANE_URL: defaultDataplaneUrl(fx.t.ownerUrl),
        DATA_DIR: dataDir,
        CONFIG_ENV: JSON.stringify(env),
        STEP_LOG: log,
        KILL_AT: killAt,
      });
      const m = (await service.start(
        fx.ctx,
        tenant,
        { region: 'us', rollbackWindowSeconds: 3600 },
        { dryRun: false },
      )) as Migration;
      prefixes.push(`tenantry_r_${m.id.replace(/-/g, '').slice(0, 12)}_%`);
      expect(await exited(child), killAt).toBe('SIGKILL');
      const e = startWorkflowEngine(fx.t, {
        registry: logged(workflowTypes(fx.t.db, c.providers, defaultDataplaneUrl(fx.t.ownerUrl)), log),
        config: LIVE_ENGINE,
      });
      try {
        expect(await finished(fx.t, m.id, 120_000), killAt).toMatchObject({ state: 'Succeeded' });
      } finally {
        await e.stop();
      }
      const runs = stepRuns(log).map((r) => r[1]);
      const at = REGION_STEPS.indexOf(step);
      // The step the process died in (after its effect) runs again; no other step runs twice
      // (an attempt that failed and was retried is not counted: steps run at least once).
      expect(runs, killAt).toEqual(
        when === 'before' ? REGION_STEPS : [...REGION_STEPS.slice(0, at + 1), ...REGION_STEPS.slice(at)],
      );
      expect(
        (await stepsOf(fx.t, m.id)).every((x) => x.state === 'Completed'),
        killAt,
      ).toBe(true);
      const done = await service.get(fx.ctx, tenant, m.id);
      expect(done.state, killAt).toBe('CutOver');
      const v = done.verification as {
        databases: Record<string, { equal: boolean }>;
        blobs: Record<string, { equal: boolean; blobs: number }>;
      };
      expect(Object.values(v.databases), killAt).toEqual([expect.objectContaining({ equal: true })]);
      expect(Object.values(v.blobs), killAt).toEqual([expect.objectContaining({ equal: true, blobs: 2 })]);
      expect(await tenantRows(rid), killAt).toBe(2000);
      let inUs = 0;
      for await (const b of usBlobs.listBlobsFlat()) if (b.name.endsWith('.bin')) inUs++;
      expect(inUs, killAt).toBe(2);

      // Back to eu for the next case.
      const rb = await service.rollback(fx.ctx, tenant, m.id);
      const e2 = startWorkflowEngine(fx.t, { providers: c.providers, config: LIVE_ENGINE });
      try {
        expect(await finished(fx.t, rb.rollbackWorkflowId!, 120_000), `${killAt} rollback`).toMatchObject({
          state: 'Succeeded',
        });
      } finally {
        await e2.stop();
      }
      expect(await tenantRows(rid), `${killAt} rollback`).toBe(2000);
      await until(
        `${killAt}: resources Ready in eu`,
        async () => (await resources()).every((r) => r.phase === 'Ready'),
        60_000,
      );
    }
    // Nothing of the replications, or of their checksums' tracking, is left on the eu server.
    const dp = new pg.Client({ connectionString: defaultDataplaneUrl(fx.t.ownerUrl) });
    await dp.connect();
    const left = await dp.query(
      `select (select count(*) from pg_replication_slots where slot_name like any ($1))::int as slots,
              (select count(*) from pg_publication where pubname like any ($1))::int as pubs,
              (select count(*) from pg_trigger where not tgisinternal)::int as triggers`,
      [prefixes],
    );
    await dp.end();
    expect(left.rows[0]).toEqual({ slots: 0, pubs: 0, triggers: 0 });
  });
});
