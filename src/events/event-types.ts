import type { Kind } from '../domain/manifest.js';

/** The typed registry of event types. CloudEvents `type` is `dev.tenantry.{name}.v1`. */
export const EVENT_NAMES = [
  'customer.created',
  'customer.updated',
  'customer.deleted',
  'system.created',
  'system.updated',
  'system.deleted',
  'tenant.created',
  'tenant.updated',
  'tenant.activated',
  'tenant.suspended',
  'tenant.resumed',
  'tenant.archived',
  'tenant.deleted',
  'tenant.plan_updated',
  'tenant.region_migrated',
  'deployment.created',
  'deployment.updated',
  'deployment.deleted',
  'deployment.ready',
  'deployment.failed',
  'integrationresource.created',
  'integrationresource.updated',
  'integrationresource.deleted',
  'region.created',
  'region.updated',
  'region.deleted',
  'cell.created',
  'cell.updated',
  'cell.deleted',
  'plan.created',
  'plan.updated',
  'plan.deleted',
  // Status transitions written by the controller (system actor), not desired-state changes.
  'tenant.ready',
  'tenant.failed',
  'integrationresource.ready',
  'integrationresource.failed',
  'integrationresource.drifted',
  'webhookendpoint.created',
  'webhookendpoint.updated',
  'webhookendpoint.deleted',
  'webhookendpoint.disabled',
  // Workflow progress (src/workflows), in the tenant's stream.
  'workflow.started',
  'workflow.step_completed',
  'workflow.succeeded',
  'workflow.failed',
] as const;
export type EventName = (typeof EVENT_NAMES)[number];

export type ChangeAction =
  | 'create'
  | 'update'
  | 'delete'
  | 'activate'
  | 'suspend'
  | 'resume'
  | 'archive'
  | 'disable';

const PAST: Record<ChangeAction, string> = {
  create: 'created',
  update: 'updated',
  delete: 'deleted',
  activate: 'activated',
  suspend: 'suspended',
  resume: 'resumed',
  archive: 'archived',
  disable: 'disabled',
};

export function eventName(kind: Kind, action: ChangeAction): EventName {
  const name = `${kind.toLowerCase()}.${PAST[action]}`;
  if (!(EVENT_NAMES as readonly string[]).includes(name))
    throw new Error(`no event type for ${kind} ${action}`);
  return name as EventName;
}

export const cloudEventType = (name: EventName): string => `dev.tenantry.${name}.v1`;

/** Every published CloudEvents `type`. */
export const CLOUD_EVENT_TYPES: readonly string[] = EVENT_NAMES.map(cloudEventType);

/** Events about an object's observed state (emitted by the controller), not a desired-state change. */
export const STATUS_EVENTS: readonly EventName[] = EVENT_NAMES.filter(
  (n) => n.endsWith('.ready') || n.endsWith('.failed') || n.endsWith('.drifted'),
);
