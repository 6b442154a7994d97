import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK, clone } from '../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { asTenant } from '../db/database.js';
import { TenantryError } from '../errors/errors.js';
import type { RegistryService } from './registry.service.js';

let t: TestDatabase;
let registry: RegistryService;
const ctx = systemContext('test-operator');

async function count(table: string): Promise<number> {
  const r = await t.owner.query(`select count(*)::int as n from ${table}`);
  return r.rows[0].n;
}
async function counts() {
  const out: Record<string, number> = {};
  for (const table of [
    'customers',
    'systems',
    'tenants',
    'deployments',
    'integration_resources',
    'object_versions',
    'audit_records',
    'outbox_events',
    'reconcile_jobs',
  ])
    out[table] = await count(table);
  return out;
}
async function expectError(p: Promise<unknown>, code: string, status?: number): Promise<TenantryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(TenantryError);
  const e = err as TenantryError;
  expect(e.code).toBe(code);
  if (status) expect(e.status).toBe(status);
  return e;
}
const tenantDoc = (name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Tenant',
  metadata: { name, ...metadata },
  spec,
});

beforeAll(async () => {
  t = await createTestDatabase();
  registry = createRegistry(t.db, t.config);
});
afterAll(async () => t?.destroy());

describe('registry and change path', () => {
  it('applies the Circle K hierarchy and a second apply changes nothing', async () => {
    const first = await registry.apply(ctx, circleK());
    expect(first.every((r) => r.action === 'created')).toBe(true);
    const c = await counts();
    expect(c).toMatchObject({
      customers: 2,
      systems: 3,
      tenants: 4,
      deployments: 7,
      integration_resources: 13,
    });
    // One lineage version, audit record, event and job per object.
    expect(c.object_versions).toBe(38);
    expect(c.audit_records).toBe(38);
    expect(c.outbox_events).toBe(38);
    expect(c.reconcile_jobs).toBe(38);

    const second = await registry.apply(ctx, circleK());
    expect(second.map((r) => r.action)).toEqual(second.map(() => 'unchanged'));
    expect(await counts()).toEqual(c);

    const dep = await registry.get(ctx, 'Deployment', 'circlek-eu-prod-store-pl');
    expect(dep.metadata.uuid).toBe('a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d');
    const dev = await registry.get(ctx, 'Tenant', 'circlek-eu-uat-dev');
    expect(dev.spec).toMatchObject({ qualifier: 'dev', environmentType: 'uat' });
    const topic = await registry.get(
      ctx,
      'IntegrationResource',
      'circlek-eu-prod-plan.supply-chain.transactions.order-proposals.v1.pub',
    );
    expect(topic.status.physicalName).toBe(
      'f1a2b3c4-d5e6-4f7a-8b9c-0d1e2f3a4b5c.supply-chain.transactions.order-proposals.v1.pub',
    );
    const blob = await registry.get(ctx, 'IntegrationResource', 'circlek-eu-prod-plan.blob');
    expect(blob.status.physicalName).toBe('circlek-eu-prod-plan');
    // Both customers share the short code; tenant slugs stay unique.
    const us = await registry.get(ctx, 'Tenant', 'circlek-us-prod');
    expect(us.metadata.uuid).toBe('dba0f5e5-ea44-48cf-8320-46a1e5908bbf');
  });

  it('refuses the malformed UUIDs of seed 000, naming the field', async () => {
    const docs = [
      tenantDoc(
        'circlek-eu-uat-dev2',
        { customer: 'circlek-europe', region: 'eu', environmentType: 'uat', qualifier: 'dev2' },
        { uuid: '9d0746f1-cace-537b-9950-b158f30bgb0e' },
      ),
    ];
    const e = await expectError(registry.apply(ctx, docs), 'manifest.invalid', 422);
    expect(e.errors).toContainEqual(
      expect.objectContaining({ pointer: '/0/metadata/uuid', code: 'uuid.invalid' }),
    );
    const na = {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Customer',
      metadata: { name: 'cna', uuid: 'afa6e0d2-b9ce-426a-8849-a047e29afdf' },
      spec: { displayName: 'x', shortCode: 'x' },
    };
    const e2 = await expectError(registry.apply(ctx, [na]), 'manifest.invalid');
    expect(e2.errors[0]?.pointer).toBe('/0/metadata/uuid');
  });

  it('keeps UUIDs immutable', async () => {
    const before = await counts();
    const doc = tenantDoc(
      'circlek-eu-prod',
      { customer: 'circlek-europe', region: 'eu', environmentType: 'prod' },
      { uuid: '11111111-2222-4333-8444-555555555555' },
    );
    const e = await expectError(registry.apply(ctx, [doc]), 'manifest.invalid', 422);
    expect(e.errors).toContainEqual(
      expect.objectContaining({ pointer: '/0/metadata/uuid', code: 'uuid.immutable' }),
    );
    // Changing a field the slug derives from, by UUID, is refused as well.
    const moved = tenantDoc(
      'circlek-eu-prod',
      { customer: 'circlek-europe', region: 'us', environmentType: 'prod' },
      { uuid: '6846a7a4-4e09-41a8-918c-9c8e2aa938ac' },
    );
    delete (moved.metadata as Record<string, unknown>).name;
    const e2 = await expectError(registry.apply(ctx, [moved]), 'manifest.invalid');
    expect(e2.errors).toContainEqual(
      expect.objectContaining({ pointer: '/0/spec/region', code: 'field.immutable' }),
    );
    expect(await counts()).toEqual(before);
  });

  it('refuses bad input with typed errors and writes nothing', async () => {
    const before = await counts();
    const cases: [unknown, string, string][] = [
      [
        tenantDoc('circlek-mars-prod', {
          customer: 'circlek-europe',
          region: 'mars',
          environmentType: 'prod',
        }),
        '/0/spec/region',
        'region.unknown',
      ],
      [
        tenantDoc('x', { customer: 'circlek-europe', region: 'eu', environmentType: 'Prod_1' }),
        '/0/spec/environmentType',
        'field.invalid',
      ],
      [
        tenantDoc('x', {
          customer: 'circlek-europe',
          region: 'eu',
          environmentType: 'qa',
          qualifier: 'bad slug!',
        }),
        '/0/spec/qualifier',
        'field.invalid',
      ],
      [
        tenantDoc('x', { customer: 'nobody', region: 'eu', environmentType: 'qa' }),
        '/0/spec/customer',
        'customer.not_found',
      ],
      [
        tenantDoc('wrong-name', { customer: 'circlek-europe', region: 'eu', environmentType: 'qa' }),
        '/0/metadata/name',
        'slug.mismatch',
      ],
      [
        tenantDoc('x', { customer: 'circlek-europe', region: 'eu', environmentType: 'qa', colour: 'red' }),
        '/0/spec/colour',
        'field.unknown',
      ],
      [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Deployment',
          metadata: {},
          spec: { tenant: 'circlek-eu-prod', system: 'nope' },
        },
        '/0/spec/system',
        'system.not_found',
      ],
      [{ apiVersion: 'v0', kind: 'Tenant', metadata: {}, spec: {} }, '/0/apiVersion', 'manifest.api_version'],
      [
        { apiVersion: 'tenantry.dev/v1', kind: 'Planet', metadata: {}, spec: {} },
        '/0/kind',
        'manifest.kind_unknown',
      ],
    ];
    for (const [doc, pointer, code] of cases) {
      const e = await expectError(registry.apply(ctx, [doc]), 'manifest.invalid', 422);
      expect(e.errors, JSON.stringify(e.errors)).toContainEqual(expect.objectContaining({ pointer, code }));
    }
    // A duplicate slug: a second customer named like the first but a different UUID.
    const dup = {
      apiVersion: 'tenantry.dev/v1',
      kind: 'Customer',
      metadata: { name: 'circlek-europe', uuid: '11111111-2222-4333-8444-555555555555' },
      spec: { displayName: 'Dup', shortCode: 'circlek' },
    };
    const e = await expectError(registry.apply(ctx, [dup]), 'manifest.invalid');
    expect(e.errors[0]).toMatchObject({ pointer: '/0/metadata/uuid', code: 'uuid.immutable' });
    await expectError(registry.apply(ctx, [clone(circleK()[3])], { mode: 'create' }), 'customer.exists', 409);
    expect(await counts()).toEqual(before);
  });

  it('refuses a stale generation with a conflict', async () => {
    const current = await registry.get(ctx, 'Tenant', 'circlek-eu-uat');
    const doc = tenantDoc(
      'circlek-eu-uat',
      { customer: 'circlek-europe', region: 'eu', environmentType: 'uat', description: 'x' },
      { generation: current.metadata.generation + 5 },
    );
    const e = await expectError(registry.apply(ctx, [doc]), 'object.generation_conflict', 409);
    expect(e.details).toMatchObject({ currentGeneration: current.metadata.generation });
    await expectError(
      registry.transition(ctx, 'circlek-eu-uat', 'suspend', current.metadata.generation + 1),
      'object.generation_conflict',
      412,
    );
  });

  it('keeps the lineage of three successive changes', async () => {
    const spec = { customer: 'circlek-europe', region: 'eu', environmentType: 'uat' };
    for (const d of ['one', 'two', 'three']) {
      await registry.apply({ ...ctx, actor: { principal: `alice-${d}`, kind: 'user' } }, [
        tenantDoc('circlek-eu-uat', { ...spec, description: d }),
      ]);
    }
    const history = await registry.history(ctx, 'Tenant', 'circlek-eu-uat');
    expect(history.map((h) => h.generation)).toEqual([1, 2, 3, 4]);
    expect(history.map((h) => h.action)).toEqual(['create', 'update', 'update', 'update']);
    expect(history[3]?.changes).toEqual([
      { op: 'replace', path: '/spec/description', from: 'two', to: 'three' },
    ]);
    expect(history[2]?.actor).toEqual({ principal: 'alice-two', kind: 'user' });
    expect((history[1]!.state as { spec: { description: string } }).spec.description).toBe('one');
  });

  it('serialises 8 parallel writers on one tenant without losing an update', async () => {
    const spec = { customer: 'circlek-europe', region: 'eu', environmentType: 'prod' };
    const start = (await registry.get(ctx, 'Tenant', 'circlek-eu-prod')).metadata.generation;
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        registry.apply(ctx, [tenantDoc('circlek-eu-prod', spec, { labels: { writer: String(i) } })]),
      ),
    );
    const history = await registry.history(ctx, 'Tenant', 'circlek-eu-prod');
    const gens = history.map((h) => h.generation);
    expect(gens).toEqual(Array.from({ length: start + 8 }, (_, i) => i + 1));
    const writers = history
      .slice(start)
      .map((h) => (h.state as { metadata: { labels: { writer: string } } }).metadata.labels.writer);
    expect(new Set(writers).size).toBe(8);
  });

  it('runs concurrent multi-tenant applies without deadlock, retrying the ones that still meet one', async () => {
    await registry.apply(ctx, circleK());
    const eu = { customer: 'circlek-europe', region: 'eu', environmentType: 'uat' };
    const us = { customer: 'circlek-north-america', region: 'us', environmentType: 'prod' };
    const labelled = (i: number) => ({ labels: { round: String(i) } });
    const before = await counts();
    // Same kind, opposite document order: locks are taken by name, so they never cross.
    const rounds = 12;
    await Promise.all(
      Array.from({ length: rounds }, (_, i) => {
        const pair = [
          tenantDoc('circlek-eu-uat', eu, labelled(i)),
          tenantDoc('circlek-us-prod', us, labelled(i)),
        ];
        return registry.apply(ctx, i % 2 === 0 ? pair : pair.reverse());
      }),
    );
    // Across kinds: a tenant of one chain with a deployment of the other, both ways at once. The
    // chain heads are locked in opposite order; PostgreSQL aborts one side and run() retries it.
    const deployment = (name: string, tenant: string, system: string, i: number) => ({
      apiVersion: 'tenantry.dev/v1',
      kind: 'Deployment',
      metadata: { name, ...labelled(i) },
      spec: { tenant, system },
    });
    for (let i = 0; i < 3; i++) {
      await Promise.all([
        registry.apply(ctx, [
          tenantDoc('circlek-eu-uat', eu, labelled(100 + i)),
          deployment('circlek-us-prod-plan', 'circlek-us-prod', 'plan', 100 + i),
        ]),
        registry.apply(ctx, [
          tenantDoc('circlek-us-prod', us, labelled(200 + i)),
          deployment('circlek-eu-uat-plan', 'circlek-eu-uat', 'plan', 200 + i),
        ]),
      ]);
    }
    const after = await counts();
    expect(after.object_versions! - before.object_versions!).toBe(rounds * 2 + 3 * 4);
    expect(after.audit_records! - before.audit_records!).toBe(rounds * 2 + 3 * 4);
  });

  it('runs lifecycle transitions through the change path and refuses invalid ones', async () => {
    const t1 = await registry.transition(ctx, 'circlek-eu-uat-dev', 'suspend');
    expect(t1.status.lifecycle).toBe('Suspended');
    await expectError(
      registry.transition(ctx, 'circlek-eu-uat-dev', 'suspend'),
      'lifecycle.invalid_transition',
      409,
    );
    await expectError(
      registry.delete(ctx, 'Tenant', 'circlek-eu-uat-dev'),
      'lifecycle.invalid_transition',
      409,
    );
    await settleWorkflows(t);
    await registry.transition(ctx, 'circlek-eu-uat-dev', 'archive');
    await settleWorkflows(t);
    const deleted = await registry.delete(ctx, 'Tenant', 'circlek-eu-uat-dev');
    expect(deleted.status.lifecycle).toBe('Deleted');
    expect(deleted.metadata.deletedAt).toBeDefined();
    // Its deployment and resources went first, each leaving a tombstone.
    const r = await t.owner.query(
      `select object_kind, action from object_versions where tenant_id = $1 and action = 'delete' order by id`,
      [deleted.metadata.uuid],
    );
    expect(r.rows.map((x) => x.object_kind)).toEqual([
      'Deployment',
      'IntegrationResource',
      'IntegrationResource',
      'Tenant',
    ]);
    const events = await t.owner.query(
      `select type from outbox_events where tenant_id = $1 order by time, type`,
      [deleted.metadata.uuid],
    );
    expect(events.rows.map((x) => x.type)).toContain('dev.tenantry.tenant.suspended.v1');
    await expectError(registry.get(ctx, 'Tenant', 'circlek-eu-uat-dev'), 'tenant.not_found', 404);
    expect(
      (await registry.get(ctx, 'Tenant', deleted.metadata.uuid, { includeDeleted: true })).status.lifecycle,
    ).toBe('Deleted');
  });
});

