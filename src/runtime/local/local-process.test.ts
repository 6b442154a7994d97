import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type TestController, until } from '../../../test/helpers/controller.js';
import { circleK } from '../../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/test-database.js';
import { createRegistry } from '../../app.js';
import { systemContext } from '../../context/request-context.js';
import { configChecksum } from '../../domain/config-checksum.js';
import type { RegistryService } from '../../registry/registry.service.js';

/**
 * The embedded default compute target: the Circle K example with its services (examples/circlek/
 * 40-runtime.yaml) through the real controller; every replica is a real process of this machine.
 */
interface Replica {
  name: string;
  phase: string;
  ready: boolean;
  version: string;
  address: string;
  restarts: number;
}
interface Observed {
  target: string;
  replicas: { desired: number; current: number; ready: number; items: Replica[] };
}
const PLAN = 'circlek-eu-prod-plan-app';

describe('local-process compute target (the embedded default), Circle K', () => {
  let t: TestDatabase;
  let c: TestController;
  let registry: RegistryService;
  const ctx = systemContext('test-operator');
  const services = async () =>
    (
      await t.owner.query<{ slug: string; phase: string; observed: Observed | null }>(
        'select slug, phase, observed from services where deleted_at is null order by slug',
      )
    ).rows;
  const service = async (slug: string) => (await services()).find((s) => s.slug === slug);
  const info = async (r: Replica) => (await fetch(r.address)).json() as Promise<Record<string, unknown>>;
  const load = (r: Replica, mib: number) =>
    fetch(`${r.address}/load?mib=${mib}`, { method: 'POST' }).then((x) => x.status);

  beforeAll(async () => {
    t = await createTestDatabase();
    registry = createRegistry(t.db, t.config);
    c = await startController(t, {
      env: {
        TENANTRY_LOCAL_SCALE_INTERVAL_MS: '500',
        TENANTRY_LOCAL_SCALE_DOWN_STABILIZATION_MS: '2000',
      },
      controller: { resyncIntervalMs: 1_500 },
    });
    await registry.apply(ctx, circleK({ runtime: true }));
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
    await t?.destroy();
  });

  it("runs every deployment's replicas as processes, named as in seed 000, all Ready", async () => {
    const all = await until(
      'every service Ready with its replicas ready',
      async () => {
        const s = await services();
        return (
          s.length === 7 &&
          s.every(
            (x) =>
              x.phase === 'Ready' &&
              x.observed?.replicas.items.length &&
              x.observed.replicas.items.every((r) => r.ready),
          ) &&
          s
        );
      },
      60_000,
    );
    const names = all.flatMap((s) => s.observed?.replicas.items.map((r) => r.name) ?? []);
    expect(names).toEqual(
      expect.arrayContaining([
        'plan-eu-prod_brave-wolf-1',
        'plan-eu-prod_brave-wolf-2',
        'plan-eu-uat_calm-seal-1',
        'plan-eu-uat-dev_quiet-fox-1',
        'plan-us-prod_swift-hawk-1',
      ]),
    );
    // Generated names follow the same pattern, with the deployment's qualifier.
    expect(names.filter((n) => /^store-eu-prod-pl_[a-z]+-[a-z]+-1$/.test(n))).toHaveLength(1);
    expect(names).toHaveLength(8);
    for (const s of all) expect(s.observed?.target).toBe('local-process');
    // Each replica is a live process that knows its name, version and configuration version.
    const plan = all.find((s) => s.slug === PLAN)?.observed?.replicas.items ?? [];
    const first = await info(plan[0] as Replica);
    expect(first).toMatchObject({ replica: 'plan-eu-prod_brave-wolf-1', version: '5.2.0' });
    expect(first.configChecksum).toBe(
      configChecksum({ forecastHorizonDays: 35, orderProposals: { batchSize: 500 } }),
    );
    expect(() => process.kill(first.pid as number, 0)).not.toThrow();
  }, 90_000);

  it('a killed replica is seen, recorded as drift, and started again under its name', async () => {
    const plan = (await service(PLAN))?.observed?.replicas.items ?? [];
    const victim = plan.find((r) => r.name === 'plan-eu-prod_brave-wolf-2') as Replica;
    const { pid } = await info(victim);
    process.kill(pid as number, 'SIGKILL');
    const finding = await until(
      'a resolved drift finding for the plan service',
      async () => {
        const r = await t.owner.query(
          `select drift, resolved_at, resolved_by from drift_findings where object_slug = $1`,
          [PLAN],
        );
        return r.rows[0]?.resolved_at ? r.rows[0] : undefined;
      },
      30_000,
    );
    expect(finding.drift).toContain('replica plan-eu-prod_brave-wolf-2 killed by SIGKILL');
    expect(finding.resolved_by).toBe('controller: local-process ensure');
    const again = await until('the replica runs again', async () => {
      const r = (await service(PLAN))?.observed?.replicas.items.find((x) => x.name === victim.name);
      return r?.ready && r.restarts === 1 && r;
    });
    const now = await info(again);
    expect(now.pid).not.toBe(pid);
    expect(now.replica).toBe(victim.name);
  }, 60_000);

  it('scales up under real memory load to the policy max, never past the quota, and back down after', async () => {
    const ready = async () => (await service(PLAN))?.observed?.replicas.items.filter((r) => r.ready) ?? [];
    // Memory, not CPU: this machine's cores are shared with other work, so how much CPU a busy replica
    // gets is not up to the test; the memory a replica holds is. The request is 2 × 128 MiB: an idle
    // replica's RSS is about 20 % of it, one holding 160 MiB about 80 %.
    const policy = circleK({ runtime: true }).find(
      (d) => (d as { kind: string; spec: { service?: string } }).spec.service === PLAN,
    ) as { spec: { targetUtilization: number; metric: string } };
    policy.spec.metric = 'memory';
    policy.spec.targetUtilization = 50;
    await registry.apply(ctx, [policy]);
    await until('two ready replicas', async () => (await ready()).length === 2);
    for (const r of await ready()) expect(await load(r, 160)).toBe(204);
    // Policy 2..4 replicas of unit cost 2; enterprise allows 16 units, the tenant's other services hold 3.
    await until('four replicas', async () => (await ready()).length === 4, 60_000);
    // The plan's quota goes down to 10 units: (10 − 3) / 2 = 3 replicas, whatever the metric asks.
    const enterprise = circleK().find(
      (d) => (d as { kind: string; metadata: { name?: string } }).metadata.name === 'enterprise',
    ) as { spec: { quotas: Record<string, unknown> } };
    enterprise.spec.quotas.computeUnits = 10;
    await registry.apply(ctx, [enterprise]);
    await until(
      'three replicas',
      async () => {
        const s = await service(PLAN);
        return s?.observed?.replicas.current === 3 && s;
      },
      30_000,
    );
    // The lowered quota takes the scaled-out replica back, not the base replica of another service.
    expect((await service('circlek-eu-prod-internal-abs-app'))?.observed?.replicas.current).toBe(1);
    // Still under load for several scaling rounds: never more than the quota allows.
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 500));
      expect((await service(PLAN))?.observed?.replicas.current).toBeLessThanOrEqual(3);
    }
    for (const r of (await service(PLAN))?.observed?.replicas.items ?? []) await load(r, 0);
    await until(
      'back to the policy minimum',
      async () => (await service(PLAN))?.observed?.replicas.current === 2,
      60_000,
    );
  }, 180_000);
});
