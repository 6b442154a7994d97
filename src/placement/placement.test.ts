import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { diff } from '../domain/diff.js';
import { TenantryError } from '../errors/errors.js';
import type { ObjectRow } from '../registry/object.repository.js';
import type { RegistryService } from '../registry/registry.service.js';
import { stateOf } from '../registry/representation.js';
import { UsageService } from './usage.service.js';

let t: TestDatabase;
let registry: RegistryService;
let usage: UsageService;
const ctx = systemContext('test-operator');

const doc = (kind: string, name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata: { name },
  spec,
});
const tenant = (qualifier: string, extra: Record<string, unknown> = {}) =>
  doc('Tenant', `circlek-eu-prod-${qualifier}`, {
    customer: 'circlek-europe',
    region: 'eu',
    environmentType: 'prod',
    qualifier,
    ...extra,
  });
const deployment = (tenantSlug: string, qualifier: string) =>
  doc('Deployment', `${tenantSlug}-store-${qualifier}`, { tenant: tenantSlug, system: 'store', qualifier });

async function refused(p: Promise<unknown>, code: string, status: number, pointer?: string) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(TenantryError);
  const e = err as TenantryError;
  expect(e.code).toBe(code);
  expect(e.status).toBe(status);
  if (pointer) expect(e.errors).toContainEqual(expect.objectContaining({ pointer, code }));
  return e;
}
async function writes(): Promise<number> {
  const r = await t.owner.query(
    `select (select count(*) from object_versions) + (select count(*) from tenants) + (select count(*) from deployments)
      + (select coalesce(sum(allocated), 0) from cells) + (select count(*) from outbox_events) as n`,
  );
  return Number(r.rows[0].n);
}
const placementOf = async (slug: string) =>
  (await registry.get(ctx, 'Tenant', slug)).status.placement as Record<string, unknown> | null;

beforeAll(async () => {
  t = await createTestDatabase();
  registry = createRegistry(t.db, t.config);
  usage = new UsageService(t.db);
  await registry.apply(ctx, circleK());
  await registry.apply(ctx, [
    doc('Plan', 'tiny', {
      displayName: 'Tiny',
      isolationModels: ['shared'],
      quotas: { deployments: 3, integrationResources: 1 },
    }),
    doc('Cell', 'eu-prod-small', {
      region: 'eu',
      stage: 'prod',
      environmentTypes: ['prod'],
      tenancy: 'shared',
      capacity: { tenants: 0 },
    }),
    doc('Region', 'apac', { displayName: 'Asia Pacific' }),
  ]);
});
afterAll(async () => t?.destroy());

