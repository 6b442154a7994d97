import { randomBytes } from 'node:crypto';
import { BlobServiceClient } from '@azure/storage-blob';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestController, until, useControllerTestDatabase } from '../../test/helpers/controller.js';
import { credentialsOf } from '../../test/helpers/credentials.js';
import {
  tenantClient as appClient,
  databaseAndContainer,
  doc,
  movableCustomer,
  movableTenant,
  startTwoRegions,
  type TwoRegions,
} from '../../test/helpers/two-regions.js';
import { finished, startWorkflowEngine, stepsOf } from '../../test/helpers/workflows.js';
import { azuriteUnavailableReason } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { secretCipherFor } from '../secrets/index.js';
import type { Consistency } from './failover.js';
import { type Failover, type FailoverPlanView, FailoverService } from './failover.service.js';
import { type Migration, MigrationsService } from './migrations.service.js';
import { StandbyKeeper } from './standby-keeper.js';

// Region failover (issue 19) on real engines: two PostgreSQL servers of their own as the eu and us
// data planes (the eu one is really stopped), an Azurite storage account per region.
const unavailable = skipReason(
  'region failover on two PostgreSQL servers and Azurite',
  azuriteUnavailableReason(),
);

const customer = `fo${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const other = `${customer}n`;
const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    ...movableCustomer(customer, 'Failing', { standby: { region: 'us' } }),
    ...databaseAndContainer(tenant),
    doc('Customer', other, { displayName: 'Standing', shortCode: other }),
    movableTenant(other),
  ]),
);

describe.skipIf(unavailable)('region failover eu → us with the eu data plane stopped', () => {
  let regions: TwoRegions;
  let c: TestController;
  let euUrl: string;
  let usUrl: string;

  beforeAll(async () => {
    regions = await startTwoRegions(fx.t, { ownEu: true });
    ({ controller: c, euUrl, usUrl } = regions);
  }, 300_000);

  afterAll(() => regions?.stop());

  const rows = async () =>
    (
      await fx.t.owner.query<{ id: string; type: string; physical_name: string; phase: string }>(
        `select r.id, r.spec->>'type' as type, r.physical_name, r.phase from integration_resources r
         join tenants t on t.id = r.tenant_id where r.deleted_at is null and t.slug = $1`,
        [tenant],
      )
    ).rows;

  const secret = async (resourceId: string) =>
    new SecretStore(fx.t.db, secretCipherFor(fx.t.db, fx.t.config)).get(resourceId);

  const tenantClient = (resourceId: string, server: string) => appClient(fx.t, resourceId, server);

  it('keeps a standby in us, promotes it with eu stopped: every replicated row, sequences continue, events and audit', {
    timeout: 300_000,
  }, async () => {
    const service = new FailoverService(fx.t.db);
    const keeper = new StandbyKeeper({ db: fx.t.db, providers: c.providers });
    await until(
      'database and container Ready in eu',
      async () => {
        const r = await rows();
        return r.length === 2 && r.every((x) => x.phase === 'Ready');
      },
      120_000,
    );
    const byType = Object.fromEntries((await rows()).map((r) => [r.type, r]));
    const db = byType.database!;
    const container = byType['blob-container']!.physical_name;
    const primaryPassword = (await secret(db.id))?.password;

    const app = await tenantClient(db.id, euUrl);
    await app.query(`
      create table orders (id bigserial primary key, n integer not null, payload text);
      create table notes (k text primary key, v jsonb not null default '{}');
      insert into orders (n, payload) select g, md5(g::text) from generate_series(1, 5000) g;
      insert into notes (k) select 'k' || g from generate_series(1, 300) g;`);
    const euBlobs = BlobServiceClient.fromConnectionString(
      regions.blobs.eu.connectionString,
    ).getContainerClient(container);
    const payloads: Record<string, Buffer> = {};
    for (let i = 0; i < 3; i++) {
      payloads[`docs/${i}.bin`] = randomBytes(5_000 + i * 1_000);
      await euBlobs.getBlockBlobClient(`docs/${i}.bin`).uploadData(payloads[`docs/${i}.bin`]!);
    }

    // A tenant without a standby has nothing to fail over to.
    await expect(service.start(fx.ctx, `${other}-eu-dev`, {}, { dryRun: false })).rejects.toMatchObject({
      code: 'failover.no_standby',
      status: 409,
    });

    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    try {
      // The keeper starts the standby the tenant's spec names; it streams once established.
      expect((await keeper.tick()).started).toEqual([tenant]);
      const standbyWf = (
        await fx.t.owner.query<{ workflow_id: string }>(
          'select workflow_id from tenant_standbys s join tenants t on t.id = s.tenant_id where t.slug = $1',
          [tenant],
        )
      ).rows[0]!.workflow_id;
      expect(await finished(fx.t, standbyWf, 120_000)).toMatchObject({ state: 'Succeeded' });
      expect((await service.standby(fx.ctx, tenant)).state).toBe('Streaming');
      // Never measured yet: the lag is unknown, and a failover is refused for it.
      await expect(service.start(fx.ctx, tenant, {}, { dryRun: true })).rejects.toMatchObject({
        code: 'failover.lag_unknown',
        status: 409,
      });

      // A writer through the tenant's credentials while the keeper measures; then caught up.
      const acked: number[] = [];
      let writing = true;
      const writer = (async () => {
        while (writing) {
          const r = await app.query<{ id: string }>(
            `insert into orders (n, payload) values ($1, 'written') returning id`,
            [acked.length],
          );
          acked.push(Number(r.rows[0]!.id));
          await app.query(`update notes set v = jsonb_build_object('n', $1::int) where k = 'k1'`, [
            acked.length,
          ]);
        }
      })();
      await keeper.tick();
      await new Promise((res) => setTimeout(res, 1_000));
      writing = false;
      await writer;
      await app.end();
      const late = randomBytes(7_000);
      await euBlobs.getBlockBlobClient('docs/late.bin').uploadData(late);
      await until(
        'the standby caught up (lag 0)',
        async () => {
          const m = Object.values((await keeper.tick()).measured)[0];
          return m?.caughtUp && m.lagBytes === 0;
        },
        60_000,
      );
      const standby = await service.standby(fx.ctx, tenant);
      expect(standby).toMatchObject({
        region: 'us',
        state: 'Streaming',
        lagBytes: 0,
        lagSeconds: 0,
        error: null,
      });
      expect(standby.lastSyncAt).not.toBeNull();
      expect(Object.values(standby.blobs as Record<string, { blobs: number; equal: boolean }>)).toEqual([
        expect.objectContaining({ blobs: 4, equal: true }),
      ]);
      const known = standby.lastKnown as { databases: Record<string, { rows: Record<string, number> }> };
      expect(known.databases[db.id]!.rows).toEqual({ notes: 300, orders: 5000 + acked.length });
      expect(acked.length).toBeGreaterThan(10);

      // Refusals name their rule; a dry run shows the plan and changes nothing.
      await expect(service.start(fx.ctx, tenant, { region: 'eu' }, { dryRun: false })).rejects.toMatchObject({
        code: 'failover.not_standby_region',
        status: 422,
      });
      const dry = (await service.start(
        fx.ctx,
        tenant,
        { region: 'us' },
        { dryRun: true },
      )) as FailoverPlanView;
      expect(dry).toMatchObject({
        dryRun: true,
        from: { region: 'eu', cell: `${customer}-eu` },
        to: { region: 'us', cell: `${customer}-us` },
        standby: { lagBytes: 0 },
      });
      expect(dry.steps).toContain('promote-standby');
      expect((await fx.t.owner.query('select count(*)::int as n from tenant_failovers')).rows[0].n).toBe(0);

      // The eu data plane goes down, really.
      await regions.servers.eu!.stop();
      await expect(
        new pg.Client({ connectionString: euUrl, connectionTimeoutMillis: 2_000 }).connect(),
      ).rejects.toThrow();

      // Measured now: the lag is unknown, the data-loss window runs from the last sync.
      const down = await keeper.tick();
      expect(down.failedOver).toEqual([]); // no failover policy in this tenant's spec
      const unknown = await service.standby(fx.ctx, tenant);
      expect(unknown).toMatchObject({ lagBytes: null, lastSyncAt: standby.lastSyncAt });
      expect(unknown.error).toMatch(/^primary eu unreachable/);
      expect(unknown.lagSeconds).toBeGreaterThan(0);

      const f = (await service.start(fx.ctx, tenant, { region: 'us' }, { dryRun: false })) as Failover;
      expect(f).toMatchObject({ state: 'Running', from: { region: 'eu' }, to: { region: 'us' } });
      expect(f.standby.dataLossWindowSeconds).toBeGreaterThanOrEqual(0);
      // A second request while it runs is refused.
      await expect(service.start(fx.ctx, tenant, {}, { dryRun: false })).rejects.toMatchObject({
        status: 409,
      });
      expect(await finished(fx.t, f.id, 180_000)).toMatchObject({ state: 'Succeeded' });
      expect((await stepsOf(fx.t, f.id)).map((s) => `${s.name}:${s.state}`)).toEqual([
        'check-standby:Completed',
        'fence-primary:Completed',
        'promote-standby:Completed',
        'rotate-credentials:Completed',
        'switch-placement:Completed',
        'sync-blobs:Completed',
        'verify:Completed',
      ]);
      const done = await service.get(fx.ctx, tenant, f.id);
      expect(done.state).toBe('FailedOver');
      expect(done.fencedAt).toBeNull();
      expect(Object.values(done.fence as Record<string, string>)[0]).toMatch(/^unreachable/);
      const cons = done.consistency as Consistency;
      expect(cons.consistent).toBe(true);
      expect(cons.databases[db.id]!.credentialsWork).toBe(true);
      expect(cons.databases[db.id]!.tables).toEqual([
        { table: 'notes', lastKnownRows: 300, rows: 300, delta: 0 },
        { table: 'orders', lastKnownRows: 5000 + acked.length, rows: 5000 + acked.length, delta: 0 },
      ]);
      expect(Object.values(cons.blobs)).toEqual([{ blobs: 4, equal: true }]);

      // The tenant serves from us, through its rotated credentials: every acknowledged row, and
      // the sequence continues past them.
      const rotated = await secret(db.id);
      expect(rotated?.password).not.toBe(primaryPassword);
      // The credentials the API hands out: the rotated ones, on us's server.
      expect(await credentialsOf(fx, db.id)).toMatchObject({
        port: Number(new URL(usUrl).port),
        password: rotated?.password,
      });
      const us = await tenantClient(db.id, usUrl);
      const ids = (
        await us.query<{ id: string }>(`select id from orders where payload = 'written' order by id`)
      ).rows.map((r) => Number(r.id));
      expect(ids).toEqual(acked);
      expect((await us.query(`select v from notes where k = 'k1'`)).rows[0].v).toEqual({ n: acked.length });
      const next = Number(
        (await us.query<{ id: string }>(`insert into orders (n, payload) values (-1, 'after') returning id`))
          .rows[0]!.id,
      );
      expect(next).toBeGreaterThan(Math.max(...acked));
      await us.end();
      const usBlobs = BlobServiceClient.fromConnectionString(
        regions.blobs.us.connectionString,
      ).getContainerClient(container);
      for (const [name, body] of Object.entries({ ...payloads, 'docs/late.bin': late }))
        expect((await usBlobs.getBlobClient(name).downloadToBuffer()).equals(body)).toBe(true);

      const t = await fx.t.owner.query(`select region, placement, spec from tenants where slug = $1`, [
        tenant,
      ]);
      expect(t.rows[0]).toMatchObject({
        region: 'us',
        placement: { region: 'us', cell: `${customer}-us` },
        spec: { region: 'us' },
      });
      expect(t.rows[0].spec.standby).toBeUndefined();
      const ev = await fx.t.owner.query(
        `select data from outbox_events where type = 'dev.tenantry.tenant.failed_over.v1'`,
      );
      expect(ev.rows).toHaveLength(1);
      expect(ev.rows[0].data.previous.placement).toMatchObject({ region: 'eu' });
      expect(ev.rows[0].data.current.placement).toMatchObject({ region: 'us' });
      const audit = await fx.t.owner.query<{ action: string; outcome: string }>(
        `select action, outcome from audit_records where target_id = $1 order by time`,
        [f.id],
      );
      expect(audit.rows).toEqual([
        { action: 'failover.start', outcome: 'success' },
        { action: 'failover.promoted', outcome: 'success' },
        { action: 'failover.verified', outcome: 'success' },
      ]);
      await until(
        'resources Ready in us',
        async () => (await rows()).every((r) => r.phase === 'Ready'),
        60_000,
      );

      // eu comes back: the keeper fences it (its role may not log in; slot and publication gone).
      await regions.servers.eu!.start();
      await until('eu fenced', async () => (await keeper.tick()).fenced.includes(f.id), 60_000);
      const dp = new pg.Client({ connectionString: euUrl });
      dp.on('error', () => undefined);
      await dp.connect();
      expect(
        (await dp.query('select rolcanlogin from pg_roles where rolname = $1', [db.physical_name])).rows[0],
      ).toEqual({ rolcanlogin: false });
      expect((await dp.query('select count(*)::int as n from pg_replication_slots')).rows[0].n).toBe(0);
      await dp.end();
      expect((await service.get(fx.ctx, tenant, f.id)).fencedAt).not.toBeNull();

      // Failback is a region migration back to eu: the writes made in us go with it.
      const migrations = new MigrationsService(fx.t.db);
      const back = (await migrations.start(fx.ctx, tenant, { region: 'eu' }, { dryRun: false })) as Migration;
      expect(await finished(fx.t, back.id, 180_000)).toMatchObject({ state: 'Succeeded' });
      const eu = await tenantClient(db.id, euUrl);
      expect((await eu.query('select count(*)::int as n from orders')).rows[0].n).toBe(
        5000 + acked.length + 1,
      );
      expect(
        (await eu.query(`select count(*)::int as n from orders where payload = 'after'`)).rows[0].n,
      ).toBe(1);
      await eu.end();

      // A standby named again once the migration's kept source in us is retired; unnamed, it goes.
      expect(
        await finished(fx.t, (await migrations.retire(fx.ctx, tenant, back.id)).retireWorkflowId!, 120_000),
      ).toMatchObject({ state: 'Succeeded' });
      const manifest = (standby?: { region: string }) => movableTenant(customer, standby ? { standby } : {});
      await fx.registry.apply(fx.ctx, [manifest({ region: 'us' })]);
      expect((await keeper.tick()).started).toEqual([tenant]);
      const again = (await service.standby(fx.ctx, tenant)).workflowId!;
      expect(await finished(fx.t, again, 120_000)).toMatchObject({ state: 'Succeeded' });
      await fx.registry.apply(fx.ctx, [manifest()]);
      expect((await keeper.tick()).retired).toHaveLength(1);
      await expect(service.standby(fx.ctx, tenant)).rejects.toMatchObject({ code: 'standby.not_found' });
      const left = new pg.Client({ connectionString: usUrl });
      left.on('error', () => undefined);
      await left.connect();
      expect(
        (await left.query('select 1 from pg_namespace where nspname = $1', [db.physical_name])).rowCount,
      ).toBe(0);
      expect((await left.query('select count(*)::int as n from pg_subscription')).rows[0].n).toBe(0);
      await left.end();
    } finally {
      await e.stop();
    }
  });
});
