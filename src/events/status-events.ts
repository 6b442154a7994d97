import type { Trx } from '../db/database.js';
import { appendEvent } from './append-event.js';
import type { EventName } from './event-types.js';

/** An observed-state transition the controller reports (schema: docs/events/*.ready.v1 / *.failed.v1). */
export interface StatusChange {
  kind: 'Deployment' | 'IntegrationResource';
  objectId: string;
  slug: string;
  tenantId: string;
  observedGeneration: number;
  previousPhase: string;
  phase: 'Ready' | 'Failed';
  /** The Ready condition's reason and message: safe text, never secrets. */
  reason: string;
  message: string;
  correlationId: string;
}

/** Appends `<kind>.ready` / `<kind>.failed` in the caller's transaction (e.g. the status write's). */
export function appendStatusEvent(trx: Trx, c: StatusChange): Promise<number> {
  const kind = c.kind.toLowerCase() as 'deployment' | 'integrationresource';
  const name: EventName = `${kind}.${c.phase === 'Ready' ? 'ready' : 'failed'}`;
  return appendEvent(trx, {
    tenantId: c.tenantId,
    name,
    subject: `${kind}s/${c.objectId}`,
    data: {
      kind: c.kind,
      uuid: c.objectId,
      slug: c.slug,
      observedGeneration: c.observedGeneration,
      previous: { phase: c.previousPhase },
      current: { phase: c.phase },
      reason: c.reason,
      message: c.message,
    },
    correlationId: c.correlationId,
  });
}
