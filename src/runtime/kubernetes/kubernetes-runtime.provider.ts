import fs from 'node:fs';
import type { CoreV1Api, KubernetesObject, KubernetesObjectApi, V1Pod } from '@kubernetes/client-node';
import { ProviderError } from '../../providers/provider.js';
import {
  COMPUTE_UNIT,
  type DesiredService,
  type ObservedService,
  quotaReplicaCap,
  type RuntimeProvider,
} from '../runtime-provider.js';

/** The client library's parts this provider uses, once loaded. */
type Clients = {
  objects: KubernetesObjectApi;
  core: CoreV1Api;
  serverSideApply: typeof import('@kubernetes/client-node')['PatchStrategy']['ServerSideApply'];
};

/**
 * Services on Kubernetes (`@kubernetes/client-node`), one namespace per tenant:
 * - Namespace `{tenant slug}` labelled with the tenant and its binding's network partition;
 * - ResourceQuota `tenantry-compute`: the binding's `computeUnits` as requests.cpu / requests.memory
 *   (one unit = COMPUTE_UNIT), so Kubernetes itself refuses pods beyond the quota;
 * - NetworkPolicy `tenantry-partition`: ingress only from namespaces of the same network partition;
 * - per service a ConfigMap `{service}-cfg-{checksum[0..12]}` (immutable, the configuration version's
 *   canonical JSON), a Deployment `{service}` (image by digest, replicas, the ConfigMap mounted at
 *   /etc/tenantry/config) and, with a scaling policy, an autoscaling/v2 HorizontalPodAutoscaler
 *   `{service}` whose maxReplicas never exceeds what the quota allows.
 * Writes are server-side apply with field manager `tenantry` (idempotent; `force` takes fields back
 * from whoever changed them behind Tenantry's back). With a scaling policy the HPA owns
 * `spec.replicas`: Tenantry sets it only when the Deployment is created or outside the policy bounds.
 *
 * What "replicas" means here: `desired` is the Deployment's spec.replicas, `current`/`ready`/`updated`
 * its status as the API server reports it, `items` the pods listed by the service's labels. On a
 * cluster with a controller manager but no kubelet (the test setup), the ReplicaSet controller creates
 * the pods, which stay Pending and never become ready.
 */
export class KubernetesRuntimeProvider implements RuntimeProvider {
  readonly name = 'kubernetes';
  private loaded?: Promise<Clients>;

  private constructor(private readonly load: () => Promise<Clients>) {}

  /**
   * From a kubeconfig file (TENANTRY_KUBECONFIG), optionally a named context. The client library is
   * loaded at the first call, not with this module: it holds ~70 MiB of generated API code that a
   * server on another compute target would carry for nothing. The file must be readable now.
   */
  static fromFile(path: string, context?: string): KubernetesRuntimeProvider {
    fs.accessSync(path, fs.constants.R_OK);
    return new KubernetesRuntimeProvider(async () => {
      const k8s = await import('@kubernetes/client-node');
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(path);
      if (context) kc.setCurrentContext(context);
      return {
        objects: k8s.KubernetesObjectApi.makeApiClient(kc),
        core: kc.makeApiClient(k8s.CoreV1Api),
        serverSideApply: k8s.PatchStrategy.ServerSideApply,
      };
    });
  }

  private clients(): Promise<Clients> {
    if (!this.loaded)
      this.loaded = this.load().catch((err: unknown) => {
        this.loaded = undefined;
        throw new ProviderError(
          `Kubernetes client: ${err instanceof Error ? err.message : String(err)}`,
          'ProviderNotConfigured',
          false,
        );
      });
    return this.loaded;
  }

  async observe(d: DesiredService): Promise<ObservedService> {
    const want = manifests(d);
    const drift: string[] = [];
    const found = new Map<string, KubernetesObject | undefined>();
    for (const m of want.all) {
      const real = await this.read(m);
      found.set(key(m), real);
      if (!real) drift.push(`${m.kind} ${m.metadata?.name} is missing`);
      else drift.push(...differences(wire(m), real, d));
    }
    const hpa = await this.read(hpaRef(d));
    if (!d.scaling && hpa) drift.push(`HorizontalPodAutoscaler ${d.slug} exists without a scaling policy`);
    const deployment = found.get(key(want.deployment)) as K8sDeployment | undefined;
    return this.observed(d, deployment, drift);
  }

