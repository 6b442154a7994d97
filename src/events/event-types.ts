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
  'deployment.created',
  'deployment.updated',
  'deployment.deleted',
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
  'deployment.ready',
  'deployment.failed',
  'integrationresource.ready',
  'integrationresource.failed',
  'integrationresource.drifted',
] as const;
export type EventName = (typeof EVENT_NAMES)[number];

export type ChangeAction = 'create' | 'update' | 'delete' | 'activate' | 'suspend' | 'resume' | 'archive';

const PAST: Record<ChangeAction, string> = {
  create: 'created',
  update: 'updated',
  delete: 'deleted',
  activate: 'activated',
  suspend: 'suspended',
  resume: 'resumed',
  archive: 'archived',
};

export function eventName(kind: Kind, action: ChangeAction): EventName {
  const name = `${kind.toLowerCase()}.${PAST[action]}`;
  if (!(EVENT_NAMES as readonly string[]).includes(name))
    throw new Error(`no event type for ${kind} ${action}`);
  return name as EventName;
}

export const cloudEventType = (name: EventName): string => `dev.tenantry.${name}.v1`;
