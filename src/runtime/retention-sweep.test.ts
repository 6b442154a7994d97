import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type TestController, until } from '../../test/helpers/controller.js';
import { configDoc, doc, runtimeBase, serviceDoc } from '../../test/helpers/runtime.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { JobTypes } from '../controller/queue/job-types.js';
import { asPlatform } from '../db/database.js';
import type { RegistryService } from '../registry/registry.service.js';
import { RetentionService } from '../workflows/retention.js';
import {
  RETENTION_SWEEP,
  retentionSweepHandler,
  scheduleRetentionSweep,
  sweepRetention,
} from './retention-sweep.js';

const DAY = 86_400_000;
/** The clock the sweep judges windows by: the system's, moved forward by the test. */
let offsetMs = 0;
const clock = { now: () => Date.now() + offsetMs };

describe('retention sweep of the runtime inventory (seed 002), on the job queue', () => {
  let t: TestDatabase;
  let registry: RegistryService;
  let c: TestController;
  const ctx = systemContext('test-operator');
  const q = async (text: string, params: unknown[] = []) => (await t.owner.query(text, params)).rows;
  const tenantId = async (slug: string) => (await q('select id from tenants where slug = $1', [slug]))[0].id;
  const drift = async (slug: string, resolved: boolean) =>
    q(
      `insert into drift_findings (tenant_id, object_kind, object_id, object_slug, drift, resolved_at, resolved_by)
       values ($1, 'Service', $2, 'x', '["replica gone"]', $3, $4)`,
      [await tenantId(slug), randomUUID(), resolved ? new Date() : null, resolved ? 'controller' : null],
    );
  const count = async (sql: string, slug: string) => (await q(sql, [await tenantId(slug)]))[0].n as number;
  const driftOf = (slug: string, open: boolean) =>
    count(
      `select count(*)::int as n from drift_findings where tenant_id = $1 and resolved_at is ${open ? '' : 'not '}null`,
      slug,
    );
  const retired = (slug: string) =>
    count(`select count(*)::int as n from services where tenant_id = $1 and deleted_at is not null`, slug);
  const sweep = () => asPlatform(t.db, (trx) => sweepRetention(trx, clock));

  beforeAll(async () => {
    t = await createTestDatabase();
    registry = createRegistry(t.db, t.config);
    const base = runtimeBase(20) as { kind: string; spec: Record<string, unknown> }[];
    // The plan keeps resolved drift findings 30 days (the windows are the plan's; defaults otherwise).
    base[0]!.spec.retention = { driftFindingsDays: 30 };
    await registry.apply(ctx, [
      ...base,
      doc('Tenant', {}, { customer: 'acme', region: 'eu', environmentType: 'dev', plan: 'compute' }),
      doc('Deployment', {}, { tenant: 'acme-eu-dev', system: 'plan' }),
      configDoc(1, { a: 1 }),
      configDoc(2, { a: 2 }),
      configDoc(3, { a: 3 }),
    ]);
    // No compute target: deleted services still become finalised tombstones (phase Deleted).
    c = await startController(t, {
      env: { TENANTRY_RUNTIME: 'none' },
      jobTypes: new JobTypes().register(RETENTION_SWEEP, retentionSweepHandler(t.db, clock)),
    });
    await registry.apply(ctx, [
      // Pinned to configuration version 1: that version stays whatever its age.
      serviceDoc({ configuration: { name: 'plan', version: 1 } }),
      serviceDoc({ component: 'worker' }),
      serviceDoc({ component: 'worker', deployment: 'acme-eu-dev-plan' }),
    ]);
    // The retired service had a scaling policy: its tombstone goes with it.
    await registry.apply(ctx, [
      doc(
        'ScalingPolicy',
        {},
        {
          service: 'acme-eu-prod-plan-worker',
          metric: 'cpu',
          minReplicas: 1,
          maxReplicas: 2,
          targetUtilization: 70,
        },
      ),
    ]);
    await registry.apply(ctx, [
      serviceDoc({ configuration: { name: 'plan', version: 1 }, version: '1.0.1' }),
    ]);
    await registry.delete(ctx, 'ScalingPolicy', 'acme-eu-prod-plan-worker');
    await registry.delete(ctx, 'Service', 'acme-eu-prod-plan-worker');
    await registry.delete(ctx, 'Service', 'acme-eu-dev-plan-worker');
    await until('retired services finalised and configuration versions settled', async () => {
      const r = await q(`select
        (select count(*)::int from services where deleted_at is not null and phase = 'Deleted') as gone,
        (select count(*)::int from configurations where version_state = 'superseded') as superseded`);
      return r[0].gone === 2 && r[0].superseded === 2;
    });
    for (const slug of ['acme-eu-prod', 'acme-eu-dev']) {
      await drift(slug, true);
      await drift(slug, false);
    }
    await new RetentionService(t.db, clock).placeHold(ctx, 'acme-eu-dev', 'litigation 42');
  }, 120_000);
  afterAll(async () => {
    await c?.stop();
    await t?.destroy();
  });

  it('sweeps nothing younger than its window', async () => {
    const r = await sweep();
    expect(Object.values(r.classes).map((x) => x.swept)).toEqual([0, 0, 0, 0]);
    expect(r.legalHolds).toEqual(['acme-eu-dev']);
  });

  it("sweeps resolved drift past the plan's 30 days, retired services past 90; open findings and legal holds kept", async () => {
    offsetMs = 31 * DAY;
    const r31 = await sweep();
    expect(r31.classes.driftFindings).toEqual({
      swept: 1,
      tenants: [{ tenant: 'acme-eu-prod', windowDays: 30, swept: 1, exception: null }],
    });
    expect(r31.classes.retiredServices.swept).toBe(0);
    expect(await retired('acme-eu-prod')).toBe(1);
    offsetMs = 89 * DAY;
    expect((await sweep()).classes.retiredServices.swept).toBe(0);
    offsetMs = 91 * DAY;
    const r91 = await sweep();
    expect(r91.classes.retiredServices.tenants).toEqual([
      { tenant: 'acme-eu-prod', windowDays: 90, swept: 1, exception: null },
    ]);
    expect(await retired('acme-eu-prod')).toBe(0);
    expect((await q('select count(*)::int as n from scaling_policies'))[0].n).toBe(0);
    // Open findings stay indefinitely; the held tenant keeps everything.
    expect(await driftOf('acme-eu-prod', true)).toBe(1);
    expect(await driftOf('acme-eu-dev', false)).toBe(1);
    expect(await retired('acme-eu-dev')).toBe(1);
  });

  it('after a year, through the scheduled job: superseded configuration versions and earlier deployment history go; active and pinned versions, newest history stay', async () => {
    offsetMs = 366 * DAY;
    await asPlatform(t.db, scheduleRetentionSweep);
    const rec = await until('the sweep ran on the queue', async () => {
      const r = await q(
        `select after from audit_records where action = 'retention.sweep' order by time desc limit 1`,
      );
      const a = r[0]?.after;
      return a && Date.parse(a.at) > Date.now() + 365 * DAY ? a : undefined;
    });
    expect(rec.classes.configurationVersions).toEqual({
      swept: 1,
      tenants: [{ tenant: 'acme-eu-prod', windowDays: 365, swept: 1, exception: null }],
    });
    expect(rec.defaults).toEqual({
      retiredServices: 90,
      deploymentHistory: 365,
      configurationVersions: 365,
      driftFindings: 365,
    });
    expect(await q(`select version, version_state from configurations order by version`)).toEqual([
      { version: 1, version_state: 'superseded' },
      { version: 3, version_state: 'active' },
    ]);
    // The live service's first version is history; its newest is what it is now.
    expect(
      await q(
        `select v.generation::int as generation from object_versions v join services s on s.id = v.object_id
         where s.slug = 'acme-eu-prod-plan-api' order by 1`,
      ),
    ).toEqual([{ generation: 2 }]);
    expect(rec.classes.deploymentHistory.swept).toBeGreaterThanOrEqual(1);
    expect(rec.classes.deploymentHistory.tenants.map((x: { tenant: string }) => x.tenant)).toEqual([
      'acme-eu-prod',
    ]);
    // The job comes back later, not at once.
    const job = await q(`select run_after from reconcile_jobs where object_kind = $1`, [RETENTION_SWEEP]);
    expect(new Date(job[0].run_after).getTime()).toBeGreaterThan(Date.now() + 30 * 60_000);
    expect(await retired('acme-eu-dev')).toBe(1);
    expect(await driftOf('acme-eu-dev', false)).toBe(1);
  }, 60_000);

  it('before the window only under a governance exception approved by a second principal, and the record names it', async () => {
    offsetMs = 0;
    const retention = new RetentionService(t.db, clock);
    await retention.releaseHold(ctx, 'acme-eu-dev', 'litigation settled');
    expect((await sweep()).classes.retiredServices.swept).toBe(0);
    await retention.requestException(systemContext('alice@example.com'), 'acme-eu-dev', 'customer asked');
    // Requested, not approved: still nothing before the window.
    expect((await sweep()).classes.retiredServices.swept).toBe(0);
    const approved = await retention.approveException(systemContext('bob@example.com'), 'acme-eu-dev', 'ok');
    const r = await sweep();
    expect(r.classes.retiredServices.tenants).toEqual([
      { tenant: 'acme-eu-dev', windowDays: 90, swept: 1, exception: approved.exception?.id },
    ]);
    expect(r.classes.driftFindings.tenants).toEqual([
      { tenant: 'acme-eu-dev', windowDays: 30, swept: 1, exception: approved.exception?.id },
    ]);
    expect(await driftOf('acme-eu-dev', true)).toBe(1);
  });
});