  async ensure(d: DesiredService): Promise<ObservedService> {
    const want = manifests(d);
    // A scaling policy's HPA owns the replica count: apply it only when creating the Deployment or
    // when the count is outside the policy's bounds (then Tenantry clamps it).
    const existing = (await this.read(want.deployment)) as K8sDeployment | undefined;
    const current = existing?.spec?.replicas;
    if (d.scaling && existing && current !== undefined && inBounds(current, bounds(d)))
      delete (want.deployment as K8sDeployment).spec!.replicas;
    for (const m of want.all) await this.apply(m);
    if (!d.scaling) await this.remove(hpaRef(d));
    await this.pruneConfigMaps(d, want.configMap?.metadata?.name);
    return this.observe(d);
  }

  async delete(d: DesiredService): Promise<void> {
    await this.remove(hpaRef(d));
    await this.remove({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: d.slug, namespace: d.tenantSlug },
    });
    await this.pruneConfigMaps(d, undefined);
  }

  async close(): Promise<void> {}

  private async observed(
    d: DesiredService,
    deployment: K8sDeployment | undefined,
    drift: string[],
  ): Promise<ObservedService> {
    const pods = deployment
      ? await this.call(`list pods of ${d.slug}`, () =>
          this.clients().then(({ core }) =>
            core.listNamespacedPod({ namespace: d.tenantSlug, labelSelector: `${SERVICE_UUID}=${d.id}` }),
          ),
        )
      : { items: [] as V1Pod[] };
    const items = pods.items
      .filter((p) => !p.metadata?.deletionTimestamp)
      .map((p) => ({
        name: p.metadata?.name ?? '',
        phase: p.status?.phase ?? 'Unknown',
        ready: p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
        version: p.metadata?.labels?.[VERSION] ?? '',
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
    const s = deployment?.status;
    return {
      exists: deployment !== undefined,
      replicas: {
        desired: deployment?.spec?.replicas ?? 0,
        current: s?.replicas ?? 0,
        ready: s?.readyReplicas ?? 0,
        updated: s?.updatedReplicas ?? 0,
        items,
      },
      details: {
        namespace: d.tenantSlug,
        deployment: d.slug,
        image: d.image,
        ...(d.scaling ? { hpa: bounds(d) } : {}),
        ...(d.configuration ? { configMap: configMapName(d) } : {}),
      },
      drift,
    };
  }

  private read(m: KubernetesObject): Promise<KubernetesObject | undefined> {
    return this.call(`read ${m.kind} ${m.metadata?.name}`, async () => {
      try {
        const { objects } = await this.clients();
        return wire(await objects.read(m as KubernetesObject & { metadata: { name: string } }));
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw err;
      }
    });
  }

  private apply(m: KubernetesObject): Promise<unknown> {
    return this.call(`apply ${m.kind} ${m.metadata?.name}`, async () => {
      const { objects, serverSideApply } = await this.clients();
      return objects.patch(m, undefined, undefined, FIELD_MANAGER, true, serverSideApply);
    });
  }

  private remove(m: KubernetesObject): Promise<unknown> {
    return this.call(`delete ${m.kind} ${m.metadata?.name}`, async () => {
      try {
        const { objects } = await this.clients();
        return await objects.delete(m, undefined, undefined, undefined, undefined, 'Background');
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw err;
      }
    });
  }

  /** Removes the service's ConfigMaps of configuration versions it no longer runs. */
  private async pruneConfigMaps(d: DesiredService, keep: string | undefined): Promise<void> {
    const list = await this.call(`list config maps of ${d.slug}`, async () => {
      try {
        const { core } = await this.clients();
        return await core.listNamespacedConfigMap({
          namespace: d.tenantSlug,
          labelSelector: `${SERVICE_UUID}=${d.id}`,
        });
      } catch (err) {
        if (statusOf(err) === 404) return { items: [] };
        throw err;
      }
    });
    for (const cm of list.items)
      if (cm.metadata?.name && cm.metadata.name !== keep)
        await this.remove({
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: cm.metadata.name, namespace: d.tenantSlug },
        });
  }

  /** Maps API failures: unreachable or 5xx/429 are retried; other refusals are permanent. */
  private async call<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      const status = statusOf(err);
      const body = bodyMessage(err);
      if (status === undefined || status >= 500 || status === 429 || status === 409)
        throw new ProviderError(
          `kubernetes: ${what} failed: ${body ?? (err as Error).message}`,
          status === undefined ? 'ApiServerUnavailable' : 'ApiServerError',
          true,
          { cause: err },
        );
      throw new ProviderError(`kubernetes: ${what} refused (${status}): ${body ?? ''}`, 'Refused', false, {
        cause: err,
      });
    }
  }
}

const FIELD_MANAGER = 'tenantry';
const SERVICE_UUID = 'tenantry.dev/service-uuid';
const VERSION = 'app.kubernetes.io/version';
const QUOTA_NAME = 'tenantry-compute';
const NETPOL_NAME = 'tenantry-partition';
const PARTITION = 'tenantry.dev/network-partition';

