import type { ObjectState } from '../changes/change-path.js';
import { API_VERSION } from '../domain/manifest.js';
import { definitionOf, type Kind } from './kinds/index.js';
import type { ObjectRow } from './object.repository.js';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
}

/** The API's view of an object: desired state in `spec`, identity in `metadata`, observed in `status`. */
export interface ApiObject {
  apiVersion: typeof API_VERSION;
  kind: Kind;
  metadata: {
    uuid: string;
    name: string;
    slug: string;
    generation: number;
    labels: Record<string, string>;
    createdAt: string;
    updatedAt: string;
    deletedAt?: string;
    tenantUuid?: string;
    /** WebhookEndpoint: the owning tenant's UUID (absent = platform-wide). */
    tenant?: string;
  };
  spec: unknown;
  status: {
    observedGeneration: number;
    phase: string;
    lifecycle: string;
    conditions: Condition[];
    physicalName?: string;
    /** Tenant: its binding to a cell (null while unplaced). */
    placement?: unknown;
    /** Cell: how many tenants it hosts. */
    allocated?: number;
  };
}

export function initialConditions(now = new Date()): Condition[] {
  return [
    {
      type: 'Ready',
      status: 'Unknown',
      reason: 'AwaitingReconcile',
      message: 'The change is recorded; the controller has not reconciled it yet.',
      lastTransitionTime: now.toISOString(),
    },
  ];
}

export function toApiObject(kind: Kind, row: ObjectRow): ApiObject {
  const own = definitionOf(kind).represent;
  const { tenant, ...metadata } = own?.metadata?.(row) ?? {};
  return {
    apiVersion: API_VERSION,
    kind,
    metadata: {
      uuid: row.id,
      name: own?.name ? own.name(row) : row.slug,
      ...(tenant !== undefined ? { tenant: tenant as string } : {}),
      slug: row.slug,
      generation: row.generation,
      labels: row.labels ?? {},
      createdAt: row.created_at.toISOString(),
      updatedAt: row.updated_at.toISOString(),
      ...(row.deleted_at ? { deletedAt: row.deleted_at.toISOString() } : {}),
      ...metadata,
    },
    spec: row.spec,
    status: {
      observedGeneration: row.observed_generation,
      phase: row.phase,
      lifecycle: row.lifecycle,
      conditions: (row.conditions as Condition[]) ?? [],
      ...own?.status?.(row),
    },
  };
}

export function stateOf(row: ObjectRow): ObjectState {
  return {
    metadata: { uuid: row.id, slug: row.slug, labels: row.labels ?? {} },
    spec: row.spec,
    lifecycle: row.lifecycle,
    ...(row.placement ? { placement: row.placement } : {}),
  };
}