describe('seed 000 placement', () => {
  it('places every Circle K tenant in a cell of its own region, with isolation, quota and partitions', async () => {
    const euProd = await placementOf('circlek-eu-prod');
    expect(euProd).toMatchObject({
      cell: 'eu-prod-1',
      region: 'eu',
      isolation: 'pool',
      plan: 'enterprise',
      networkPartition: 'eu-prod-1/shared',
      dataPartition: { model: 'pool', kind: 'schema', name: 't_circlek_eu_prod' },
      quota: { deployments: { limit: 100, source: 'plan' } },
    });
    expect(await placementOf('circlek-eu-uat')).toMatchObject({ cell: 'eu-nonprod-1', isolation: 'shared' });
    expect(await placementOf('circlek-eu-uat-dev')).toMatchObject({ cell: 'eu-nonprod-1', region: 'eu' });
    expect(await placementOf('circlek-us-prod')).toMatchObject({ cell: 'us-prod-1', region: 'us' });
    const cell = await registry.get(ctx, 'Cell', 'eu-nonprod-1');
    expect(cell.status.allocated).toBe(2);
  });

  it('records the binding through the change path: lineage, audit and the tenant.created event', async () => {
    const id = (await registry.get(ctx, 'Tenant', 'circlek-eu-prod')).metadata.uuid;
    const ev = await t.owner.query(
      `select data from outbox_events where subject = $1 and type = 'dev.tenantry.tenant.created.v1'`,
      [`tenants/${id}`],
    );
    expect(ev.rows[0].data.current.placement).toMatchObject({ cell: 'eu-prod-1', isolation: 'pool' });
    const [v] = await registry.history(ctx, 'Tenant', 'circlek-eu-prod');
    expect((v?.state as { placement?: unknown } | undefined)?.placement).toMatchObject({ cell: 'eu-prod-1' });
    const audit = await t.owner.query(`select after from audit_records where target_id = $1`, [id]);
    expect(audit.rows[0].after.placement).toMatchObject({ cell: 'eu-prod-1' });
  });

  it('an update of a placed tenant: lineage, audit record and event hold the state its row holds after it', async () => {
    // The update and its lineage, audit and event are one statement (issue 24): the state they record
    // is derived from the values set, not read back; it must be what the row then holds.
    const read = async () =>
      (await t.owner.query(`select * from tenants where slug = 'circlek-eu-prod'`)).rows[0] as ObjectRow;
    const before = await read();
    const [outcome] = await registry.apply(ctx, [
      {
        ...doc('Tenant', 'circlek-eu-prod', before.spec as Record<string, unknown>),
        metadata: { name: 'circlek-eu-prod', labels: { team: 'x' } },
      },
    ]);
    expect(outcome).toMatchObject({ action: 'configured', generation: Number(before.generation) + 1 });
    const row = await read();
    expect(row.placement).toBeTruthy();
    const state = stateOf(row);
    const version = await t.owner.query(
      'select state, changes, generation from object_versions where object_id = $1 order by generation desc limit 1',
      [row.id],
    );
    expect(version.rows[0].state).toEqual(state);
    expect(Number(version.rows[0].generation)).toBe(Number(row.generation));
    expect(version.rows[0].changes).toEqual(diff(stateOf(before), state));
    const audit = await t.owner.query(
      `select after from audit_records where target_id = $1 and action = 'tenant.update' order by time desc limit 1`,
      [row.id],
    );
    expect(audit.rows[0].after).toEqual(state);
    const ev = await t.owner.query(
      `select data from outbox_events where subject = $1 and type = 'dev.tenantry.tenant.updated.v1' order by position desc limit 1`,
      [`tenants/${row.id}`],
    );
    expect(ev.rows[0].data.current).toEqual(state);
    expect(outcome?.object.metadata.labels).toEqual({ team: 'x' });
  });

  it('refuses to place an EU tenant in the US region, and writes nothing', async () => {
    const before = await writes();
    await refused(
      registry.apply(ctx, [tenant('x', { residency: { allowedRegions: ['eu'] }, cell: 'us-prod-1' })]),
      'placement.residency_violation',
      422,
      '/0/spec/cell',
    );
    await refused(
      registry.apply(ctx, [tenant('x', { residency: { allowedRegions: ['eu'], preferredRegion: 'us' } })]),
      'placement.residency_violation',
      422,
      '/0/spec/residency/preferredRegion',
    );
    await refused(
      registry.apply(ctx, [tenant('x', { residency: { allowedRegions: ['us'] } })]),
      'placement.residency_violation',
      422,
      '/0/spec/residency/allowedRegions',
    );
    expect(await writes()).toBe(before);
    // The refusals are audited as denied attempts.
    const denied = await t.owner.query(
      `select decision from audit_records where outcome = 'denied' and action = 'tenant.create'`,
    );
    expect(denied.rows.map((r) => r.decision.code)).toEqual([
      'placement.residency_violation',
      'placement.residency_violation',
      'placement.residency_violation',
    ]);
  });
});

