import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type TestController, until } from '../../test/helpers/controller.js';
import { configDoc, policyDoc, runtimeBase, serviceDoc } from '../../test/helpers/runtime.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { canonicalJson, configChecksum } from '../domain/config-checksum.js';
import { TenantryError } from '../errors/errors.js';
import type { RegistryService } from '../registry/registry.service.js';

const run = promisify(execFile);
async function refused(p: Promise<unknown>, code: string, status: number) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(TenantryError);
  const e = err as TenantryError;
  expect(e.code).toBe(code);
  expect(e.status).toBe(status);
  return e;
}

describe('configuration checksum (RFC 8785 canonical JSON, SHA-256)', () => {
  it('is equal for equal content whatever the key order or number spelling, and differs otherwise', () => {
    expect(canonicalJson({ b: [1e3, 0.5, 'x'], a: { z: null, y: true } })).toBe(
      '{"a":{"y":true,"z":null},"b":[1000,0.5,"x"]}',
    );
    expect(configChecksum({ a: 1, b: { c: 2, d: 3 } })).toBe(configChecksum({ b: { d: 3, c: 2.0 }, a: 1 }));
    expect(configChecksum({ a: 1 })).not.toBe(configChecksum({ a: 2 }));
    expect(configChecksum({ a: 1 })).toMatch(/^[0-9a-f]{64}$/);
  });

  it('is the same in another process (node, not this one)', async () => {
    const content = { featureX: true, limits: { orders: 500, ratio: 0.25 }, name: 'plän' };
    const script = `import('canonicalize').then(async (m) => { const c = (m.default.default ?? m.default)(${JSON.stringify(content)});
      const { createHash } = await import('node:crypto'); process.stdout.write(createHash('sha256').update(c, 'utf8').digest('hex')); })`;
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: process.cwd() });
    expect(stdout).toBe(configChecksum(content));
  });
});

describe('runtime inventory kinds (Service, ScalingPolicy, Configuration)', () => {
  let t: TestDatabase;
  let registry: RegistryService;
  let c: TestController;
  const ctx = systemContext('test-operator');

  beforeAll(async () => {
    t = await createTestDatabase();
    registry = createRegistry(t.db, t.config);
    await registry.apply(ctx, runtimeBase(10));
    // No compute target configured: services must say so, never pretend.
    c = await startController(t, {
      env: { TENANTRY_RUNTIME: 'none' },
      controller: { resyncIntervalMs: 60_000 },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await t?.destroy();
  });

  it('refuses a scaling policy whose max × unit cost exceeds the binding quota, with the numbers', async () => {
    await registry.apply(ctx, [serviceDoc()]);
    const e = await refused(registry.apply(ctx, [policyDoc(6)]), 'quota.exceeded', 409);
    expect(e.details).toMatchObject({
      quota: 'computeUnits',
      maxReplicas: 6,
      unitCost: 2,
      requested: 12,
      used: 0,
      limit: 10,
    });
    expect(e.errors).toContainEqual(expect.objectContaining({ pointer: '/0/spec/maxReplicas' }));
    expect(e.message).toMatch(/6 replicas × unit cost 2 = 12 units.*allows 10 \(at most 5 replicas/);
    expect((await t.owner.query('select count(*)::int as n from scaling_policies')).rows[0].n).toBe(0);
    await registry.apply(ctx, [policyDoc(5)]);
    // One policy per service: its name is the service's, a second manifest is the same policy.
    const again = await registry.apply(ctx, [policyDoc(4, 2)]);
    expect(again[0]).toMatchObject({ action: 'configured' });
    expect((await t.owner.query('select count(*)::int as n from scaling_policies')).rows[0].n).toBe(1);
  });

  it("counts the tenant's other services against the quota, and a service's replicas without a policy", async () => {
    // acme-eu-prod-plan-api holds 4 × 2 = 8 of 10 units: a worker of 2 replicas × 2 does not fit.
    const e = await refused(
      registry.apply(ctx, [serviceDoc({ component: 'worker', replicas: 2, unitCost: 2 })]),
      'quota.exceeded',
      409,
    );
    expect(e.details).toMatchObject({ used: 8, requested: 4, limit: 10 });
    await registry.apply(ctx, [serviceDoc({ component: 'worker', replicas: 1, unitCost: 2 })]);
  });

  it('a service without a compute target ends Ready=False, ProviderNotConfigured', async () => {
    const row = await until('the service settled', async () => {
      const r = await t.owner.query(
        `select phase, c->>'reason' as reason, c->>'message' as message from services,
           lateral jsonb_array_elements(conditions) c where slug = 'acme-eu-prod-plan-api' and c->>'type' = 'Ready'`,
      );
      return r.rows[0]?.reason === 'ProviderNotConfigured' && r.rows[0];
    });
    expect(row.message).toMatch(/TENANTRY_KUBECONFIG/);
  });

  it('configuration versions: immutable content, checksum, draft / active / superseded settled by the controller', async () => {
    await registry.apply(ctx, [
      configDoc(1, { featureX: false, orders: { max: 100 } }),
      configDoc(2, { featureX: true, orders: { max: 100 } }),
      configDoc(3, { featureX: true, orders: { max: 500 } }, 'draft'),
    ]);
    const changed = await refused(
      registry.apply(ctx, [configDoc(1, { featureX: true })]),
      'manifest.invalid',
      422,
    );
    expect(changed.errors).toContainEqual(expect.objectContaining({ code: 'configuration.immutable' }));
    // The same content in another key order is the same version: nothing changes.
    const same = await registry.apply(ctx, [configDoc(1, { orders: { max: 100 }, featureX: false })]);
    expect(same[0]).toMatchObject({ action: 'unchanged' });
    const secret = await refused(
      registry.apply(ctx, [configDoc(4, { db: { host: 'x', password: 'hunter2' } })]),
      'manifest.invalid',
      422,
    );
    expect(secret.errors).toContainEqual(
      expect.objectContaining({
        code: 'configuration.secret_inline',
        pointer: '/0/spec/content/db/password',
      }),
    );
    const states = () =>
      t.owner
        .query('select version, version_state, checksum from configurations order by version')
        .then((r) => r.rows);
    await until('versions settled', async () => {
      const s = await states();
      return s.map((x) => x.version_state).join() === 'superseded,active,draft' && s;
    });
    const s = await states();
    expect(s[0].checksum).toBe(configChecksum({ featureX: false, orders: { max: 100 } }));
    // Activating the draft supersedes version 2.
    await registry.apply(ctx, [configDoc(3, { featureX: true, orders: { max: 500 } }, 'active')]);
    await until(
      'version 3 active',
      async () => (await states()).map((x) => x.version_state).join() === 'superseded,superseded,active',
    );
  });
});