interface K8sDeployment extends KubernetesObject {
  spec?: {
    replicas?: number;
    template?: {
      metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
      spec?: { containers?: { image?: string; [field: string]: unknown }[]; [field: string]: unknown };
    };
  };
  status?: { replicas?: number; readyReplicas?: number; updatedReplicas?: number };
}

const key = (m: KubernetesObject) => `${m.kind}/${m.metadata?.name}`;
const configMapName = (d: DesiredService) =>
  d.configuration ? `${d.slug}-cfg-${d.configuration.checksum.slice(0, 12)}` : undefined;

/** The policy's replica bounds, with the maximum cut to what the binding's quota allows. */
export function bounds(d: DesiredService): { min: number; max: number } {
  const cap = quotaReplicaCap(d.binding.computeUnits, d.unitCost);
  const max = Math.min(d.scaling?.maxReplicas ?? d.replicas, cap ?? Number.MAX_SAFE_INTEGER);
  return { min: Math.min(d.scaling?.minReplicas ?? d.replicas, max), max };
}
const inBounds = (n: number, b: { min: number; max: number }) => n >= b.min && n <= b.max;

const hpaRef = (d: DesiredService): KubernetesObject => ({
  apiVersion: 'autoscaling/v2',
  kind: 'HorizontalPodAutoscaler',
  metadata: { name: d.slug, namespace: d.tenantSlug },
});

function labelsOf(d: DesiredService): Record<string, string> {
  return {
    'app.kubernetes.io/name': d.component,
    'app.kubernetes.io/instance': d.slug,
    [VERSION]: d.version.slice(0, 63).replace(/[^A-Za-z0-9._-]/g, '_'),
    'app.kubernetes.io/managed-by': 'tenantry',
    'tenantry.dev/tenant': d.tenantSlug,
    'tenantry.dev/tenant-uuid': d.tenantId,
    'tenantry.dev/deployment': d.deploymentSlug,
    [SERVICE_UUID]: d.id,
  };
}

/** The objects a service needs, as server-side apply documents (only the fields Tenantry owns). */
export function manifests(d: DesiredService) {
  const ns = d.tenantSlug;
  const labels = labelsOf(d);
  const tenantLabels = {
    'app.kubernetes.io/managed-by': 'tenantry',
    'tenantry.dev/tenant': d.tenantSlug,
    'tenantry.dev/tenant-uuid': d.tenantId,
    [PARTITION]: d.binding.networkPartition,
  };
  const namespace = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: tenantLabels } };
  const quota =
    d.binding.computeUnits === null
      ? undefined
      : {
          apiVersion: 'v1',
          kind: 'ResourceQuota',
          metadata: { name: QUOTA_NAME, namespace: ns, labels: tenantLabels },
          spec: {
            hard: {
              'requests.cpu': cpu(d.binding.computeUnits * COMPUTE_UNIT.cpuMillis),
              'requests.memory': memory(d.binding.computeUnits * COMPUTE_UNIT.memoryMiB),
            },
          },
        };
  const netpol = {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: NETPOL_NAME, namespace: ns, labels: tenantLabels },
    spec: {
      podSelector: {},
      policyTypes: ['Ingress'],
      // `_from`: the client serialises its typed model, whose field for the wire's `from` is `_from`
      // (a plain `from` would be dropped, leaving a rule that admits every namespace).
      ingress: [
        { _from: [{ namespaceSelector: { matchLabels: { [PARTITION]: d.binding.networkPartition } } }] },
      ],
    },
  };
  const cmName = configMapName(d);
  const configMap =
    d.configuration && cmName
      ? {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: {
            name: cmName,
            namespace: ns,
            labels: { ...labels, 'tenantry.dev/config': d.configuration.name },
            annotations: {
              'tenantry.dev/config-version': String(d.configuration.version),
              'tenantry.dev/config-checksum': d.configuration.checksum,
            },
          },
          immutable: true,
          data: { 'config.json': d.configuration.canonical },
        }
      : undefined;
  const b = bounds(d);
  const replicas = d.scaling ? Math.min(Math.max(d.replicas, b.min), b.max) : Math.min(d.replicas, b.max);
  const podAnnotations: Record<string, string> = d.configuration
    ? { 'tenantry.dev/config-checksum': d.configuration.checksum }
    : {};
  const deployment: K8sDeployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: d.slug, namespace: ns, labels },
    spec: {
      replicas,
      selector: { matchLabels: { [SERVICE_UUID]: d.id } },
      template: {
        metadata: { labels, annotations: podAnnotations },
        spec: {
          containers: [
            {
              name: d.component,
              image: d.image,
              ...(d.command ? { command: d.command } : {}),
              resources: {
                requests: {
                  cpu: cpu(d.unitCost * COMPUTE_UNIT.cpuMillis),
                  memory: memory(d.unitCost * COMPUTE_UNIT.memoryMiB),
                },
              },
              ...(cmName
                ? { volumeMounts: [{ name: 'config', mountPath: '/etc/tenantry/config', readOnly: true }] }
                : {}),
            },
          ],
          ...(cmName ? { volumes: [{ name: 'config', configMap: { name: cmName } }] } : {}),
        },
      },
    },
  } as K8sDeployment;
  const hpa = d.scaling
    ? {
        apiVersion: 'autoscaling/v2',
        kind: 'HorizontalPodAutoscaler',
        metadata: { name: d.slug, namespace: ns, labels },
        spec: {
          scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: d.slug },
          minReplicas: Math.max(1, b.min),
          maxReplicas: Math.max(1, b.max),
          metrics: [
            {
              type: 'Resource',
              resource: {
                name: d.scaling.metric,
                target: { type: 'Utilization', averageUtilization: d.scaling.targetUtilization },
              },
            },
          ],
        },
      }
    : undefined;
  const all: KubernetesObject[] = [namespace, quota, netpol, configMap, deployment, hpa].filter(
    (x): x is NonNullable<typeof x> => x !== undefined,
  );
  return { all, namespace, quota, netpol, configMap, deployment, hpa };
}

