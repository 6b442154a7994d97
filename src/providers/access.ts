import type { DesiredResource } from './provider.js';

/**
 * What a tenant's credentials may do with one resource, as far as a suspension takes it away
 * (issue 18): a database role's LOGIN, Kafka principals' access to a topic, a container's stored
 * access policies (the anchors of its SAS tokens). `observeAccess` only reads; `revokeAccess` takes
 * away exactly what an observed grant lists and `restoreAccess` gives exactly that back (and nothing
 * that no longer exists). All three are idempotent, so a workflow step may run them twice.
 */
export interface AccessControl {
  observeAccess(desired: DesiredResource): Promise<AccessGrant>;
  revokeAccess(desired: DesiredResource, grant: AccessGrant): Promise<void>;
  restoreAccess(desired: DesiredResource, grant: AccessGrant): Promise<void>;
}

/** A JSON-serialisable record of access, kept in the suspension record; its shape is the provider's. */
export type AccessGrant = { provider: string } & Record<string, unknown>;

export function hasAccessControl(p: object): p is AccessControl {
  return 'observeAccess' in p && 'revokeAccess' in p && 'restoreAccess' in p;
}