describe('atomicity of the change path', () => {
  for (const table of ['tenants', 'object_versions', 'audit_records', 'outbox_events', 'reconcile_jobs']) {
    it(`writes nothing when the ${table} write fails`, async () => {
      await t.owner.query(
        `create or replace function fail_write() returns trigger language plpgsql as $$ begin raise exception 'injected failure'; end $$`,
      );
      await t.owner.query(
        `create trigger inject_failure before insert or update on ${table} for each row execute function fail_write()`,
      );
      try {
        const before = await counts();
        const doc = tenantDoc('circlek-eu-qa', {
          customer: 'circlek-europe',
          region: 'eu',
          environmentType: 'qa',
        });
        await expect(registry.apply(ctx, [doc])).rejects.toThrow(/injected failure/);
        expect(await counts()).toEqual(before);
      } finally {
        await t.owner.query(`drop trigger inject_failure on ${table}`);
      }
    });
  }
});

describe('row-level security', () => {
  it('hides other tenants from raw SQL under the tenant scope', async () => {
    const prod = (await registry.get(ctx, 'Tenant', 'circlek-eu-prod')).metadata.uuid;
    const uat = (await registry.get(ctx, 'Tenant', 'circlek-eu-uat')).metadata.uuid;
    await asTenant(t.db, uat, async (trx) => {
      const tenants = await sql<{ slug: string }>`select slug from tenants`.execute(trx);
      expect(tenants.rows.map((r) => r.slug)).toEqual(['circlek-eu-uat']);
      const deps = await sql<{ tenant_id: string }>`select tenant_id from deployments`.execute(trx);
      expect(deps.rows.length).toBeGreaterThan(0);
      expect(deps.rows.every((r) => r.tenant_id === uat)).toBe(true);
      const foreign = await sql`select * from deployments where tenant_id = ${prod}`.execute(trx);
      expect(foreign.rows).toEqual([]);
      const audits = await sql<{ tenant_id: string | null }>`select tenant_id from audit_records`.execute(
        trx,
      );
      expect(audits.rows.every((r) => r.tenant_id === uat)).toBe(true);
      const customers = await sql<{ slug: string }>`select slug from customers`.execute(trx);
      expect(customers.rows.map((r) => r.slug)).toEqual(['circlek-europe']);
      // Writing into another tenant is refused by the database itself.
      await expect(
        sql`update deployments set labels = '{"x":"y"}' where tenant_id = ${prod}`.execute(trx),
      ).resolves.toMatchObject({ numAffectedRows: 0n });
    });
    await expect(
      asTenant(t.db, uat, (trx) =>
        sql`insert into tenants (id, customer_id, slug, region, environment_type, spec) select gen_random_uuid(), customer_id, 'sneaky', 'eu', 'qa', '{}' from tenants`.execute(
          trx,
        ),
      ),
    ).rejects.toThrow(/row-level security/);
  });

  it('shows nothing to a connection that has not set a scope', async () => {
    const client = new pg.Client({ connectionString: t.appUrl });
    await client.connect();
    try {
      for (const table of ['tenants', 'deployments', 'customers', 'audit_records', 'object_versions']) {
        const r = await client.query(`select count(*)::int as n from ${table}`);
        expect(r.rows[0].n, table).toBe(0);
      }
      // The application role owns nothing and cannot switch row-level security off.
      await expect(client.query('alter table tenants disable row level security')).rejects.toThrow(
        /must be owner/,
      );
      await expect(client.query('set row_security = off; select * from tenants')).rejects.toThrow();
    } finally {
      await client.end();
    }
  });
});

