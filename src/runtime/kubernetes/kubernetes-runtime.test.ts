import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipReason } from '../../../test/infra/engines.js';
import {
  type KubeCluster,
  kubeUnavailableReason,
  startKubeCluster,
} from '../../../test/infra/kube-apiserver.js';
import type { DesiredService } from '../runtime-provider.js';
import { KubernetesRuntimeProvider } from './kubernetes-runtime.provider.js';

const run = promisify(execFile);
const skip = skipReason('Kubernetes runtime tests', await kubeUnavailableReason());

const DIGEST = `sha256:${'a'.repeat(64)}`;
const desired = (over: Partial<DesiredService> = {}): DesiredService => ({
  id: '0b9a3c4e-8a59-4a55-9a7e-5d0f8f0a1c11',
  slug: 'circlek-eu-prod-plan-api',
  tenantId: '7d3c1f0e-2b1a-4a5b-8c9d-0e1f2a3b4c5d',
  tenantSlug: 'circlek-eu-prod',
  deploymentSlug: 'circlek-eu-prod-plan',
  component: 'api',
  replicaBase: 'plan-eu-prod_brave-wolf',
  image: `registry.example/plan@${DIGEST}`,
  version: '2.4.1',
  replicas: 2,
  unitCost: 2,
  binding: { computeUnits: 10, networkPartition: 'eu-prod-net-1' },
  configuration: {
    name: 'plan',
    version: 1,
    checksum: 'f'.repeat(64),
    canonical: '{"featureX":true}',
  },
  ...over,
});

