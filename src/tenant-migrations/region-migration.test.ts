import { randomBytes } from 'node:crypto';
import { BlobServiceClient } from '@azure/storage-blob';
import kafkajs from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestController, until, useControllerTestDatabase } from '../../test/helpers/controller.js';
import { credentialsOf } from '../../test/helpers/credentials.js';
import {
  tenantClient as appClient,
  doc,
  movableCustomer,
  startTwoRegions,
  type TwoRegions,
} from '../../test/helpers/two-regions.js';
import { finished, startWorkflowEngine, stepsOf } from '../../test/helpers/workflows.js';
import { azuriteUnavailableReason } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { type KafkaBroker, kafkaUnavailableReason } from '../../test/infra/kafka-broker.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { type Migration, MigrationsService } from './migrations.service.js';

const { Kafka, logLevel, AclResourceTypes, AclOperationTypes, AclPermissionTypes, ResourcePatternTypes } =
  kafkajs;

// Region migration eu → us (issue 19) on real engines: two PostgreSQL servers as the two regions'
// data planes, an Azurite storage account and a Kafka broker per region.
const unavailable = skipReason(
  'region migration on two PostgreSQL servers, Azurite and Kafka',
  (await kafkaUnavailableReason()) ?? azuriteUnavailableReason(),
);

