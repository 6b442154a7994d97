import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { startWorkflowEngine } from '../../test/helpers/workflows.js';
import { lifecycleWorkflowTypes } from '../workflows/lifecycle-workflows.js';
import { withPromotions } from './promotion-workflow.js';

interface Target {
  tenant: string;
  deployment: string;
  wave: number;
  state: string;
  reason: string | null;
  fromVersion: string | null;
}
interface Promo {
  id: string;
  state: string;
  error: string | null;
  mode: string;
  version: string;
  gates: { gate: string; passed: boolean }[];
  waves: Record<string, unknown>;
  targets: Target[];
}
interface AuditRow {
  action: string;
  target_id: string | null;
  correlation_id: string;
  after: { shaLineage: string[]; artifacts: { digest: string }[]; gates: { gate: string }[] };
}

/** The promotions' clock: starts now, moved by the test (soak times, maintenance windows). */
const clock = {
  t: Date.now(),
  now() {
    return this.t;
  },
};

const customer = `rc${randomBytes(2).toString('hex')}`;
const system = 'shop';
const PROD = 52;
const prodTenant = (i: number) => `${customer}-eu-prod-t${String(i).padStart(2, '0')}`;
const hex = (n: number) => randomBytes(n).toString('hex');

let s: TestServer;
let engine: Awaited<ReturnType<typeof startWorkflowEngine>>;
let rita: string;
let alice: string;
let bob: string;
/** Deployments whose runtime reports an error rate over the limit. */
const failing = new Set<string>();
let runtime: NodeJS.Timeout | undefined;

const doc = (kind: string, metadata: Record<string, unknown>, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});

function release(version: string, fields: Record<string, { type: string; required?: boolean }>) {
  return doc(
    'Release',
    {},
    {
      system,
      version,
      artifacts: [{ service: 'api', image: 'registry.example.com/shop/api', digest: `sha256:${hex(32)}` }],
      configuration: [{ name: 'shop-config', version: `v${version}` }],
      produces: {
        events: [{ type: 'order.placed', version: 1, fields }],
        apis: [{ name: 'orders', version: 1, operations: ['GET /orders'] }],
      },
      provenance: {
        commit: hex(20),
        repository: 'https://git.example.com/shop',
        pipelineRunId: `run-${version}`,
        builder: 'ci.example.com',
        lineage: [hex(20), hex(20)],
      },
      validations: [{ name: 'unit-tests', passed: true }],
    },
  );
}
const V1_FIELDS = { orderId: { type: 'string', required: true }, total: { type: 'number' } };

const stage = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  environmentTypes: [name],
  verification: { timeoutSeconds: 10, maxErrorRate: 0.05 },
  ...extra,
});