describe('refusals', () => {
  it('refuses a silo on a plan that does not allow it', async () => {
    await refused(
      registry.apply(ctx, [tenant('silo', { plan: 'standard', isolation: 'silo' })]),
      'placement.isolation_not_allowed',
      422,
      '/0/spec/isolation',
    );
  });

  it('places a silo in a dedicated cell and refuses the next one when no capacity is left', async () => {
    const [r] = await registry.apply(ctx, [tenant('silo', { plan: 'enterprise', isolation: 'silo' })]);
    expect(r?.placement).toMatchObject({
      cell: 'eu-prod-silo-1',
      isolation: 'silo',
      networkPartition: 'eu-prod-silo-1/dedicated',
      dataPartition: { kind: 'database', name: 'tenantry_circlek_eu_prod_silo' },
    });
    const e = await refused(
      registry.apply(ctx, [tenant('silo2', { plan: 'enterprise', isolation: 'silo' })]),
      'placement.no_capacity',
      409,
      '/0/spec',
    );
    expect(e.details).toMatchObject({
      rule: 'capacity',
      cells: [{ cell: 'eu-prod-silo-1', allocated: 1, capacity: 1 }],
    });
  });

  it('refuses a tenant no cell can host', async () => {
    await refused(
      registry.apply(ctx, [
        doc('Tenant', 'circlek-apac-prod', {
          customer: 'circlek-europe',
          region: 'apac',
          environmentType: 'prod',
        }),
      ]),
      'placement.no_cell',
      422,
      '/0/spec',
    );
  });

  it('re-checks residency and isolation on every change of a placed tenant', async () => {
    await refused(
      registry.apply(ctx, [
        doc('Tenant', 'circlek-eu-uat', {
          customer: 'circlek-europe',
          region: 'eu',
          environmentType: 'uat',
          plan: 'standard',
          isolation: 'pool',
        }),
      ]),
      'placement.migration_required',
      409,
      '/0/spec/isolation',
    );
    await refused(
      registry.apply(ctx, [
        doc('Tenant', 'circlek-eu-uat', {
          customer: 'circlek-europe',
          region: 'eu',
          environmentType: 'uat',
          plan: 'standard',
          cell: 'us-nonprod-1',
        }),
      ]),
      'placement.residency_violation',
      422,
      '/0/spec/cell',
    );
  });

  it('refuses a residency change that would leave a tenant outside its allowed regions', async () => {
    await registry.apply(ctx, [
      doc('Region', 'ch', { displayName: 'Switzerland', jurisdiction: 'CH' }),
      doc('Cell', 'ch-prod-1', {
        region: 'ch',
        stage: 'prod',
        environmentTypes: ['prod'],
        tenancy: 'shared',
        capacity: { tenants: 5 },
      }),
    ]);
    const [r] = await registry.apply(ctx, [
      tenant('ch', { residency: { allowedRegions: ['eu', 'ch'], preferredRegion: 'ch' } }),
    ]);
    expect(r?.placement).toMatchObject({ cell: 'ch-prod-1', region: 'ch' });
    const e = await refused(
      registry.apply(ctx, [tenant('ch', { residency: { allowedRegions: ['eu'] } })]),
      'placement.residency_violation',
      422,
      '/0/spec/residency/allowedRegions',
    );
    expect(e.details).toMatchObject({ region: 'ch', cell: 'ch-prod-1', allowedRegions: ['eu'] });
    // A change that keeps the data where it is passes, and the binding stays.
    const [same] = await registry.apply(ctx, [
      tenant('ch', { residency: { allowedRegions: ['eu', 'ch'] }, description: 'still in ch' }),
    ]);
    expect(same?.placement).toMatchObject({ cell: 'ch-prod-1' });
  });

  it('refuses a cell capacity below its tenants, and deleting a cell or plan in use', async () => {
    await refused(
      registry.apply(ctx, [
        doc('Cell', 'eu-nonprod-1', {
          region: 'eu',
          stage: 'nonprod',
          environmentTypes: ['dev', 'qa', 'uat', 'staging'],
          tenancy: 'shared',
          capacity: { tenants: 1 },
        }),
      ]),
      'cell.capacity_below_allocation',
      409,
      '/0/spec/capacity/tenants',
    );
    await refused(registry.delete(ctx, 'Cell', 'eu-nonprod-1'), 'cell.in_use', 409);
    await refused(registry.delete(ctx, 'Plan', 'standard'), 'plan.in_use', 409);
    await refused(registry.delete(ctx, 'Region', 'eu'), 'region.in_use', 409);
  });
});

