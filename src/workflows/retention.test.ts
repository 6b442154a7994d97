import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  deploymentManifests,
  startController,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { finished, startWorkflowEngine, stepsOf } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { RetentionService } from './retention.js';
import { lifecycleWorkflowId } from './start-lifecycle-workflow.js';

// Roles and databases belong to the whole server: names unique to this run.
const customer = `rt${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const role = `t_${tenant.replace(/-/g, '_')}`;
const siloDb = `tenantry_${deployment.replace(/-/g, '_')}`;
const DAY = 86_400_000;

const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    ...deploymentManifests(customer, 'plan'),
    ...[
      { scope: { tenant }, type: 'database', database: { isolation: 'pool' } },
      { scope: { deployment }, type: 'database', database: { isolation: 'silo' } },
      { scope: { deployment }, type: 'blob-container' },
    ].map((spec) => ({ apiVersion: 'tenantry.dev/v1', kind: 'IntegrationResource', metadata: {}, spec })),
  ]),
);

/** The clock retention is judged by: the system's, moved forward by the test. */
let offsetMs = 0;
const clock = { now: () => Date.now() + offsetMs };

async function dataplane<T>(work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: defaultDataplaneUrl(fx.t.ownerUrl) });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}
const roleExists = () =>
  dataplane(
    async (c) => (await c.query('select 1 from pg_roles where rolname = $1', [role])).rows.length > 0,
  );
const siloExists = () =>
  dataplane(
    async (c) => (await c.query('select 1 from pg_database where datname = $1', [siloDb])).rows.length > 0,
  );
const secrets = async () =>
  (await fx.t.owner.query<{ n: number }>('select count(*)::int as n from resource_secrets')).rows[0]!.n;
const refusal = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: { code?: string; status?: number; details?: unknown }) => ({
      code: e.code,
      status: e.status,
      details: e.details,
    }),
  );

describe('archive, legal hold and purge on the real PostgreSQL provider', () => {
  it('a hold keeps everything through delete; a purge is refused under it and before the window, and removes and records everything after', async () => {
    const c = await startController(fx.t);
    const e = startWorkflowEngine(fx.t, { providers: c.providers, clock });
    const retention = new RetentionService(fx.t.db, clock);
    try {
      await until('resources Ready', async () => {
        const r = await fx.t.owner.query(
          `select count(*)::int as n from integration_resources where phase = 'Ready'`,
        );
        return r.rows[0].n === 3;
      });
      expect(await secrets()).toBeGreaterThan(0);

      // Archive: suspended access, then the retention clock (retired services: 90 days by default).
      const archived = await fx.registry.transition(fx.ctx, tenant, 'archive');
      const archiveId = lifecycleWorkflowId(archived.metadata.uuid, archived.metadata.generation);
      expect(await finished(fx.t, archiveId)).toMatchObject({ state: 'Succeeded' });
      expect((await stepsOf(fx.t, archiveId)).at(-1)).toMatchObject({
        name: 'start-retention-clock',
        state: 'Completed',
      });
      const standing = await retention.get(fx.ctx, tenant);
      expect(standing.retention?.windows).toEqual({
        retiredServices: 90,
        deploymentHistory: 365,
        configurationVersions: 365,
        driftFindings: 365,
      });
      const purgeAfter = new Date(standing.retention!.purgeAfter).getTime();
      expect(purgeAfter - Date.now()).toBeGreaterThan(89 * DAY);

      // A legal hold, then delete: the tombstone is written, nothing is purged.
      await retention.placeHold(fx.ctx, tenant, 'litigation 2026-117');
      expect(await refusal(retention.placeHold(fx.ctx, tenant, 'again'))).toMatchObject({
        code: 'legal_hold.exists',
        status: 409,
      });
      const deleted = await fx.registry.delete(fx.ctx, 'Tenant', tenant);
      const deleteId = lifecycleWorkflowId(deleted.metadata.uuid, deleted.metadata.generation);
      offsetMs = 200 * DAY; // even long after the window, the hold keeps it
      expect(await finished(fx.t, deleteId)).toMatchObject({ state: 'Succeeded' });
      const kept = await fx.t.owner.query(
        `select output from workflow_steps where workflow_id = $1 and name = 'check-retention'`,
        [deleteId],
      );
      expect(kept.rows[0].output).toMatchObject({ purge: false });
      expect(kept.rows[0].output.reason).toMatch(/legal hold/);
      await until('tombstoned resources settle as retained', async () => {
        const r = await fx.t.owner.query(
          `select count(*)::int as n from integration_resources where phase = 'Deleted' and conditions @> '[{"reason":"Retained"}]'`,
        );
        return r.rows[0].n === 3;
      });
      expect(await roleExists()).toBe(true);
      expect(await siloExists()).toBe(true);
      expect(await secrets()).toBeGreaterThan(0);

      // Under the hold: refused (423), nothing started.
      expect(await refusal(retention.purge(fx.ctx, tenant))).toMatchObject({
        code: 'tenant.legal_hold',
        status: 423,
        details: { legalHold: { reason: 'litigation 2026-117' } },
      });
      await retention.releaseHold(fx.ctx, tenant, 'case closed');

      // Released, but inside the window: refused (409) with the date it ends.
      offsetMs = 30 * DAY;
      expect(await refusal(retention.purge(fx.ctx, tenant))).toMatchObject({
        code: 'tenant.retention_active',
        status: 409,
        details: { purgeAfter: standing.retention!.purgeAfter },
      });
      const none = await fx.t.owner.query(
        `select count(*)::int as n from workflows where type = 'tenant.purge'`,
      );
      expect(none.rows[0].n).toBe(0);

      // After the window: the purge removes every resource and secret, verifies, and records it.
      offsetMs = 91 * DAY;
      const { workflowId } = await retention.purge(fx.ctx, tenant);
      expect(await finished(fx.t, workflowId, 60_000)).toMatchObject({ state: 'Succeeded' });
      expect((await stepsOf(fx.t, workflowId)).map((s) => s.name)).toEqual([
        'check-retention',
        'delete-resources',
        'verify-resources-gone',
        'delete-secrets',
        'record-deletion',
      ]);
      expect(await roleExists()).toBe(false);
      expect(await siloExists()).toBe(false);
      expect(await secrets()).toBe(0);
      const audit = await fx.t.owner.query(
        `select action, after from audit_records where target_id = $1 order by time, id`,
        [deleted.metadata.uuid],
      );
      const actions = audit.rows.map((r) => r.action);
      expect(actions).toEqual(
        expect.arrayContaining(['tenant.legal_hold.place', 'tenant.legal_hold.release', 'tenant.purge']),
      );
      const record = audit.rows.find((r) => r.action === 'tenant.purge')!.after;
      expect(record.resources).toHaveLength(3);
      expect(record.resources.map((r: { type: string }) => r.type).sort()).toEqual([
        'blob-container',
        'database',
        'database',
      ]);
      expect(record.policy).toMatchObject({ windows: { retiredServices: 90 } });
      expect(record.secrets).toEqual(
        expect.arrayContaining([expect.stringMatching(/^resource-secrets\/[0-9a-f-]{36}$/)]),
      );

      // Once purged, a second purge is refused.
      expect(await refusal(retention.purge(fx.ctx, tenant))).toMatchObject({
        code: 'tenant.purged',
        status: 409,
      });
    } finally {
      offsetMs = 0;
      await e.stop();
      await c.stop();
    }
  });
});
