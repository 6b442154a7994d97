import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deploymentManifests,
  startController,
  statuses,
  type TestController,
  tempDataDir,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { circleK } from '../../test/helpers/examples.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { asPlatform } from '../db/database.js';
import type { DesiredResource } from '../providers/provider.js';
import { enqueueJob } from './queue/enqueue-job.js';

const fx = useControllerTestDatabase();

const settled = async () => {
  const rows = await statuses(fx.t.owner);
  return (
    rows.every(
      (r) =>
        !['Pending', 'Provisioning', 'Terminating'].includes(r.phase) ||
        (r.phase === 'Provisioning' &&
          r.reason === 'DependentsNotReady' &&
          !r.message.includes('AwaitingReconcile')),
    ) && rows
  );
};
const eventCount = async (type: string) =>
  (await fx.t.owner.query('select count(*)::int as n from outbox_events where type = $1', [type])).rows[0]
    .n as number;

describe('reconcile controller (embedded providers)', () => {
  let c: TestController;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await tempDataDir();
    await fx.registry.apply(fx.ctx, circleK());
    c = await startController(fx.t, { dataDir, controller: { resyncIntervalMs: 1_000 } });
  });
  afterAll(async () => c?.stop());

  it('brings Circle K to Ready; topics without a Kafka cluster end Ready=False ProviderNotConfigured', async () => {
    const rows = await until('Circle K settled', settled);
    const topics = rows.filter((r) => r.kind === 'IntegrationResource' && r.slug.includes('.v1.'));
    expect(topics.length).toBe(6);
    for (const r of topics) {
      expect(r).toMatchObject({ phase: 'Failed', reason: 'ProviderNotConfigured' });
      expect(r.message).toContain('TENANTRY_KAFKA_BROKERS');
    }
    // Objects whose dependents include a topic say so; everything else is Ready.
    const blocked = rows.filter((r) => r.reason === 'DependentsNotReady');
    for (const r of blocked) expect(r.message).toMatch(/ProviderNotConfigured/);
    expect(blocked.length).toBeGreaterThan(0);
    const rest = rows.filter((r) => !topics.includes(r) && !blocked.includes(r));
    expect(rest.length).toBeGreaterThan(10);
    for (const r of rest) expect(r, `${r.kind} ${r.slug}`).toMatchObject({ phase: 'Ready' });
    const blobs = await fx.t.owner.query(
      `select physical_name from integration_resources where resource_type = 'blob-container' order by 1`,
    );
    expect(blobs.rows.length).toBeGreaterThan(2);
    expect(fs.readdirSync(path.join(dataDir, 'blobs')).sort()).toEqual(
      blobs.rows.map((r) => r.physical_name),
    );
    // observedGeneration caught up, status written without a new generation or lineage entry.
    const gens = await fx.t.owner.query(
      `select count(*)::int as n from integration_resources where observed_generation <> generation or generation <> 1`,
    );
    expect(gens.rows[0].n).toBe(0);
    expect(await eventCount('dev.tenantry.integrationresource.ready.v1')).toBe(blobs.rows.length);
    expect(await eventCount('dev.tenantry.integrationresource.failed.v1')).toBe(6);
    const audit = await fx.t.owner.query(
      `select actor_principal, actor_kind from audit_records where action = 'integrationresource.ready'`,
    );
    expect(audit.rows).toHaveLength(blobs.rows.length);
    expect(audit.rows[0]).toEqual({ actor_principal: 'tenantry-controller', actor_kind: 'system' });
  });

  it('reprocessing every object again duplicates nothing', async () => {
    const before = await fx.t.owner.query('select count(*)::int as n from outbox_events');
    const objects = await fx.t.owner.query<{ kind: string; id: string; tenant_id: string | null }>(`
      select 'IntegrationResource' as kind, id, tenant_id from integration_resources
      union all select 'Deployment', id, tenant_id from deployments union all select 'Tenant', id, id from tenants`);
    await asPlatform(fx.t.db, async (trx) => {
      for (const o of objects.rows) {
        await enqueueJob(trx, {
          kind: o.kind as 'Tenant',
          objectId: o.id,
          tenantId: o.tenant_id,
          generation: 1,
        });
      }
    });
    await until('jobs processed', async () => {
      const r = await fx.t.owner.query(
        `select count(*)::int as n from reconcile_jobs where run_after <= now()`,
      );
      return r.rows[0].n === 0;
    });
    await until('settled', settled);
    const after = await fx.t.owner.query('select count(*)::int as n from outbox_events');
    expect(after.rows[0].n).toBe(before.rows[0].n);
    const blobs = await fx.t.owner.query(
      `select physical_name from integration_resources where resource_type = 'blob-container' order by 1`,
    );
    expect(fs.readdirSync(path.join(dataDir, 'blobs')).sort()).toEqual(
      blobs.rows.map((r) => r.physical_name),
    );
  });

  it('repairs drift at the next resync and records it', async () => {
    const dir = path.join(dataDir, 'blobs', 'circlek-eu-prod-plan');
    fs.rmSync(dir, { recursive: true });
    await until('container recreated', async () => fs.existsSync(dir), 10_000);
    await until(
      'drift recorded',
      async () => (await eventCount('dev.tenantry.integrationresource.drifted.v1')) === 1,
    );
    const audit = await fx.t.owner.query(
      `select after from audit_records where action = 'integrationresource.drifted'`,
    );
    expect(audit.rows[0].after.drift).toEqual(['the resource was missing']);
  });

  it('deletes resources before their deployment and deployments before their tenant, leaving tombstones', async () => {
    await fx.registry.delete(fx.ctx, 'Deployment', 'circlek-eu-prod-store-pl');
    await fx.registry.transition(fx.ctx, 'circlek-eu-uat', 'archive');
    await settleWorkflows(fx.t);
    await fx.registry.transition(fx.ctx, 'circlek-eu-uat', 'delete');
    const rows = await until('deletions finalised', async () => {
      const rows = await statuses(fx.t.owner);
      return rows.filter((r) => r.deleted).every((r) => r.phase === 'Deleted') && rows;
    });
    const deleted = rows.filter((r) => r.deleted).map((r) => `${r.kind} ${r.slug}`);
    expect(deleted).toEqual(
      expect.arrayContaining([
        'Deployment circlek-eu-prod-store-pl',
        'IntegrationResource circlek-eu-prod-store-pl.blob',
        'Tenant circlek-eu-uat',
        'Deployment circlek-eu-uat-plan',
      ]),
    );
    expect(fs.existsSync(path.join(dataDir, 'blobs', 'circlek-eu-prod-store-pl'))).toBe(false);
    const jobs = await fx.t.owner.query(
      `select count(*)::int as n from reconcile_jobs j join integration_resources r on r.id = j.object_id where r.deleted_at is not null`,
    );
    expect(jobs.rows[0].n).toBe(0);
  });
});