/** Where a real object differs from what Tenantry applies (only fields Tenantry owns are compared). */
function differences(want: KubernetesObject, real: KubernetesObject, d: DesiredService): string[] {
  const out: string[] = [];
  const name = `${want.kind} ${want.metadata?.name}`;
  for (const [k, v] of Object.entries(want.metadata?.labels ?? {}))
    if (real.metadata?.labels?.[k] !== v)
      out.push(`${name}: label ${k} is ${real.metadata?.labels?.[k] ?? 'absent'}, want ${v}`);
  const w = want as unknown as Record<string, unknown>;
  const r = real as unknown as Record<string, unknown>;
  if (want.kind === 'Deployment') {
    const ws = (want as K8sDeployment).spec!;
    const rs = (real as K8sDeployment).spec;
    const image = rs?.template?.spec?.containers?.[0]?.image;
    if (image !== d.image) out.push(`${name}: image is ${image}, want ${d.image}`);
    const replicas = rs?.replicas ?? 0;
    if (d.scaling ? !inBounds(replicas, bounds(d)) : replicas !== ws.replicas)
      out.push(
        `${name}: ${replicas} replicas, want ${d.scaling ? `${bounds(d).min}..${bounds(d).max}` : ws.replicas}`,
      );
    const checksum = rs?.template?.metadata?.annotations?.['tenantry.dev/config-checksum'];
    if (checksum !== d.configuration?.checksum)
      out.push(
        `${name}: configuration checksum is ${checksum ?? 'absent'}, want ${d.configuration?.checksum ?? 'absent'}`,
      );
  } else if ('spec' in w && !contains(r.spec, w.spec)) {
    out.push(`${name}: spec differs (${JSON.stringify(w.spec)} wanted)`);
  }
  return out;
}

/**
 * The object in its wire field names: the client's typed models rename fields that are reserved words
 * in TypeScript (`from` of a NetworkPolicy rule becomes `_from`); no Kubernetes field starts with `_`.
 */
function wire<T>(v: T): T {
  if (Array.isArray(v)) return v.map(wire) as T;
  if (v && typeof v === 'object' && !(v instanceof Date))
    return Object.fromEntries(
      Object.entries(v).map(([k, x]) => [k.startsWith('_') ? k.slice(1) : k, wire(x)]),
    ) as T;
  return v;
}

/** Whether `real` has every field of `want` with the same value (quantities compared as written). */
function contains(real: unknown, want: unknown): boolean {
  if (Array.isArray(want))
    return Array.isArray(real) && real.length === want.length && want.every((x, i) => contains(real[i], x));
  if (want && typeof want === 'object')
    return (
      !!real &&
      typeof real === 'object' &&
      Object.entries(want).every(([k, v]) => contains((real as Record<string, unknown>)[k], v))
    );
  return real === want;
}

/** Quantities in the form the API server writes them back (`1500m`, `2`; `640Mi`, `1Gi`), so they compare. */
const cpu = (millis: number) => (millis % 1000 === 0 ? String(millis / 1000) : `${millis}m`);
const memory = (mib: number) => (mib % 1024 === 0 ? `${mib / 1024}Gi` : `${mib}Mi`);

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

function bodyMessage(err: unknown): string | undefined {
  const body = (err as { body?: unknown })?.body;
  if (typeof body !== 'string') return undefined;
  try {
    return (JSON.parse(body) as { message?: string }).message ?? body;
  } catch {
    return body;
  }
}
