/**
 * The contract between the reconcile controller and a compute target that runs services (Kubernetes
 * today). Like the integration-resource providers (src/providers/provider.ts): the controller reads the
 * desired state from the registry, asks the target what is real (`observe`), makes it true (`ensure`)
 * or removes it (`delete`). Every call is idempotent: repeating it after a crash, a lost reply or a
 * concurrent worker changes nothing more.
 */

/** What one compute unit of a binding's `computeUnits` quota is on a compute target. */
export const COMPUTE_UNIT = { cpuMillis: 100, memoryMiB: 128 } as const;

/** One service as the controller wants it, fully resolved from the registry. */
export interface DesiredService {
  /** The Service object's UUID. */
  id: string;
  /** The service's slug (`{deployment}.{component}`). */
  slug: string;
  tenantId: string;
  tenantSlug: string;
  deploymentSlug: string;
  component: string;
  /**
   * Replica names are this plus `-{n}` (seed 000: `plan-eu-prod_brave-wolf-1`):
   * `{system}-{region}-{environment type}[-{qualifiers}]_{adjective}-{animal}`.
   */
  replicaBase: string;
  /** Image by digest: `registry/name@sha256:…`. */
  image: string;
  version: string;
  /** Desired replicas (within the scaling policy's bounds when there is one). */
  replicas: number;
  /** Compute units one replica requests (see COMPUTE_UNIT). */
  unitCost: number;
  command?: string[];
  /** The tenant's binding (placement): its compute quota and network partition. */
  binding: { computeUnits: number | null; networkPartition: string };
  /** The service's scaling policy; absent: fixed replicas. */
  scaling?: { metric: 'cpu' | 'memory'; minReplicas: number; maxReplicas: number; targetUtilization: number };
  /** The configuration version the service runs with; absent: none. */
  configuration?: { name: string; version: number; checksum: string; canonical: string };
}

/** One replica as the compute target reports it. */
export interface ObservedReplica {
  name: string;
  /** e.g. Pending, Running (Kubernetes pod phase). */
  phase: string;
  ready: boolean;
  /** The version label the replica runs. */
  version: string;
  /** Where the replica listens, when the target knows (local processes: `http://127.0.0.1:port`). */
  address?: string;
  /** Times the replica was restarted after dying (local processes). */
  restarts?: number;
}

/** What the compute target found. Never holds a secret. */
export interface ObservedService {
  exists: boolean;
  replicas: {
    /** The replicas the target is asked for (Deployment spec.replicas). */
    desired: number;
    /** Replicas that exist (Deployment status.replicas). */
    current: number;
    ready: number;
    updated: number;
    /** The individual replicas, where the target reports them (pods). */
    items: ObservedReplica[];
  };
  /** Facts worth showing in status: namespace, object names, HPA bounds… */
  details: Record<string, unknown>;
  /** Differences between desired and real state, one human-readable line each; empty when in sync. */
  drift: string[];
}

export interface RuntimeProvider {
  /** e.g. `kubernetes`. */
  readonly name: string;
  observe(desired: DesiredService): Promise<ObservedService>;
  /** Creates or corrects what runs the service so it matches `desired`; returns what is real afterwards. */
  ensure(desired: DesiredService): Promise<ObservedService>;
  /** Removes what runs the service (the tenant's namespace stays); absent is success. */
  delete(desired: DesiredService): Promise<void>;
  close(): Promise<void>;
}

/** The highest replica count the binding's quota allows for one service, or null when unbounded. */
export function quotaReplicaCap(computeUnits: number | null, unitCost: number): number | null {
  return computeUnits === null ? null : Math.floor(computeUnits / Math.max(1, unitCost));
}