describe('the statements of one tenant change', () => {
  let db: TestDatabase;
  let own: RegistryService;
  beforeAll(async () => {
    db = await createTestDatabase();
    own = createRegistry(db.db, db.config);
  });
  afterAll(async () => db?.destroy());

  it('changes a tenant in four round trips: begin with the scope, its context, the change, commit (issue 24)', async () => {
    // A placed tenant named by UUID, with a plan: its context (regions, customer, plan, the locked
    // row, the limits in force) is one statement.
    await own.apply(ctx, circleK());
    const now = await own.get(ctx, 'Tenant', 'circlek-eu-prod');
    expect(now.spec).toHaveProperty('plan');
    const changed = tenantDoc('circlek-eu-prod', now.spec as Record<string, unknown>, {
      uuid: now.metadata.uuid,
      labels: { round: 'trips' },
    });
    const sent: string[] = [];
    const query = pg.Client.prototype.query;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const q = args[0] as string | { text: string };
      sent.push(typeof q === 'string' ? q : q.text);
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof query;
    let results: Awaited<ReturnType<RegistryService['apply']>>;
    try {
      results = await own.apply(ctx, [changed]);
    } finally {
      pg.Client.prototype.query = query;
    }
    expect(results.map((r) => r.action)).toEqual(['configured']);
    expect(sent.map((s) => s.trim().split(/\s+/).slice(0, 3).join(' '))).toEqual([
      "begin; select set_config('tenantry.platform',",
      'with customer as',
      'with object as',
      'commit',
    ]);
  });
});