beforeAll(async () => {
  s = await startTestServer();
  rita = await s.token({ subject: 'rita' });
  alice = await s.token({ subject: 'alice' });
  bob = await s.token({ subject: 'bob' });
  const tenants = [
    ...['dev', 'qa', 'staging'].map((env) =>
      doc('Tenant', {}, { customer, region: 'eu', environmentType: env }),
    ),
    ...Array.from({ length: PROD }, (_, k) => {
      const i = k + 1;
      const labels: Record<string, string> =
        i <= 3 ? { 'tenantry.dev/early-access': 'true' } : i <= 20 ? { ring: '2' } : {};
      return doc(
        'Tenant',
        { labels },
        { customer, region: 'eu', environmentType: 'prod', qualifier: `t${String(i).padStart(2, '0')}` },
      );
    }),
  ];
  const slugs = [
    ...['dev', 'qa', 'staging'].map((env) => `${customer}-eu-${env}`),
    ...Array.from({ length: PROD }, (_, k) => prodTenant(k + 1)),
  ];
  const res = await s.request('POST', '/v1/apply', {
    body: [
      doc('Customer', { name: customer }, { displayName: 'Release Co', shortCode: customer }),
      doc('System', { name: system }, { displayName: 'Shop', serviceId: system }),
      ...tenants,
      ...slugs.map((tenant) => doc('Deployment', {}, { tenant, system })),
      doc(
        'Pipeline',
        { name: 'shop-pipeline' },
        {
          systems: [system],
          stages: [
            stage('dev'),
            stage('qa'),
            stage('staging'),
            stage('prod', {
              protected: true,
              approvals: 1,
              soakSeconds: 3600,
              waves: [
                { name: 'canary', selector: { earlyAccess: true } },
                { name: 'ring2', selector: { labels: { ring: '2' } } },
                { name: 'rest' },
              ],
              budget: { maxFailures: 1 },
            }),
          ],
        },
      ),
      release('1.0.0', V1_FIELDS),
    ],
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  engine = startWorkflowEngine(s.t, {
    registry: withPromotions(lifecycleWorkflowTypes(s.t.db), { db: s.t.db, clock, recheckMs: 100 }),
  });
  // The runtime: reports the health of every deployment a promotion just updated.
  const report = async () => {
    const r = await s.t.owner.query<{ slug: string; to_version: string }>(
      `select d.slug, pt.to_version from promotion_targets pt
       join deployments d on d.tenant_id = pt.tenant_id and d.id = pt.deployment_id where pt.state = 'Updated'`,
    );
    for (const row of r.rows)
      await s.request('POST', `/v1/deployments/${row.slug}/health`, {
        body: {
          version: row.to_version,
          readyReplicas: 2,
          desiredReplicas: 2,
          errorRate: failing.has(row.slug) ? 0.5 : 0.001,
        },
      });
    runtime = setTimeout(() => void report().catch(() => {}), 50);
  };
  void report();
}, 120_000);

afterAll(async () => {
  clearTimeout(runtime);
  runtime = undefined;
  await engine?.stop();
  await s?.close();
});

const promotion = async (id: string): Promise<Promo> => (await s.request('GET', `/v1/promotions/${id}`)).body;
const workflowNote = async (id: string) =>
  (await s.t.owner.query<{ error: string | null }>('select error from workflows where id = $1', [id])).rows[0]
    ?.error ?? '';

/**
 * Waits for a promotion to end, moving the clock over each soak time; `onDeferred` sees the
 * promotion while it waits for deferred tenants and may move the clock past their hold.
 */
async function drive(id: string, onDeferred?: () => Promise<void>): Promise<Promo> {
  return until(
    `promotion ${id} to end`,
    async () => {
      const p = await promotion(id);
      if (['Succeeded', 'Failed', 'Cancelled'].includes(p.state)) return p;
      const note = await workflowNote(id);
      // Move to the end of the soak the note names (once: the note stays while the step runs again).
      const soak = /^waiting: soaking wave \d+ until (\S+)$/.exec(note);
      if (soak) clock.t = Math.max(clock.t, Date.parse(soak[1]!) + 1000);
      else if (note.includes('deferred until') && onDeferred) await onDeferred();
      return undefined;
    },
    90_000,
  );
}

async function promote(version: string, to: string, token = rita) {
  const res = await s.request('POST', '/v1/promotions', { body: { system, version, stage: to }, token });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

async function throughStaging(version: string) {
  for (const to of ['dev', 'qa', 'staging']) {
    const p = await promote(version, to);
    expect(p.state).toBe('Running');
    expect((await drive(p.id)).state).toBe('Succeeded');
  }
}

async function running(): Promise<Map<string, { version: string; previous: string | null; at: Date }>> {
  const r = await s.t.owner.query(
    `select t.slug, dr.version, dr.previous_version, dr.updated_at from deployment_releases dr
     join tenants t on t.id = dr.tenant_id`,
  );
  return new Map(
    r.rows.map((x) => [x.slug, { version: x.version, previous: x.previous_version, at: x.updated_at }]),
  );
}

describe('releases', () => {
  it('a patch that removes an event field is refused with the field named; a minor that adds one passes', async () => {
    const res = await s.request('POST', '/v1/apply', {
      body: [release('1.0.1', { orderId: V1_FIELDS.orderId })],
    });
    expect(res.status).toBe(422);
    const err = res.body.errors.find((e: { code: string }) => e.code === 'release.event_field_removed');
    expect(err, JSON.stringify(res.body)).toMatchObject({ pointer: '/0/spec/produces/events/0/fields' });
    expect(err.detail).toContain('"total"');
    expect((await s.t.owner.query(`select 1 from releases where version = '1.0.1'`)).rows).toHaveLength(0);

    const patchAdds = await s.request('POST', '/v1/apply', {
      body: [release('1.0.1', { ...V1_FIELDS, currency: { type: 'string' } })],
    });
    expect(patchAdds.status).toBe(422);
    expect(patchAdds.body.errors[0]).toMatchObject({ code: 'release.event_field_added' });
    expect(patchAdds.body.errors[0].detail).toContain('needs a minor');

    const minor = await s.request('POST', '/v1/apply', {
      body: [release('1.1.0', { ...V1_FIELDS, currency: { type: 'string' } })],
    });
    expect(minor.status, JSON.stringify(minor.body)).toBe(200);
    const list = await s.request('GET', `/v1/releases?system=${system}`);
    expect(list.body.items.map((r: { spec: { version: string } }) => r.spec.version).sort()).toEqual([
      '1.0.0',
      '1.1.0',
    ]);
  });

  it('a protected stage does not start without approval; neither the author nor the requester may approve', async () => {
    const p = await promote('1.0.0', 'prod');
    expect(p).toMatchObject({ state: 'AwaitingApproval', requiredApprovals: 1, author: 'test-admin' });
    expect((await s.t.owner.query('select 1 from workflows where id = $1', [p.id])).rows).toHaveLength(0);
    const byAuthor = await s.request('POST', `/v1/promotions/${p.id}/approve`);
    expect(byAuthor.status).toBe(403);
    expect(byAuthor.body.code).toBe('promotion.four_eyes');
    const byRequester = await s.request('POST', `/v1/promotions/${p.id}/approve`, { token: rita });
    expect(byRequester.status).toBe(403);
    const again = await s.request('POST', '/v1/promotions', {
      body: { system, version: '1.0.0', stage: 'prod' },
    });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('promotion.in_progress');
    expect((await s.request('POST', `/v1/promotions/${p.id}/cancel`, { token: bob })).body.state).toBe(
      'Cancelled',
    );
  });

  it('a freeze holds new promotions (423)', async () => {
    expect(
      (
        await s.request('PUT', '/v1/freezes/release-freeze', {
          body: { scope: 'platform', reason: 'holiday' },
        })
      ).status,
    ).toBe(200);
    const res = await s.request('POST', '/v1/promotions', {
      body: { system, version: '1.0.0', stage: 'dev' },
    });
    expect(res.status).toBe(423);
    expect(res.body.code).toBe('workflow.frozen');
    expect((await s.request('DELETE', '/v1/freezes/release-freeze')).status).toBe(204);
    expect(
      (await s.t.owner.query(`select count(*)::int as n from promotions where stage = 'dev'`)).rows[0].n,
    ).toBe(0);
  });

  it('skipping a stage is refused by the previous-stage gate', async () => {
    const p = await promote('1.1.0', 'qa');
    const done = await drive(p.id);
    expect(done.state).toBe('Failed');
    expect(done.error).toContain('previous-stage');
    expect(done.gates.find((g: { gate: string }) => g.gate === 'previous-stage')).toMatchObject({
      passed: false,
    });
  });

  it('four stages over 52 prod tenants in 3 waves: pinned untouched, windowed done after its window, failing rolled back; evidence complete', async () => {
    // 1.0.0 everywhere first, so that there is a previous version to roll back to.
    await throughStaging('1.0.0');
    const first = await promote('1.0.0', 'prod');
    expect((await s.request('POST', `/v1/promotions/${first.id}/approve`, { token: alice })).body.state).toBe(
      'Running',
    );
    const firstDone = await drive(first.id);
    expect(firstDone.state, firstDone.error ?? '').toBe('Succeeded');
    expect(firstDone.targets.filter((t: Target) => t.state === 'Verified')).toHaveLength(PROD);
    const waves = firstDone.targets.map((t: Target) => t.wave);
    expect([
      waves.filter((w: number) => w === 0).length,
      waves.filter((w: number) => w === 1).length,
    ]).toEqual([3, 17]);

    await throughStaging('1.1.0');
    const before = await running();
    const pinned = prodTenant(10);
    const windowed = prodTenant(30);
    const broken = prodTenant(5);
    failing.add(`${broken}-${system}`);
    const until = new Date(clock.now() + 86_400_000).toISOString();
    expect(
      (
        await s.request('PUT', `/v1/tenants/${pinned}/pins/${system}`, {
          body: { version: '1.0.0', reason: 'customer validation', until },
        })
      ).status,
    ).toBe(200);
    const windowEnd = clock.now() + 10 * 3600_000;
    expect(
      (
        await s.request('PUT', `/v1/tenants/${windowed}/maintenance-windows/quarter-close`, {
          body: {
            startsAt: new Date(clock.now() - 60_000).toISOString(),
            endsAt: new Date(windowEnd).toISOString(),
            reason: 'quarter close',
          },
        })
      ).status,
    ).toBe(200);

    const p = await promote('1.1.0', 'prod');
    await s.request('POST', `/v1/promotions/${p.id}/approve`, { token: alice, body: { comment: 'go' } });
    let sawDeferred = false;
    const done = await drive(p.id, async () => {
      if (!sawDeferred) {
        sawDeferred = true;
        const mid = await promotion(p.id);
        const w = mid.targets.find((t: Target) => t.tenant === windowed);
        expect(w).toMatchObject({ state: 'Deferred', reason: 'in a maintenance window' });
        expect((await running()).get(windowed)?.version).toBe('1.0.0');
      }
      clock.t = windowEnd + 1000;
    });
    expect(done.state, done.error ?? '').toBe('Succeeded');
    expect(sawDeferred).toBe(true);
    const by = new Map(done.targets.map((t: Target) => [t.tenant, t] as const));
    expect(by.get(pinned)).toMatchObject({ state: 'Skipped' });
    expect((by.get(pinned) as Target).reason).toContain('pinned to 1.0.0');
    expect(by.get(broken)).toMatchObject({ state: 'RolledBack', fromVersion: '1.0.0' });
    expect((by.get(broken) as Target).reason).toContain('error rate 0.5');
    expect(by.get(windowed)).toMatchObject({ state: 'Verified' });
    expect(done.targets.filter((t: Target) => t.state === 'Verified')).toHaveLength(PROD - 2);

    const after = await running();
    expect(after.get(pinned)).toEqual(before.get(pinned));
    expect(after.get(broken)).toMatchObject({ version: '1.0.0', previous: '1.1.0' });
    expect(after.get(windowed)?.version).toBe('1.1.0');
    expect(after.get(prodTenant(52))).toMatchObject({ version: '1.1.0', previous: '1.0.0' });
    expect(Object.keys(done.waves)).toEqual(['0', '1', '2']);

    // Which release each tenant runs, through the API, as the tenant itself sees it.
    const own = await s.token({ subject: 'ten', tenant: broken, roles: ['tenant-reader'] });
    const mine = await s.request('GET', `/v1/tenants/${broken}/releases`, { token: own });
    expect(mine.status).toBe(200);
    expect(mine.body.deployments[0]).toMatchObject({ system, version: '1.0.0', previousVersion: '1.1.0' });
    expect((await s.request('GET', `/v1/tenants/${pinned}/releases`, { token: own })).status).toBe(403);

    // Evidence: the request, the approval, one update per tenant, the rollback, the summary.
    const ev = await s.request('GET', `/v1/releases/${system}-1-1-0/evidence`);
    expect(ev.status).toBe(200);
    const mineOnly = ev.body.records.filter(
      (r: AuditRow) => r.correlation_id === p.id || r.target_id === p.id,
    );
    const actions = ev.body.records.map((r: AuditRow) => r.action);
    expect(actions).toContain('promotion.request');
    expect(actions).toContain('promotion.approve');
    expect(actions).toContain('promotion.tenant_rollback');
    const summary = ev.body.records.find(
      (r: AuditRow) => r.action === 'promotion.evidence' && r.target_id === p.id,
    );
    expect(summary.after).toMatchObject({
      pipelineRunId: 'run-1.1.0',
      stage: 'prod',
      approvals: [{ principal: 'alice' }],
      requestedBy: { principal: 'rita' },
      author: 'test-admin',
      targets: { Verified: PROD - 2, Skipped: 1, RolledBack: 1 },
    });
    expect(summary.after.shaLineage).toHaveLength(3);
    expect(summary.after.artifacts[0].digest).toMatch(/^sha256:/);
    expect(summary.after.gates.map((g: { gate: string }) => g.gate)).toEqual([
      'validations',
      'compatibility',
      'rollback-readiness',
      'previous-stage',
    ]);
    expect(mineOnly.length).toBeGreaterThan(0);
    const updates = await s.t.owner.query(
      `select target_id, count(*)::int as n from audit_records
         where action = 'promotion.tenant_update' and correlation_id = (select correlation_id from promotions where id = $1)
         group by target_id`,
      [p.id],
    );
    expect(updates.rows).toHaveLength(PROD - 1);
    expect(updates.rows.every((r) => r.n === 1)).toBe(true);

    // Events: the rolled-back tenant's stream tells it; every step of the workflow has one.
    const ev2 = await s.t.owner.query(
      `select type from outbox_events where data->>'promotionId' = $1 and tenant_id = (select id from tenants where slug = $2) order by seq`,
      [p.id, broken],
    );
    expect(ev2.rows.map((r) => r.type)).toEqual([
      'dev.tenantry.promotion.tenant_updated.v1',
      'dev.tenantry.promotion.tenant_rolled_back.v1',
    ]);
    const stream = async (slug: string) =>
      (
        await s.t.owner.query(
          `select type, data from outbox_events where data->>'promotionId' = $1
             and tenant_id = (select id from tenants where slug = $2) order by seq`,
          [p.id, slug],
        )
      ).rows;
    const skipped = await stream(pinned);
    expect(skipped.map((r) => r.type)).toEqual(['dev.tenantry.promotion.tenant_skipped.v1']);
    expect(skipped[0].data.reason).toContain('pinned to 1.0.0');
    // Deferred once (a look while the window holds records no second event), then updated.
    const deferred = await stream(windowed);
    expect(deferred.map((r) => r.type)).toEqual([
      'dev.tenantry.promotion.tenant_deferred.v1',
      'dev.tenantry.promotion.tenant_updated.v1',
    ]);
    expect(deferred[0].data).toMatchObject({
      reason: 'in a maintenance window',
      until: new Date(windowEnd).toISOString(),
    });
    expect(deferred[1].data).toMatchObject({ fromVersion: '1.0.0', toVersion: '1.1.0' });
    const steps = await s.t.owner.query(
      `select data->>'step' as step from outbox_events where subject = $1 and type = 'dev.tenantry.workflow.step_completed.v1' order by seq`,
      [`workflows/${p.id}`],
    );
    expect(steps.rows.map((r) => r.step)).toEqual([
      'check-gates',
      'plan-waves',
      'roll-out',
      'record-evidence',
    ]);
    failing.clear();
  }, 180_000);

  it('the wave stops when the failure budget is spent; later waves are halted untouched; rollback restores the stage', async () => {
    expect(
      (
        await s.request('POST', '/v1/apply', {
          body: [release('1.2.0', { ...V1_FIELDS, currency: { type: 'string' }, note: { type: 'string' } })],
        })
      ).status,
    ).toBe(200);
    await throughStaging('1.2.0');
    failing.add(`${prodTenant(1)}-${system}`);
    failing.add(`${prodTenant(2)}-${system}`);
    const p = await promote('1.2.0', 'prod');
    await s.request('POST', `/v1/promotions/${p.id}/approve`, { token: alice });
    const done = await drive(p.id);
    failing.clear();
    expect(done.state).toBe('Failed');
    expect(done.error).toContain('failure budget spent in wave 0');
    const by = new Map(done.targets.map((t: Target) => [t.tenant, t.state]));
    expect(by.get(prodTenant(1))).toBe('RolledBack');
    expect(by.get(prodTenant(2))).toBe('RolledBack');
    expect(by.get(prodTenant(3))).toBe('Halted');
    expect(
      done.targets.filter((t: Target) => t.wave > 0 && t.state !== 'Halted' && t.state !== 'Skipped'),
    ).toEqual([]);
    const now = await running();
    expect(now.get(prodTenant(40))?.version).toBe('1.1.0');

    // Roll prod back to the version it ran before its last successful promotion (1.0.0).
    const rb = await s.request('POST', '/v1/promotions/rollback', {
      body: { system, stage: 'prod' },
      token: rita,
    });
    expect(rb.status, JSON.stringify(rb.body)).toBe(201);
    expect(rb.body).toMatchObject({ mode: 'rollback', version: '1.0.0', state: 'Running' });
    const back = await drive(rb.body.id);
    expect(back.state, back.error ?? '').toBe('Succeeded');
    const restored = await running();
    expect(restored.get(prodTenant(40))?.version).toBe('1.0.0');
    expect(restored.get(prodTenant(10))?.version).toBe('1.0.0');
  }, 180_000);

  it('bad input gets a clear 4xx and changes nothing', async () => {
    const cases: [string, string, unknown, number, string][] = [
      ['POST', '/v1/promotions', { system, version: '9.9.9', stage: 'dev' }, 404, 'release.not_found'],
      ['POST', '/v1/promotions', { system, version: '1.0.0', stage: 'moon' }, 422, 'pipeline.stage_unknown'],
      ['POST', '/v1/promotions', { system: 'nope', version: '1.0.0', stage: 'dev' }, 404, 'system.not_found'],
      ['POST', '/v1/promotions/00000000-0000-4000-8000-000000000000/approve', {}, 404, 'promotion.not_found'],
      [
        'PUT',
        `/v1/tenants/${prodTenant(1)}/pins/${system}`,
        { version: '7.0.0', reason: 'x', until: '2999-01-01T00:00:00Z' },
        422,
        'release.not_found',
      ],
    ];
    for (const [method, path, body, status, code] of cases) {
      const res = await s.request(method, path, { body });
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBe(status);
      expect(res.body.code === code || res.body.errors?.[0]?.code === code, JSON.stringify(res.body)).toBe(
        true,
      );
    }
    const tenantAdmin = await s.token({ subject: 'ta', tenant: prodTenant(1), roles: ['tenant-admin'] });
    const res = await s.request('POST', '/v1/promotions', {
      body: { system, version: '1.0.0', stage: 'dev' },
      token: tenantAdmin,
    });
    expect(res.status).toBe(403);
  });

  it('lists promotions newest first by a keyset cursor: every promotion once, page by page', async () => {
    const all = (
      await s.t.owner.query(`select id from promotions order by created_at desc, id desc`)
    ).rows.map((r: { id: string }) => r.id);
    expect(all.length).toBeGreaterThan(3);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r = await s.request('GET', `/v1/promotions?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status).toBe(200);
      seen.push(...r.body.items.map((p: { id: string }) => p.id));
      cursor = r.body.nextCursor;
    } while (cursor && seen.length <= all.length);
    expect(seen).toEqual(all);
    expect((await s.request('GET', '/v1/promotions?cursor=zzz')).status).toBe(400);
  });
});