describe.skipIf(skip)('Kubernetes runtime provider (real etcd + kube-apiserver + controller manager)', () => {
  let cluster: KubeCluster;
  let provider: KubernetesRuntimeProvider;
  const kubectl = async (...args: string[]) =>
    (await run('kubectl', ['--kubeconfig', cluster.kubeconfigPath, ...args], { timeout: 30_000 })).stdout;
  const json = async (...args: string[]) => JSON.parse(await kubectl(...args, '-o', 'json'));

  beforeAll(async () => {
    cluster = await startKubeCluster();
    provider = KubernetesRuntimeProvider.fromFile(cluster.kubeconfigPath);
  }, 180_000);
  afterAll(async () => {
    await provider?.close();
    await cluster?.stop();
  });

  it('creates namespace, quota, network policy, config map, deployment and HPA with the values given', async () => {
    const d = desired({
      scaling: { metric: 'cpu', minReplicas: 1, maxReplicas: 8, targetUtilization: 70 },
    });
    expect((await provider.observe(d)).exists).toBe(false);
    const after = await provider.ensure(d);
    expect(after.drift).toEqual([]);
    expect(after.exists).toBe(true);

    const ns = await json('get', 'namespace', 'circlek-eu-prod');
    expect(ns.metadata.labels).toMatchObject({
      'tenantry.dev/tenant': 'circlek-eu-prod',
      'tenantry.dev/network-partition': 'eu-prod-net-1',
    });
    const quota = await json('-n', 'circlek-eu-prod', 'get', 'resourcequota', 'tenantry-compute');
    expect(quota.spec.hard).toEqual({ 'requests.cpu': '1', 'requests.memory': '1280Mi' });
    const np = await json('-n', 'circlek-eu-prod', 'get', 'networkpolicy', 'tenantry-partition');
    expect(np.spec.ingress[0].from[0].namespaceSelector.matchLabels).toEqual({
      'tenantry.dev/network-partition': 'eu-prod-net-1',
    });
    const dep = await json('-n', 'circlek-eu-prod', 'get', 'deployment', 'circlek-eu-prod-plan-api');
    expect(dep.spec.replicas).toBe(2);
    expect(dep.spec.template.spec.containers[0].image).toBe(`registry.example/plan@${DIGEST}`);
    expect(dep.spec.template.spec.containers[0].resources.requests).toEqual({ cpu: '200m', memory: '256Mi' });
    expect(dep.metadata.labels).toMatchObject({
      'app.kubernetes.io/managed-by': 'tenantry',
      'app.kubernetes.io/version': '2.4.1',
      'tenantry.dev/tenant': 'circlek-eu-prod',
    });
    const cmName = `circlek-eu-prod-plan-api-cfg-${'f'.repeat(12)}`;
    expect(dep.spec.template.spec.volumes[0].configMap.name).toBe(cmName);
    const cm = await json('-n', 'circlek-eu-prod', 'get', 'configmap', cmName);
    expect(cm.data['config.json']).toBe('{"featureX":true}');
    expect(cm.immutable).toBe(true);
    const hpa = await json('-n', 'circlek-eu-prod', 'get', 'hpa.v2.autoscaling', 'circlek-eu-prod-plan-api');
    // maxReplicas 8 × unit cost 2 = 16 units, beyond the binding's 10: the HPA is capped at 5.
    expect(hpa.spec).toMatchObject({ minReplicas: 1, maxReplicas: 5 });
    expect(hpa.spec.metrics[0].resource).toEqual({
      name: 'cpu',
      target: { type: 'Utilization', averageUtilization: 70 },
    });
    expect((await provider.observe(d)).drift).toEqual([]);
  });

  it('the controller manager creates the replicas as pods (Pending: there is no kubelet), read back by name', async () => {
    const d = desired({
      scaling: { metric: 'cpu', minReplicas: 1, maxReplicas: 8, targetUtilization: 70 },
    });
    let seen = await provider.observe(d);
    const until = Date.now() + 60_000;
    while (seen.replicas.items.length < 2 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 500));
      seen = await provider.observe(d);
    }
    expect(seen.replicas.desired).toBe(2);
    expect(seen.replicas.items).toHaveLength(2);
    for (const pod of seen.replicas.items) {
      expect(pod.name).toMatch(/^circlek-eu-prod-plan-api-[a-z0-9]+-[a-z0-9]{5}$/);
      expect(pod).toMatchObject({ phase: 'Pending', ready: false, version: '2.4.1' });
    }
    expect(seen.replicas.ready).toBe(0);
  }, 90_000);

  it('a change in the desired state updates the objects; the old config map goes', async () => {
    const d = desired({
      image: `registry.example/plan@sha256:${'b'.repeat(64)}`,
      version: '2.5.0',
      replicas: 3,
      binding: { computeUnits: 20, networkPartition: 'eu-prod-net-2' },
      configuration: { name: 'plan', version: 2, checksum: 'e'.repeat(64), canonical: '{"featureX":false}' },
    });
    const before = await provider.observe(d);
    expect(before.drift.join('\n')).toMatch(/image is registry.example\/plan@sha256:a+, want/);
    expect(before.drift.join('\n')).toMatch(
      /HorizontalPodAutoscaler circlek-eu-prod-plan-api exists without/,
    );
    const after = await provider.ensure(d);
    expect(after.drift).toEqual([]);
    const dep = await json('-n', 'circlek-eu-prod', 'get', 'deployment', 'circlek-eu-prod-plan-api');
    expect(dep.spec.replicas).toBe(3);
    expect(dep.spec.template.spec.containers[0].image).toBe(d.image);
    const quota = await json('-n', 'circlek-eu-prod', 'get', 'resourcequota', 'tenantry-compute');
    expect(quota.spec.hard).toEqual({ 'requests.cpu': '2', 'requests.memory': '2560Mi' });
    const cms = await json('-n', 'circlek-eu-prod', 'get', 'configmap', '-l', 'tenantry.dev/config=plan');
    expect(cms.items.map((c: { metadata: { name: string } }) => c.metadata.name)).toEqual([
      `circlek-eu-prod-plan-api-cfg-${'e'.repeat(12)}`,
    ]);
    await expect(kubectl('-n', 'circlek-eu-prod', 'get', 'hpa', 'circlek-eu-prod-plan-api')).rejects.toThrow(
      /NotFound/,
    );
  });

  it('objects deleted or changed behind its back are drift, and ensure repairs them', async () => {
    const d = desired({
      replicas: 3,
      version: '2.5.0',
      binding: { computeUnits: 20, networkPartition: 'eu-prod-net-2' },
    });
    await provider.ensure(d);
    await kubectl(
      '-n',
      'circlek-eu-prod',
      'delete',
      'deployment',
      'circlek-eu-prod-plan-api',
      '--wait=false',
    );
    await kubectl('-n', 'circlek-eu-prod', 'delete', 'networkpolicy', 'tenantry-partition');
    await kubectl(
      '-n',
      'circlek-eu-prod',
      'patch',
      'resourcequota',
      'tenantry-compute',
      '--type=merge',
      '-p',
      '{"spec":{"hard":{"requests.cpu":"50"}}}',
    );
    const seen = await provider.observe(d);
    expect(seen.exists).toBe(false);
    expect(seen.drift).toEqual(
      expect.arrayContaining([
        'NetworkPolicy tenantry-partition is missing',
        'Deployment circlek-eu-prod-plan-api is missing',
        expect.stringMatching(/^ResourceQuota tenantry-compute: spec differs/),
      ]),
    );
    const repaired = await provider.ensure(d);
    expect(repaired.drift).toEqual([]);
    const quota = await json('-n', 'circlek-eu-prod', 'get', 'resourcequota', 'tenantry-compute');
    expect(quota.spec.hard['requests.cpu']).toBe('2');
    await kubectl('-n', 'circlek-eu-prod', 'scale', 'deployment', 'circlek-eu-prod-plan-api', '--replicas=7');
    expect((await provider.observe(d)).drift).toEqual([
      'Deployment circlek-eu-prod-plan-api: 7 replicas, want 3',
    ]);
    expect((await provider.ensure(d)).replicas.desired).toBe(3);
  });

  it('delete removes the service objects and keeps the tenant namespace; deleting again is success', async () => {
    const d = desired({
      replicas: 3,
      version: '2.5.0',
      binding: { computeUnits: 20, networkPartition: 'eu-prod-net-2' },
    });
    await provider.delete(d);
    await provider.delete(d);
    await expect(
      kubectl('-n', 'circlek-eu-prod', 'get', 'deployment', 'circlek-eu-prod-plan-api'),
    ).rejects.toThrow(/NotFound/);
    expect(
      (await json('-n', 'circlek-eu-prod', 'get', 'configmap', '-l', 'tenantry.dev/config=plan')).items,
    ).toEqual([]);
    expect((await json('get', 'namespace', 'circlek-eu-prod')).status.phase).toBe('Active');
  });
});
