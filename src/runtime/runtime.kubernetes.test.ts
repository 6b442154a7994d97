import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type TestController, until } from '../../test/helpers/controller.js';
import { configDoc, policyDoc, runtimeBase, serviceDoc } from '../../test/helpers/runtime.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { skipReason } from '../../test/infra/engines.js';
import {
  type KubeCluster,
  kubeUnavailableReason,
  startKubeCluster,
} from '../../test/infra/kube-apiserver.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { configChecksum } from '../domain/config-checksum.js';
import type { RegistryService } from '../registry/registry.service.js';
import { listDrift } from './drift.routes.js';

/**
 * The runtime inventory on a real Kubernetes control plane through the controller: manifests applied
 * to the registry become a namespace, quota, network policy, config map, deployment and HPA with their
 * values; changes update them; objects deleted behind Tenantry's back are drift, recorded and repaired.
 */
const run = promisify(execFile);
const skip = skipReason('runtime inventory on Kubernetes', await kubeUnavailableReason());
const NS = 'acme-eu-prod';
const SVC = 'acme-eu-prod-plan-api';

describe.skipIf(skip)('runtime inventory on a real Kubernetes API server, through the controller', () => {
  let cluster: KubeCluster;
  let t: TestDatabase;
  let c: TestController;
  let registry: RegistryService;
  const ctx = systemContext('test-operator');
  const kubectl = async (...args: string[]) =>
    (await run('kubectl', ['--kubeconfig', cluster.kubeconfigPath, ...args], { timeout: 30_000 })).stdout;
  const get = async (...args: string[]) => JSON.parse(await kubectl('-n', NS, 'get', ...args, '-o', 'json'));
  const service = async () =>
    (
      await t.owner.query(
        `select phase, observed, observed_generation, generation, c->>'reason' as reason from services,
           lateral jsonb_array_elements(conditions) c where slug = $1 and c->>'type' = 'Ready'`,
        [SVC],
      )
    ).rows[0];
  const settled = (what: string, check: (s: Awaited<ReturnType<typeof service>>) => boolean) =>
    until(
      what,
      async () => {
        const s = await service();
        return s && s.phase === 'Ready' && s.observed_generation === s.generation && check(s) && s;
      },
      60_000,
    );

  beforeAll(async () => {
    cluster = await startKubeCluster();
    t = await createTestDatabase();
    registry = createRegistry(t.db, t.config);
    c = await startController(t, {
      env: { TENANTRY_KUBECONFIG: cluster.kubeconfigPath },
      controller: { resyncIntervalMs: 1_500 },
    });
  }, 180_000);
  afterAll(async () => {
    await c?.stop();
    await t?.destroy();
    await cluster?.stop();
  });

  it('makes the manifests true: namespace, quota, network policy, config map, deployment, HPA', async () => {
    await registry.apply(ctx, [
      ...runtimeBase(10),
      configDoc(1, { featureX: false }),
      configDoc(2, { featureX: true }),
      serviceDoc({ configuration: { name: 'plan' } }),
      policyDoc(5, 2),
    ]);
    const s = await settled('service Ready with version 2', (x) => x.observed?.configuration?.version === 2);
    expect(s.observed).toMatchObject({ target: 'kubernetes', namespace: NS });
    expect((await get('resourcequota', 'tenantry-compute')).spec.hard).toEqual({
      'requests.cpu': '1',
      'requests.memory': '1280Mi',
    });
    expect((await get('networkpolicy', 'tenantry-partition')).spec.ingress[0].from).toHaveLength(1);
    const dep = await get('deployment', SVC);
    expect(dep.spec.template.spec.containers[0].image).toMatch(/^registry\.example\/plan@sha256:c{64}$/);
    expect(dep.spec.replicas).toBe(2);
    const checksum = configChecksum({ featureX: true });
    expect(dep.spec.template.metadata.annotations['tenantry.dev/config-checksum']).toBe(checksum);
    expect((await get('configmap', `${SVC}-cfg-${checksum.slice(0, 12)}`)).data['config.json']).toBe(
      '{"featureX":true}',
    );
    expect((await get('hpa.v2.autoscaling', SVC)).spec).toMatchObject({ minReplicas: 2, maxReplicas: 5 });
    // The controller manager's ReplicaSet controller made the replicas (Pending: no kubelet).
    const withPods = await until(
      'replicas observed by name',
      async () => {
        const x = await service();
        return x?.observed?.replicas?.items?.length === 2 && x;
      },
      60_000,
    );
    for (const r of withPods.observed.replicas.items)
      expect(r).toMatchObject({ phase: 'Pending', version: '1.0.0' });
  }, 120_000);

  it('a change in the manifest updates them; rollback and pinning keep to their versions', async () => {
    await registry.apply(ctx, [
      serviceDoc({ version: '1.1.0', replicas: 3, configuration: { name: 'plan' } }),
      policyDoc(4, 3),
    ]);
    await settled('service updated', (x) => x.observed?.replicas?.desired === 3);
    expect((await get('deployment', SVC)).metadata.labels['app.kubernetes.io/version']).toBe('1.1.0');
    expect((await get('hpa.v2.autoscaling', SVC)).spec).toMatchObject({ minReplicas: 3, maxReplicas: 4 });
    // Rollback: version 3 with version 1's content; the service follows the active version.
    await registry.apply(ctx, [
      configDoc(3, { featureX: false }, 'active', { rollbackOf: 1, reason: 'rollback to 1' }),
    ]);
    const rolled = await settled('service on version 3', (x) => x.observed?.configuration?.version === 3);
    expect(rolled.observed.configuration.checksum).toBe(configChecksum({ featureX: false }));
    // Pinned to version 2: a newer active version does not move it.
    await registry.apply(ctx, [
      serviceDoc({ version: '1.1.0', replicas: 3, configuration: { name: 'plan', version: 2 } }),
    ]);
    await settled('service pinned to 2', (x) => x.observed?.configuration?.version === 2);
    await registry.apply(ctx, [configDoc(4, { featureX: true, more: 1 })]);
    await new Promise((r) => setTimeout(r, 3_000));
    expect((await service()).observed.configuration.version).toBe(2);
  }, 120_000);

  it('deleting the deployment behind its back is drift: recorded, repaired, resolved', async () => {
    // Changes of the desired state (above) were no drift.
    expect(await listDrift(t.db, ctx, { tenant: NS, state: 'all', limit: 10 })).toEqual([]);
    // Both objects are deleted while the controller is down. With it running (a resync every 1.5 s),
    // a reconcile could read the network policy, then see the deployment gone and re-apply every
    // object: the network policy deleted in between came back without ever being seen missing, and
    // the finding below never came (slow machines made that window wide).
    await c.stop();
    await kubectl('-n', NS, 'delete', 'deployment', SVC, '--wait=false');
    await kubectl('-n', NS, 'delete', 'networkpolicy', 'tenantry-partition');
    c = await startController(t, {
      env: { TENANTRY_KUBECONFIG: cluster.kubeconfigPath },
      controller: { resyncIntervalMs: 1_500 },
    });
    // The restarted controller's resync finds both missing; the repair resolves the finding.
    const findings = await until(
      'resolved drift findings for both deletions',
      async () => {
        const f = await listDrift(t.db, ctx, { tenant: NS, state: 'resolved', limit: 10 });
        const lines = f.flatMap((x) => x.drift);
        return (
          lines.includes('NetworkPolicy tenantry-partition is missing') &&
          lines.includes('Deployment acme-eu-prod-plan-api is missing') &&
          f
        );
      },
      60_000,
    );
    for (const f of findings)
      expect(f).toMatchObject({ kind: 'Service', name: SVC, resolvedBy: 'controller: kubernetes ensure' });
    expect(await listDrift(t.db, ctx, { tenant: NS, state: 'open', limit: 10 })).toEqual([]);
    expect((await get('deployment', SVC)).spec.replicas).toBe(3);
    expect((await get('networkpolicy', 'tenantry-partition')).spec.ingress[0].from).toHaveLength(1);
    const events = await t.owner.query(`select type from outbox_events where type like '%service.drifted%'`);
    expect(events.rows.length).toBeGreaterThanOrEqual(1);
  }, 90_000);

  it('deleting the service removes its objects from the cluster', async () => {
    await registry.delete(ctx, 'Service', SVC);
    await until(
      'service Deleted',
      async () =>
        (await t.owner.query(`select phase from services where slug = $1`, [SVC])).rows[0]?.phase ===
        'Deleted',
      60_000,
    );
    await expect(kubectl('-n', NS, 'get', 'deployment', SVC)).rejects.toThrow(/NotFound/);
    await expect(kubectl('-n', NS, 'get', 'hpa', SVC)).rejects.toThrow(/NotFound/);
  }, 90_000);
});