describe('quotas', () => {
  it('refuses the deployment over quota with quota, use and limit, and versions the usage', async () => {
    await registry.apply(ctx, [tenant('q', { plan: 'tiny' })]);
    await registry.apply(
      ctx,
      [1, 2, 3].map((i) => deployment('circlek-eu-prod-q', `q${i}`)),
    );
    const e = await refused(
      registry.apply(ctx, [deployment('circlek-eu-prod-q', 'q4')]),
      'quota.exceeded',
      409,
      '/0/metadata',
    );
    expect(e.details).toMatchObject({ quota: 'deployments', used: 3, limit: 3, requested: 1 });
    const u = await usage.usage(ctx, 'circlek-eu-prod-q');
    expect(u.quotas.find((q) => q.name === 'deployments')).toMatchObject({
      used: 3,
      limit: 3,
      source: 'plan',
    });
    expect(u.quotas.find((q) => q.name === 'storageGiB')).toMatchObject({ limit: null, source: 'none' });
    const h = await usage.history(ctx, 'circlek-eu-prod-q');
    expect(h.map((v) => v.version)).toEqual([3, 2, 1]);
    expect(h[0]).toMatchObject({ reason: 'deployment.create', plan: 'tiny', usage: { deployments: 3 } });
  });

  it('lets an audited, expiring override lift a quota, and the quota returns when it expires', async () => {
    const o = await usage.setOverride(ctx, 'circlek-eu-prod-q', {
      name: 'deployments',
      value: 4,
      reason: 'store roll-out',
      expiresInSeconds: 2,
    });
    const [r] = await registry.apply(ctx, [deployment('circlek-eu-prod-q', 'q4')]);
    expect(r?.verdicts).toContainEqual({
      rule: 'quota.deployments',
      outcome: 'allow',
      detail: '4/4 after this change',
    });
    const audit = await t.owner.query(`select after from audit_records where action = 'limits.override'`);
    expect(audit.rows[0].after).toMatchObject({
      id: o.id,
      name: 'deployments',
      value: 4,
      reason: 'store roll-out',
    });
    await new Promise((res) => setTimeout(res, 2100));
    await refused(registry.apply(ctx, [deployment('circlek-eu-prod-q', 'q5')]), 'quota.exceeded', 409);
  });

  it('refuses a plan change that the current use or isolation does not fit', async () => {
    await refused(
      registry.apply(ctx, [
        doc('Tenant', 'circlek-eu-prod', {
          customer: 'circlek-europe',
          region: 'eu',
          environmentType: 'prod',
          plan: 'tiny',
          isolation: 'pool',
        }),
      ]),
      'placement.isolation_not_allowed',
      422,
      '/0/spec/isolation',
    );
    await registry.apply(ctx, [tenant('p', { plan: 'standard' })]);
    await registry.apply(
      ctx,
      [1, 2, 3, 4].map((i) => deployment('circlek-eu-prod-p', `p${i}`)),
    );
    const e = await refused(
      registry.apply(ctx, [tenant('p', { plan: 'tiny' })]),
      'quota.exceeded',
      409,
      '/0/spec/plan',
    );
    expect(e.details).toMatchObject({ quota: 'deployments', used: 4, limit: 3 });
    // Deleting gives the unit back, and the history keeps a version for it.
    await registry.delete(ctx, 'Deployment', 'circlek-eu-prod-p-store-p4');
    const [latest] = await usage.history(ctx, 'circlek-eu-prod-p');
    expect(latest).toMatchObject({ reason: 'deployment.delete', usage: { deployments: 3 } });
  });

  it('race: N concurrent creates against a quota of K → exactly K succeed', async () => {
    await registry.apply(ctx, [tenant('race', { plan: 'tiny' })]);
    const N = 10;
    const results = await Promise.allSettled(
      Array.from({ length: N }, (_, i) => registry.apply(ctx, [deployment('circlek-eu-prod-race', `r${i}`)])),
    );
    const ok = results.filter((r) => r.status === 'fulfilled');
    const codes = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as TenantryError).code] : []));
    expect(ok).toHaveLength(3);
    expect(codes).toEqual(Array(N - 3).fill('quota.exceeded'));
    const n = await t.owner.query(
      `select count(*)::int as n from deployments d join tenants t on t.id = d.tenant_id where t.slug = 'circlek-eu-prod-race'`,
    );
    expect(n.rows[0].n).toBe(3);
  });

  it('race: N concurrent tenants against the last K units of cell capacity → exactly K placed', async () => {
    await registry.apply(ctx, [
      doc('Cell', 'us-qa-1', {
        region: 'us',
        stage: 'qa',
        environmentTypes: ['qa'],
        tenancy: 'shared',
        capacity: { tenants: 2 },
      }),
    ]);
    const N = 8;
    const results = await Promise.allSettled(
      Array.from({ length: N }, (_, i) =>
        registry.apply(ctx, [
          doc('Tenant', `circlek-us-qa-c${i}`, {
            customer: 'circlek-north-america',
            region: 'us',
            environmentType: 'qa',
            qualifier: `c${i}`,
            cell: 'us-qa-1',
          }),
        ]),
      ),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    expect(
      results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as TenantryError).code] : [])),
    ).toEqual(Array(N - 2).fill('placement.no_capacity'));
    expect((await registry.get(ctx, 'Cell', 'us-qa-1')).status.allocated).toBe(2);
  });

  it('releases cell capacity when a tenant is deleted', async () => {
    const slug = 'circlek-us-qa-c0';
    const placed = (await t.owner.query(`select slug from tenants where slug like 'circlek-us-qa-c%'`))
      .rows[0].slug;
    for (const a of ['archive'] as const) await registry.transition(ctx, placed ?? slug, a);
    await settleWorkflows(t);
    await registry.delete(ctx, 'Tenant', placed ?? slug);
    expect((await registry.get(ctx, 'Cell', 'us-qa-1')).status.allocated).toBe(1);
  });
});

