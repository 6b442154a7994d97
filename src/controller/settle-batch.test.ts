import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, until } from '../../test/helpers/controller.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';

/**
 * Issue 24: a claimed batch is read, provisioned and settled together, children before parents. A
 * tenant tree claimed in one batch is reconciled once per object (its parents read their dependents
 * after they settled, and the pokes they received are seen, not worked again); every transition
 * still gets its event and audit record, each tenant's events in a gap-free sequence.
 */
let t: TestDatabase;
const ctx = systemContext('test-operator');
const TENANTS = 5;
const DEPLOYMENTS = ['a', 'b', 'c'];

beforeAll(async () => {
  t = await createTestDatabase();
  const m = (kind: string, spec: Record<string, unknown>, name?: string) => ({
    apiVersion: 'tenantry.dev/v1',
    kind,
    metadata: name ? { name } : {},
    spec,
  });
  const docs: unknown[] = [
    m('Customer', { displayName: 'B', shortCode: 'bt' }, 'bt'),
    m('System', { displayName: 'S', serviceId: 'svc' }, 'svc'),
  ];
  for (let i = 0; i < TENANTS; i++) {
    const tenant = `bt-eu-dev-t${i}`;
    docs.push(m('Tenant', { customer: 'bt', region: 'eu', environmentType: 'dev', qualifier: `t${i}` }));
    docs.push(m('IntegrationResource', { scope: { tenant }, type: 'blob-container' }));
    for (const d of DEPLOYMENTS)
      docs.push(
        m('Deployment', { tenant, system: 'svc', qualifier: d }),
        m('IntegrationResource', { scope: { deployment: `${tenant}-svc-${d}` }, type: 'blob-container' }),
      );
  }
  await createRegistry(t.db, t.config).apply(ctx, docs);
});
afterAll(async () => t?.destroy());

const notReady = async () =>
  (
    await t.owner.query<{ n: number }>(`
      select (select count(*)::int from tenants where phase <> 'Ready')
           + (select count(*)::int from deployments where phase <> 'Ready')
           + (select count(*)::int from integration_resources where phase <> 'Ready') as n`)
  ).rows[0]!.n;

describe('batched reconcile', () => {
  it('a tree claimed in one batch is reconciled once per object, with every event in sequence', async () => {
    const objects = 2 + TENANTS * (2 + DEPLOYMENTS.length * 2);
    const c = await startController(t, { controller: { batchSize: 500 } });
    try {
      await until('all Ready', async () => (await notReady()) === 0);
      await until('no job due', async () => {
        const r = await t.owner.query(
          `select count(*)::int as n from reconcile_jobs where run_after <= now()`,
        );
        return r.rows[0].n === 0;
      });
    } finally {
      await c.stop();
    }
    expect(c.controller.processed).toBe(objects);
    const events = await t.owner.query<{ type: string; n: number }>(
      `select type, count(*)::int as n from outbox_events where type like '%.ready.v1' group by type order by type`,
    );
    expect(Object.fromEntries(events.rows.map((r) => [r.type, r.n]))).toEqual({
      'dev.tenantry.deployment.ready.v1': TENANTS * DEPLOYMENTS.length,
      'dev.tenantry.integrationresource.ready.v1': TENANTS * (DEPLOYMENTS.length + 1),
      'dev.tenantry.tenant.ready.v1': TENANTS,
    });
    // Each tenant's stream: consecutive numbers from 1, whatever the batch wrote at once.
    const gaps = await t.owner.query(`
      select tenant_id from outbox_events where tenant_id is not null
      group by tenant_id having min(seq) <> 1 or max(seq) <> count(*)`);
    expect(gaps.rows).toEqual([]);
    const audit = await t.owner.query<{ n: number }>(
      `select count(*)::int as n from audit_records where action like '%.ready' and actor_principal = 'tenantry-controller'`,
    );
    // Customers and systems publish no status events.
    expect(audit.rows[0]!.n).toBe(objects - 2);
  });
});
