import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/test-database.js';
import { createRegistry } from '../../app.js';
import { systemContext } from '../../context/request-context.js';
import { asPlatform } from '../../db/database.js';
import type { Kind } from '../../registry/kinds/index.js';
import { findById } from '../../registry/object.repository.js';
import { settle } from '../reconcilers.js';
import { pokeParentsOf } from './poke-parents.js';

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

  it('looks its parents up by primary key in a registry of many tenants, never by a scan of them all', async () => {
    // 20k tenants (copies of the first, with their columns as they are), as the planner sees them.
    const cols = (
      await t.owner.query<{ c: string }>(
        `select column_name as c from information_schema.columns where table_schema = 'public'
         and table_name = 'tenants' and column_name not in ('id', 'slug', 'qualifier', 'spec')`,
      )
    ).rows.map((r) => `"${r.c}"`);
    const copies = await t.owner.query<{ id: string }>(
      `insert into tenants (id, slug, qualifier, spec, ${cols.join(', ')})
       select gen_random_uuid(), 'pp-eu-dev-c' || n, 'c' || n, t.spec, ${cols.map((c) => `t.${c}`).join(', ')}
       from tenants t, generate_series(1, 20000) n where t.slug = 'pp-eu-dev-t0' returning id`,
    );
    await t.owner.query('analyze tenants');
    // A settled batch's worth of parents (a batch is 256 jobs): the join on the unnested ids alone
    // was planned as a hash join over all 20k tenants.
    const scans = await asPlatform(t.db, async (trx) => {
      const count = async () =>
        Number(
          (
            await sql<{ seq_scan: string }>`
              select seq_scan from pg_stat_xact_user_tables where relname = 'tenants'`.execute(trx)
          ).rows[0]?.seq_scan,
        );
      const before = await count();
      await pokeParentsOf(
        trx,
        copies.rows.slice(0, 256).map((r) => ({ tenantId: r.id, deploymentId: null, force: true })),
      );
      return (await count()) - before;
    });
    expect(scans).toBe(0);
    expect(await due('Tenant')).toHaveLength(257);
  });
});
