import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/test-database.js';
import { createRegistry } from '../../app.js';
import { systemContext } from '../../context/request-context.js';
import { asPlatform } from '../../db/database.js';
import type { Kind } from '../../registry/kinds/index.js';
import { findById } from '../../registry/object.repository.js';
import { settle } from '../reconcilers.js';

/**
 * poke-parents.ts: a parent is made due by the transition of its last waiting dependent, also when
 * its dependents settle at once (the race), and not by the others (issue 24: one parent reconcile
 * per settlement, not one per child).
 */
let t: TestDatabase;
const ctx = systemContext('test-operator');
const env = () => ({ db: t.db, context: () => systemContext('test-controller') });
const READY = {
  phase: 'Ready' as const,
  ready: { status: 'True' as const, reason: 'Provisioned', message: 'test' },
};
const DEPLOYMENTS = ['a', 'b', 'c', 'd', 'e', 'f'];

beforeAll(async () => {
  t = await createTestDatabase();
  const m = (kind: string, spec: Record<string, unknown>, name?: string) => ({
    apiVersion: 'tenantry.dev/v1',
    kind,
    metadata: name ? { name } : {},
    spec,
  });
  await createRegistry(t.db, t.config).apply(ctx, [
    m('Customer', { displayName: 'P', shortCode: 'pp' }, 'pp'),
    m('System', { displayName: 'S', serviceId: 'svc' }, 'svc'),
    m('Tenant', { customer: 'pp', region: 'eu', environmentType: 'dev', qualifier: 't0' }),
    ...DEPLOYMENTS.map((d) => m('Deployment', { tenant: 'pp-eu-dev-t0', system: 'svc', qualifier: d })),
  ]);
});
afterAll(async () => t?.destroy());

const ids = async (table: string) =>
  (await t.owner.query<{ id: string }>(`select id from ${table} order by slug`)).rows.map((r) => r.id);
const due = async (kind: string) =>
  (
    await t.owner.query<{ due: boolean }>(
      'select run_after <= now() as due from reconcile_jobs where object_kind = $1',
      [kind],
    )
  ).rows.map((r) => r.due);
/** Every child settles Ready at once, each in its own status transaction (own connection). */
const settleAll = (kind: Kind, objectIds: string[]) =>
  Promise.all(
    objectIds.map(async (id) => {
      const row = await asPlatform(t.db, (trx) => findById(trx, kind, id));
      await settle(env(), undefined, kind, row!, READY);
    }),
  );

describe('poke parents', () => {
  it('the last of dependents settling at once makes the parent due; the others do not', async () => {
    const deployments = await ids('deployments');
    for (let round = 0; round < 5; round++) {
      // The tenant is waiting for its deployments, and its job is not due until the resync.
      await t.owner.query(`update deployments set phase = 'Provisioning'`);
      await t.owner.query(`update tenants set phase = 'Provisioning'`);
      await t.owner.query(`update reconcile_jobs set run_after = now() + interval '1 hour'`);

      // All but one settle: the tenant still waits for the last one, so it is not reconciled again.
      await settleAll('Deployment', deployments.slice(1));
      expect(await due('Tenant')).toEqual([false]);
      // The last one settles: the tenant is due now.
      await settleAll('Deployment', deployments.slice(0, 1));
      expect(await due('Tenant')).toEqual([true]);

      // All at once: whichever commits last finds none waiting and makes the tenant due.
      await t.owner.query(`update deployments set phase = 'Provisioning'`);
      await t.owner.query(`update reconcile_jobs set run_after = now() + interval '1 hour'`);
      await settleAll('Deployment', deployments);
      expect(await due('Tenant')).toEqual([true]);
    }
  });

  it('a Ready parent is made due by a dependent that is no longer Ready', async () => {
    const [first] = await ids('deployments');
    await t.owner.query(`update deployments set phase = 'Ready'`);
    await t.owner.query(`update tenants set phase = 'Ready'`);
    await t.owner.query(`update reconcile_jobs set run_after = now() + interval '1 hour'`);
    const row = await asPlatform(t.db, (trx) => findById(trx, 'Deployment', first!));
    await settle(env(), undefined, 'Deployment', row!, {
      phase: 'Provisioning',
      ready: { status: 'False', reason: 'DependentsNotReady', message: 'test' },
    });
    expect(await due('Tenant')).toEqual([true]);
  });
});