describe('tenant scope', () => {
  it('leaves cell capacity to the platform: a tenant-scoped caller cannot delete a placed tenant', async () => {
    const [r] = await registry.apply(ctx, [tenant('scoped', { plan: 'standard' })]);
    const scoped = systemContext('tenant-admin', { scope: { kind: 'tenant', tenantId: r!.uuid } });
    await registry.transition(scoped, r!.uuid, 'archive');
    await settleWorkflows(t);
    await refused(registry.delete(scoped, 'Tenant', r!.uuid), 'placement.platform_only', 403);
    const cell = await registry.get(ctx, 'Cell', 'eu-prod-1');
    await registry.delete(ctx, 'Tenant', r!.uuid);
    expect((await registry.get(ctx, 'Cell', 'eu-prod-1')).status.allocated).toBe(
      Number(cell.status.allocated) - 1,
    );
  });
});

describe('dry run', () => {
  it('shows the placement decision and the verdicts a real apply would meet, writing nothing', async () => {
    const before = await writes();
    const out = await registry.apply(ctx, [tenant('dry', { plan: 'standard' })], { dryRun: true });
    expect(out[0]?.placement).toMatchObject({ cell: 'eu-prod-1', isolation: 'shared', plan: 'standard' });
    expect(out[0]?.verdicts?.map((v) => v.rule)).toEqual(['residency', 'plan.isolation', 'capacity']);
    expect(await writes()).toBe(before);
    await refused(
      registry.apply(ctx, [deployment('circlek-eu-prod-race', 'dry')], { dryRun: true }),
      'quota.exceeded',
      409,
    );
  });
});

describe('without Region or Cell objects', () => {
  it('falls back to the configured regions and leaves tenants unplaced', async () => {
    const fresh = await createTestDatabase();
    try {
      const r = createRegistry(fresh.db, fresh.config);
      const out = await r.apply(ctx, [
        doc('Customer', 'acme', { displayName: 'Acme', shortCode: 'acme' }),
        doc('Tenant', 'acme-apac-dev', { customer: 'acme', region: 'apac', environmentType: 'dev' }),
      ]);
      expect(out[1]?.placement).toBeNull();
      expect(out[1]?.verdicts).toContainEqual(expect.objectContaining({ rule: 'placement' }));
    } finally {
      await fresh.destroy();
    }
  });
});