const customer = `rg${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const base = tenant.replace(/-/g, '_');
const deployment = `${tenant}-plan`;
const stay = `${customer}s`;
const topicSpec = {
  domain: 'supply-chain',
  subdomain: 'transactions',
  event: 'order-proposals',
  version: 'v1',
  access: 'pub',
  partitions: 2,
  consumers: [deployment],
};

const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    ...movableCustomer(customer, 'Moving'),
    doc('System', 'plan', { displayName: 'Plan', serviceId: 'plan' }),
    doc('Deployment', undefined, { tenant, system: 'plan' }),
    doc('IntegrationResource', undefined, {
      scope: { tenant },
      type: 'database',
      database: { isolation: 'pool' },
    }),
    doc('IntegrationResource', undefined, { scope: { deployment }, type: 'blob-container' }),
    doc('IntegrationResource', undefined, {
      scope: { deployment },
      type: 'kafka-topic',
      kafkaTopic: topicSpec,
    }),
    doc('Customer', stay, { displayName: 'Resident', shortCode: stay }),
    doc('Tenant', undefined, { customer: stay, region: 'eu', environmentType: 'dev', isolation: 'pool' }),
  ]),
);

describe.skipIf(unavailable)('region migration eu → us on real engines', () => {
  let regions: TwoRegions;
  let brokers: { eu: KafkaBroker; us: KafkaBroker };
  let blobs: TwoRegions['blobs'];
  let c: TestController;
  let usUrl: string;

  beforeAll(async () => {
    regions = await startTwoRegions(fx.t, { kafkaUsers: [deployment] });
    ({ controller: c, blobs, usUrl } = regions);
    brokers = regions.brokers!;
  }, 300_000);

  afterAll(() => regions?.stop());

  const rows = async () =>
    (
      await fx.t.owner.query<{ id: string; type: string; physical_name: string; phase: string }>(
        `select id, spec->>'type' as type, physical_name, phase from integration_resources where deleted_at is null`,
      )
    ).rows;

  const tenantClient = (resourceId: string, server: string) => appClient(fx.t, resourceId, server);

  it('refuses a residency-forbidden region before anything happens; moves database, blobs and topics to us and retires eu', {
    timeout: 300_000,
  }, async () => {
    const service = new MigrationsService(fx.t.db);
    await expect(
      service.start(fx.ctx, `${stay}-eu-dev`, { region: 'us' }, { dryRun: false }),
    ).rejects.toMatchObject({
      code: 'placement.residency',
      status: 422,
      errors: [{ pointer: '/region' }],
    });
    await expect(
      service.start(fx.ctx, tenant, { region: 'us', isolation: 'silo' }, { dryRun: false }),
    ).rejects.toMatchObject({ code: 'migration.one_change', status: 422 });
    expect((await fx.t.owner.query('select count(*)::int as n from tenant_migrations')).rows[0].n).toBe(0);

    await until(
      'database, container and topic Ready in eu',
      async () => (await rows()).every((r) => r.phase === 'Ready'),
      120_000,
    );
    const byType = Object.fromEntries((await rows()).map((r) => [r.type, r]));
    const db = byType.database!;
    const container = byType['blob-container']!.physical_name;
    const topic = byType['kafka-topic']!.physical_name;

    // The tenant's data in eu: rows through its own credentials, blobs in eu's account.
    const euServer = defaultDataplaneUrl(fx.t.ownerUrl);
    const app = await tenantClient(db.id, euServer);
    await app.query(`
      create table orders (id bigserial primary key, n integer not null unique, payload text);
      create table notes (k text primary key, v jsonb not null default '{}');
      insert into orders (n, payload) select g, md5(g::text) from generate_series(1, 20000) g;
      insert into notes (k, v) select 'k' || g, jsonb_build_object('g', g) from generate_series(1, 5000) g;`);
    await app.end();
    const euBlobs = BlobServiceClient.fromConnectionString(blobs.eu.connectionString).getContainerClient(
      container,
    );
    const payloads: Record<string, Buffer> = {};
    for (let i = 0; i < 5; i++) {
      payloads[`docs/${i}.bin`] = randomBytes(10_000 + i * 5_000);
      await euBlobs.getBlockBlobClient(`docs/${i}.bin`).uploadData(payloads[`docs/${i}.bin`]!);
    }

    const dry = await service.start(fx.ctx, tenant, { region: 'us' }, { dryRun: true });
    expect(dry).toMatchObject({
      dryRun: true,
      from: { region: 'eu' },
      to: { region: 'us', cell: `${customer}-us` },
    });
    expect((await fx.t.owner.query('select count(*)::int as n from tenant_migrations')).rows[0].n).toBe(0);

    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    try {
      const m = (await service.start(
        fx.ctx,
        tenant,
        { region: 'us', rollbackWindowSeconds: 3600 },
        { dryRun: false },
      )) as Migration;
      expect(m).toMatchObject({ kind: 'region', state: 'Running' });
      expect(await finished(fx.t, m.id, 180_000)).toMatchObject({ state: 'Succeeded' });
      expect((await stepsOf(fx.t, m.id)).every((s) => s.state === 'Completed')).toBe(true);
      const done = await service.get(fx.ctx, tenant, m.id);
      expect(done).toMatchObject({
        state: 'CutOver',
        mode: 'logical-replication',
        from: { region: 'eu' },
        to: { region: 'us' },
      });
      expect(done.freeze.durationMs).toBeGreaterThanOrEqual(0);
      const v = done.verification as {
        databases: Record<string, { equal: boolean }>;
        blobs: Record<string, { equal: boolean; blobs: number }>;
        topics: Record<string, { exists: boolean; drift: string[] }>;
      };
      expect(Object.values(v.databases)).toEqual([expect.objectContaining({ equal: true })]);
      expect(Object.values(v.blobs)).toEqual([expect.objectContaining({ equal: true, blobs: 5 })]);
      expect(Object.values(v.topics)).toEqual([{ exists: true, drift: [] }]);

      // The moment the cut-over has committed, the credentials the API hands out are us's.
      expect(await credentialsOf(fx, db.id)).toMatchObject({ port: Number(new URL(usUrl).port) });
      // On the us engines: the rows (through the tenant's credentials, now us's), the blobs byte for byte, the topic and its ACLs.
      const us = await tenantClient(db.id, usUrl);
      expect((await us.query('select count(*)::int as n from orders')).rows[0].n).toBe(20000);
      expect((await us.query('select count(*)::int as n from notes')).rows[0].n).toBe(5000);
      await us.query(`insert into orders (n) values (-1)`);
      await us.end();
      const usBlobs = BlobServiceClient.fromConnectionString(blobs.us.connectionString).getContainerClient(
        container,
      );
      for (const [name, body] of Object.entries(payloads))
        expect((await usBlobs.getBlobClient(name).downloadToBuffer()).equals(body)).toBe(true);
      const admin = new Kafka({
        brokers: [brokers.us.brokers],
        sasl: { mechanism: 'plain', username: brokers.us.username, password: brokers.us.password },
        logLevel: logLevel.NOTHING,
      }).admin();
      await admin.connect();
      try {
        const meta = await admin.fetchTopicMetadata({ topics: [topic] });
        expect(meta.topics[0]!.partitions).toHaveLength(2);
        const acls = await admin.describeAcls({
          resourceType: AclResourceTypes.TOPIC,
          resourceName: topic,
          resourcePatternType: ResourcePatternTypes.LITERAL,
          operation: AclOperationTypes.ANY,
          permissionType: AclPermissionTypes.ANY,
        });
        expect(acls.resources.flatMap((r) => r.acls.map((a) => a.principal))).toContain(`User:${deployment}`);
      } finally {
        await admin.disconnect();
      }

      // Placement, region, event, audit.
      const t = await fx.t.owner.query(`select region, placement, spec from tenants where slug = $1`, [
        tenant,
      ]);
      expect(t.rows[0]).toMatchObject({
        region: 'us',
        placement: { region: 'us', cell: `${customer}-us` },
        spec: { region: 'us' },
      });
      const ev = await fx.t.owner.query(
        `select data from outbox_events where type = 'dev.tenantry.tenant.region_migrated.v1'`,
      );
      expect(ev.rows).toHaveLength(1);
      expect(ev.rows[0].data.previous.placement).toMatchObject({ region: 'eu', cell: `${customer}-eu` });
      expect(ev.rows[0].data.current.placement).toMatchObject({ region: 'us', cell: `${customer}-us` });
      const audit = await fx.t.owner.query<{ action: string }>(
        `select action from audit_records where action like 'migration.%' and tenant_id = (select id from tenants where slug = $1) order by time`,
        [tenant],
      );
      expect(audit.rows.map((r) => r.action)).toEqual(['migration.start', 'migration.cut_over']);
      // The reconcile now keeps the resources in us.
      await until(
        'resources Ready in us',
        async () => (await rows()).every((r) => r.phase === 'Ready'),
        60_000,
      );

      // Retire: the eu schema and role, container and topic go.
      const retired = await service.retire(fx.ctx, tenant, m.id);
      expect(await finished(fx.t, retired.retireWorkflowId!, 120_000)).toMatchObject({ state: 'Succeeded' });
      expect((await service.get(fx.ctx, tenant, m.id)).state).toBe('Retired');
      const dp = new pg.Client({ connectionString: euServer });
      dp.on('error', () => undefined);
      await dp.connect();
      expect((await dp.query('select 1 from pg_namespace where nspname = $1', [`t_${base}`])).rowCount).toBe(
        0,
      );
      expect((await dp.query('select 1 from pg_roles where rolname = $1', [`t_${base}`])).rowCount).toBe(0);
      await dp.end();
      expect(await euBlobs.exists()).toBe(false);
      expect(await usBlobs.exists()).toBe(true);
      const euAdmin = new Kafka({
        brokers: [brokers.eu.brokers],
        sasl: { mechanism: 'plain', username: brokers.eu.username, password: brokers.eu.password },
        logLevel: logLevel.NOTHING,
      }).admin();
      await euAdmin.connect();
      try {
        await until('the eu topic gone', async () => !(await euAdmin.listTopics()).includes(topic), 30_000);
      } finally {
        await euAdmin.disconnect();
      }
    } finally {
      await e.stop();
    }
  });

  it('rolls a region migration back within its window: what was written in the target comes back, the target goes', {
    timeout: 300_000,
  }, async () => {
    const service = new MigrationsService(fx.t.db);
    const byType = Object.fromEntries((await rows()).map((r) => [r.type, r]));
    const db = byType.database!;
    const container = byType['blob-container']!.physical_name;
    const euServer = defaultDataplaneUrl(fx.t.ownerUrl);
    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    try {
      // The tenant (in us since the test above) moves to eu, and writes there.
      const m = (await service.start(
        fx.ctx,
        tenant,
        { region: 'eu', rollbackWindowSeconds: 3600 },
        { dryRun: false },
      )) as Migration;
      expect(await finished(fx.t, m.id, 180_000)).toMatchObject({ state: 'Succeeded' });
      expect((await service.get(fx.ctx, tenant, m.id)).state).toBe('CutOver');
      expect(await credentialsOf(fx, db.id)).toMatchObject({ port: Number(new URL(euServer).port) });
      const eu = await tenantClient(db.id, euServer);
      expect((await eu.query('select count(*)::int as n from orders')).rows[0].n).toBe(20001);
      await eu.query('insert into orders (n, payload) select g, $1 from generate_series(900001, 900010) g', [
        'written in eu',
      ]);
      await eu.query(`update notes set v = '{"changed":true}' where k = 'k1'`);
      await eu.end();
      const euBlobs = BlobServiceClient.fromConnectionString(blobs.eu.connectionString).getContainerClient(
        container,
      );
      const late = randomBytes(7_000);
      await euBlobs.getBlockBlobClient('docs/late.bin').uploadData(late);

      const rb = await service.rollback(fx.ctx, tenant, m.id);
      expect(await finished(fx.t, rb.rollbackWorkflowId!, 180_000)).toMatchObject({ state: 'Succeeded' });
      expect(await credentialsOf(fx, db.id)).toMatchObject({ port: Number(new URL(usUrl).port) });
      expect((await stepsOf(fx.t, rb.rollbackWorkflowId!)).map((s) => s.name)).toEqual([
        'check-window',
        'freeze-writes',
        'copy-back',
        'restore-source',
        'drop-target',
      ]);
      const after = await service.get(fx.ctx, tenant, m.id);
      expect(after.state).toBe('RolledBack');
      await expect(service.rollback(fx.ctx, tenant, m.id)).rejects.toMatchObject({
        code: 'migration.rollback_unavailable',
      });

      // Back in us, through the tenant's credentials (us's again): the rows written in eu too.
      const us = await tenantClient(db.id, usUrl);
      expect((await us.query('select count(*)::int as n from orders')).rows[0].n).toBe(20011);
      expect(
        (await us.query(`select count(*)::int as n from orders where payload = 'written in eu'`)).rows[0].n,
      ).toBe(10);
      expect((await us.query(`select v from notes where k = 'k1'`)).rows[0].v).toEqual({ changed: true });
      await us.query(`insert into orders (n) values (-2)`);
      await us.end();
      const usBlobs = BlobServiceClient.fromConnectionString(blobs.us.connectionString).getContainerClient(
        container,
      );
      expect((await usBlobs.getBlobClient('docs/late.bin').downloadToBuffer()).equals(late)).toBe(true);
      // eu's copies are gone.
      const dp = new pg.Client({ connectionString: euServer });
      dp.on('error', () => undefined);
      await dp.connect();
      expect((await dp.query('select 1 from pg_namespace where nspname = $1', [`t_${base}`])).rowCount).toBe(
        0,
      );
      await dp.end();
      expect(await euBlobs.exists()).toBe(false);

      const t = await fx.t.owner.query(`select region, placement from tenants where slug = $1`, [tenant]);
      expect(t.rows[0]).toMatchObject({ region: 'us', placement: { region: 'us', cell: `${customer}-us` } });
      const ev = await fx.t.owner.query(
        `select data from outbox_events where type = 'dev.tenantry.tenant.migration_rolled_back.v1' and subject like 'tenants/%'`,
      );
      expect(ev.rows).toHaveLength(1);
      expect(ev.rows[0].data.current.placement).toMatchObject({ region: 'us' });
      const audit = await fx.t.owner.query<{ action: string }>(
        `select action from audit_records where action like 'migration.%' and target_id = $1 order by time`,
        [m.id],
      );
      expect(audit.rows.map((r) => r.action)).toEqual([
        'migration.start',
        'migration.cut_over',
        'migration.rollback',
        'migration.rolled_back',
      ]);
      await until(
        'resources Ready in us',
        async () => (await rows()).every((r) => r.phase === 'Ready'),
        60_000,
      );
    } finally {
      await e.stop();
    }
  });
});
