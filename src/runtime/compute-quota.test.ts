import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { doc, runtimeBase, serviceDoc } from '../../test/helpers/runtime.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { UsageService } from '../placement/usage.service.js';
import type { RegistryService } from '../registry/registry.service.js';

/**
 * A change of the binding quota computeUnits reaches the services at once: their reconcile is
 * enqueued in the change's own transaction (not left to the next resync). No controller runs here,
 * so the queue rows show exactly what each change enqueued.
 */
describe('a computeUnits change enqueues the affected services in its transaction', () => {
  let t: TestDatabase;
  let registry: RegistryService;
  const ctx = systemContext('test-operator');
  const plan = (computeUnits: number) =>
    doc(
      'Plan',
      { name: 'compute' },
      { displayName: 'Compute', isolationModels: ['shared'], quotas: { computeUnits } },
    );
  /** Every Service job waits for its resync, as after a reconcile. */
  const settle = () =>
    t.owner.query(
      `update reconcile_jobs set run_after = now() + interval '1 hour' where object_kind = 'Service'`,
    );
  const due = async () =>
    (
      await t.owner.query(
        `select s.slug from reconcile_jobs j join services s on s.id = j.object_id
         where j.object_kind = 'Service' and j.run_after <= now() order by s.slug`,
      )
    ).rows.map((r) => r.slug);

  beforeAll(async () => {
    t = await createTestDatabase();
    registry = createRegistry(t.db, t.config);
    await registry.apply(ctx, [
      ...runtimeBase(20),
      doc(
        'Plan',
        { name: 'other' },
        { displayName: 'Other', isolationModels: ['shared'], quotas: { computeUnits: 8 } },
      ),
      doc('Tenant', {}, { customer: 'acme', region: 'eu', environmentType: 'dev', plan: 'other' }),
      doc('Deployment', {}, { tenant: 'acme-eu-dev', system: 'plan' }),
    ]);
    await registry.apply(ctx, [serviceDoc(), serviceDoc({ deployment: 'acme-eu-dev-plan' })]);
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('an override set or revoked: the tenant’s services, and only them', async () => {
    const usage = new UsageService(t.db);
    await settle();
    expect(await due()).toEqual([]);
    const o = await usage.setOverride(ctx, 'acme-eu-prod', {
      name: 'computeUnits',
      value: 30,
      reason: 'peak',
    });
    expect(await due()).toEqual(['acme-eu-prod-plan-api']);
    await settle();
    await usage.setOverride(ctx, 'acme-eu-prod', { name: 'deployments', value: 30, reason: 'not compute' });
    expect(await due()).toEqual([]);
    await usage.revokeOverride(ctx, 'acme-eu-prod', o.id);
    expect(await due()).toEqual(['acme-eu-prod-plan-api']);
  });

  it("a plan's computeUnits changed: the services of every tenant on it; another change of the plan: none", async () => {
    await settle();
    await registry.apply(ctx, [{ ...plan(20), spec: { ...plan(20).spec, description: 'same quota' } }]);
    expect(await due()).toEqual([]);
    await registry.apply(ctx, [plan(16)]);
    expect(await due()).toEqual(['acme-eu-prod-plan-api']);
  });

  it('a tenant moved to another plan: its services', async () => {
    await settle();
    await registry.apply(ctx, [
      doc('Tenant', {}, { customer: 'acme', region: 'eu', environmentType: 'dev', plan: 'compute' }),
    ]);
    expect(await due()).toEqual(['acme-eu-dev-plan-api']);
  });

  it('an apply that is refused as a whole enqueues nothing (the enqueue is in its transaction)', async () => {
    await settle();
    await expect(
      registry.apply(ctx, [plan(12), doc('Deployment', {}, { tenant: 'no-such-tenant', system: 'plan' })]),
    ).rejects.toThrow();
    expect(await due()).toEqual([]);
    expect(
      (await t.owner.query(`select spec->'quotas'->>'computeUnits' as u from plans where slug = 'compute'`))
        .rows[0].u,
    ).toBe('16');
  });
});
