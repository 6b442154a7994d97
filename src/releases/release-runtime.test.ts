import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type TestController, until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { startWorkflowEngine } from '../../test/helpers/workflows.js';
import { lifecycleWorkflowTypes } from '../workflows/lifecycle-workflows.js';
import { withPromotions } from './promotion-workflow.js';

/**
 * A promotion changes what runs (issue 21 on issue 20): the tenant's Service takes the release's image
 * by digest and version, the local-process compute target rolls its replicas onto it, and a rollback
 * puts the previous release's image and version back — on real processes. Verification reads the
 * health the runtime itself reports from its replicas' /healthz (no one else posts any here).
 */
const doc = (kind: string, metadata: Record<string, unknown>, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});
const digest = (c: string) => `sha256:${c.repeat(64)}`;
const IMAGE = 'registry.example.com/shop/api';
const SERVICE = 'rr-eu-dev-shop-api';
const release = (version: string, c: string) =>
  doc(
    'Release',
    {},
    {
      system: 'shop',
      version,
      artifacts: [{ service: 'api', image: IMAGE, digest: digest(c) }],
      configuration: [],
      produces: { events: [], apis: [] },
      provenance: {
        commit: c.repeat(40),
        repository: 'https://git.example.com/shop',
        pipelineRunId: `run-${version}`,
        builder: 'ci.example.com',
        lineage: [c.repeat(40)],
      },
      validations: [{ name: 'unit-tests', passed: true }],
    },
  );

interface Observed {
  replicas: { items: { name: string; ready: boolean; version: string; address: string }[] };
}

describe('promotion rolls the release out on the runtime; rollback restores the previous version', () => {
  let s: TestServer;
  let c: TestController;
  let engine: Awaited<ReturnType<typeof startWorkflowEngine>>;
  const service = async () =>
    (
      await s.t.owner.query<{ spec: { image: string; version: string }; observed: Observed | null }>(
        'select spec, observed from services where slug = $1',
        [SERVICE],
      )
    ).rows[0];

  beforeAll(async () => {
    s = await startTestServer();
    engine = startWorkflowEngine(s.t, {
      registry: withPromotions(lifecycleWorkflowTypes(s.t.db), {
        db: s.t.db,
        clock: { now: () => Date.now() },
        recheckMs: 100,
      }),
    });
    c = await startController(s.t, { controller: { resyncIntervalMs: 1_500 } });
    const res = await s.request('POST', '/v1/apply', {
      body: [
        doc('Customer', { name: 'rr' }, { displayName: 'Rollout', shortCode: 'rr' }),
        doc('System', { name: 'shop' }, { displayName: 'Shop', serviceId: 'shop' }),
        doc('Tenant', {}, { customer: 'rr', region: 'eu', environmentType: 'dev' }),
        doc('Deployment', {}, { tenant: 'rr-eu-dev', system: 'shop' }),
        doc(
          'Service',
          {},
          {
            deployment: 'rr-eu-dev-shop',
            component: 'api',
            image: `${IMAGE}@${digest('a')}`,
            version: '1.0.0',
            replicas: 2,
            command: ['node', 'examples/circlek/replica.mjs'],
          },
        ),
        doc(
          'Pipeline',
          { name: 'shop-pipeline' },
          {
            systems: ['shop'],
            stages: [
              {
                name: 'dev',
                environmentTypes: ['dev'],
                verification: { timeoutSeconds: 60, maxErrorRate: 0.05 },
              },
            ],
          },
        ),
        release('1.0.0', 'a'),
        release('1.1.0', 'b'),
      ],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
  }, 120_000);
  afterAll(async () => {
    await engine?.stop();
    await c?.stop();
    await s?.close();
  });

  const promote = async (path: string, body: Record<string, unknown>) => {
    const res = await s.request('POST', path, { body });
    expect(res.status, JSON.stringify(res.body)).toBeLessThan(300);
    return until(
      `promotion ${res.body.id} ends`,
      async () => {
        const p = (await s.request('GET', `/v1/promotions/${res.body.id}`)).body;
        return ['Succeeded', 'Failed', 'Cancelled'].includes(p.state) && p;
      },
      90_000,
    );
  };
  const running = (version: string, c: string) =>
    until(
      `both replicas run ${version}`,
      async () => {
        const svc = await service();
        const items = svc?.observed?.replicas.items ?? [];
        if (svc?.spec.image !== `${IMAGE}@${digest(c)}` || svc.spec.version !== version) return false;
        if (items.length !== 2 || !items.every((r) => r.ready && r.version === version)) return false;
        const answers = await Promise.all(items.map((r) => fetch(r.address).then((x) => x.json())));
        return answers.every((a) => a.version === version && a.image === `${IMAGE}@${digest(c)}`) && answers;
      },
      60_000,
    );

  it('promoting 1.0.0 then 1.1.0 rolls the replicas onto 1.1.0; a rollback puts 1.0.0 back', async () => {
    expect((await promote('/v1/promotions', { system: 'shop', version: '1.0.0', stage: 'dev' })).state).toBe(
      'Succeeded',
    );
    await running('1.0.0', 'a');
    const p = await promote('/v1/promotions', { system: 'shop', version: '1.1.0', stage: 'dev' });
    expect(p.state, JSON.stringify(p)).toBe('Succeeded');
    const on11 = await running('1.1.0', 'b');
    expect(on11.map((a: { replica: string }) => a.replica).sort()).toEqual([
      expect.stringMatching(/^shop-eu-dev_[a-z]+-[a-z]+-1$/),
      expect.stringMatching(/^shop-eu-dev_[a-z]+-[a-z]+-2$/),
    ]);
    const back = await promote('/v1/promotions/rollback', { system: 'shop', stage: 'dev' });
    expect(back.state, JSON.stringify(back)).toBe('Succeeded');
    await running('1.0.0', 'a');
    // What verification read: the runtime's own report of its replicas' readiness on the version.
    await until('the runtime reports 2/2 ready on 1.0.0', async () => {
      const h = await s.t.owner.query(
        'select version, ready_replicas, desired_replicas, error_rate from deployment_health',
      );
      return (
        h.rows.length === 1 &&
        h.rows[0].version === '1.0.0' &&
        h.rows[0].ready_replicas === 2 &&
        h.rows[0].desired_replicas === 2 &&
        h.rows[0].error_rate === 0
      );
    });
    // Each rollout went through the change path: the service's lineage has the three versions.
    const audit = await s.t.owner.query(
      `select count(*)::int as n from audit_records where target_slug = $1 and action = 'service.update' and actor_principal like 'tenantry-promotion %'`,
      [SERVICE],
    );
    expect(audit.rows[0].n).toBeGreaterThanOrEqual(2);
  }, 240_000);
});
