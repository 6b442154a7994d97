/**
 * The contract between the reconcile controller and the systems that hold integration resources
 * (Kafka, blob storage, a data-plane PostgreSQL). One provider per resource type is configured; the
 * controller reads the desired state from the registry, asks the provider what is real (`observe`),
 * makes it true (`ensure`) or removes it (`delete`). Every call is idempotent: repeating it after a
 * crash, a lost reply or a concurrent worker changes nothing more.
 */
export type ResourceType = 'kafka-topic' | 'blob-container' | 'database';

/** One integration resource as the controller wants it, fully resolved from the registry. */
export interface DesiredResource {
  /** The integration resource's UUID. */
  id: string;
  type: ResourceType;
  tenantId: string;
  tenantSlug: string;
  /** The slug of the tenant or deployment the resource is scoped to. */
  scopeSlug: string;
  /** The name in the provider: topic name, container name, schema or database name (see registry/kinds.ts). */
  physicalName: string;
  kafkaTopic?: {
    partitions: number;
    replicationFactor: number;
    /** Milliseconds; null keeps the broker's default, -1 is unlimited. */
    retentionMs: number | null;
    /** Consumer deployments (their slugs) that get read access. */
    consumers: string[];
  };
  database?: { isolation: 'shared' | 'pool' | 'silo' };
  /**
   * The tenant is suspended or archived (src/workflows), or its writes are frozen by a migration:
   * `ensure` keeps its credentials revoked (a database role stays NOLOGIN, the tenant's Kafka
   * principals hold DENY ACLs on the topic, the container holds no stored access policy) and
   * `observe` reports access given back behind Tenantry's back. Without it, `ensure` gives back what
   * a suspension took (and `observe` reports what is still taken). The controller, the embedded
   * agent and a remote agent all run this, so a cell's agent needs no other instruction.
   */
  suspended?: boolean;
}

/** What the provider found. Never holds a secret. */
export interface ObservedResource {
  exists: boolean;
  /** Facts worth showing in status: partitions, retention, url, schema, role… */
  details: Record<string, unknown>;
  /** Differences between desired and real state, one human-readable line each; empty when in sync. */
  drift: string[];
}

export interface ResourceProvider {
  readonly type: ResourceType;
  /** e.g. `kafka`, `local-disk`, `azure-blob`, `postgres`. */
  readonly name: string;
  observe(desired: DesiredResource): Promise<ObservedResource>;
  /** Creates or corrects the resource so it matches `desired`; returns what is real afterwards. */
  ensure(desired: DesiredResource): Promise<ObservedResource>;
  /** Removes the resource; an absent resource is success. */
  delete(desired: DesiredResource): Promise<void>;
  close(): Promise<void>;
}

/**
 * A provider failure. `retryable` failures (broker unreachable, timeout) are retried with backoff;
 * permanent ones (invalid configuration refused by the provider) become Ready=False at once.
 * `reason` is a CamelCase condition reason, e.g. `BrokerUnavailable`, `InvalidName`.
 */
export class ProviderError extends Error {
  constructor(
    message: string,
    readonly reason: string,
    readonly retryable: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'ProviderError';
  }
}