describe('ordering of deletion under a slow provider', () => {
  it('a deployment and its tenant stay Terminating while their resources are being removed', async () => {
    const dataDir = await tempDataDir();
    const seen: string[] = [];
    await fx.registry.apply(fx.ctx, [
      ...deploymentManifests('ordered', 'svc'),
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'IntegrationResource',
        metadata: {},
        spec: { scope: { deployment: 'ordered-eu-dev-svc' }, type: 'blob-container' },
      },
    ]);
    const c = await startController(fx.t, {
      dataDir,
      providers: (p) => {
        const slot = p['blob-container'];
        if (!('provider' in slot)) throw new Error('no blob provider');
        const real = slot.provider;
        return {
          'blob-container': {
            provider: {
              type: real.type,
              name: real.name,
              observe: (d: DesiredResource) => real.observe(d),
              ensure: (d: DesiredResource) => real.ensure(d),
              close: () => real.close(),
              async delete(d: DesiredResource) {
                await new Promise((r) => setTimeout(r, 300));
                const r = await fx.t.owner.query(
                  `select (select phase from deployments where slug = 'ordered-eu-dev-svc') as d,
                          (select phase from tenants where slug = 'ordered-eu-dev') as t`,
                );
                seen.push(`${r.rows[0].d}/${r.rows[0].t}`);
                await real.delete(d);
              },
            },
          },
        };
      },
    });
    try {
      await until('ordered tenant Ready', async () => {
        const r = await fx.t.owner.query(`select phase from tenants where slug = 'ordered-eu-dev'`);
        return r.rows[0]?.phase === 'Ready';
      });
      await fx.registry.transition(fx.ctx, 'ordered-eu-dev', 'archive');
      await settleWorkflows(fx.t);
      // Its retention window has passed (src/workflows/retention.test.ts covers the open one).
      await fx.t.owner.query(`update tenant_retention set resources_purge_after = now()`);
      await fx.registry.transition(fx.ctx, 'ordered-eu-dev', 'delete');
      await until('tenant finalised', async () => {
        const r = await fx.t.owner.query(`select phase from tenants where slug = 'ordered-eu-dev'`);
        return r.rows[0]?.phase === 'Deleted';
      });
      expect(seen).toEqual(['Terminating/Terminating']);
      const d = await fx.t.owner.query(
        `select phase, deleted_at from deployments where slug = 'ordered-eu-dev-svc'`,
      );
      expect(d.rows[0].phase).toBe('Deleted');
      expect(d.rows[0].deleted_at).not.toBeNull();
    } finally {
      await c.stop();
    }
  });
});
