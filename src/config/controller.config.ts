import { type Static, Type } from '@sinclair/typebox';
import { integerSetting } from './settings.js';

/** The reconcile controller (src/controller). */
export const ControllerConfigSchema = Type.Object({
  workers: Type.Integer({
    minimum: 1,
    description: 'Provider calls (and other jobs) this process runs at once.',
  }),
  batchSize: Type.Optional(
    Type.Integer({
      minimum: 1,
      description: 'Reconcile jobs claimed in one statement, whose statuses are written in one transaction.',
    }),
  ),
  batchesAtOnce: Type.Optional(
    Type.Integer({
      minimum: 1,
      description:
        'Claimed batches worked on at once: while some wait on their provider calls, others are read or settled.',
    }),
  ),
  leaseMs: Type.Integer({
    minimum: 1,
    description: 'How long a claimed job stays leased without a heartbeat before another worker may take it.',
  }),
  backoffBaseMs: Type.Integer({
    minimum: 1,
    description: 'Retry delay: full jitter over min(cap, base × 2^attempt).',
  }),
  backoffCapMs: Type.Integer({ minimum: 1 }),
  maxAttempts: Type.Integer({
    minimum: 1,
    description:
      'Failed attempts in a row before the object is marked Failed (retried again at the next resync).',
  }),
  resyncIntervalMs: Type.Integer({
    minimum: 1,
    description: 'Every object is reconciled again this long after its last success, to repair drift.',
  }),
  pollIntervalMs: Type.Integer({ minimum: 1, description: 'How often an idle worker looks for due jobs.' }),
});
export type ControllerConfig = Static<typeof ControllerConfigSchema>;

export function parseControllerConfig(env: NodeJS.ProcessEnv, workers?: string | number): ControllerConfig {
  return {
    workers: integerSetting('TENANTRY_CONTROLLER_WORKERS', workers ?? env.TENANTRY_CONTROLLER_WORKERS, 8),
    batchSize: integerSetting('TENANTRY_CONTROLLER_BATCH', env.TENANTRY_CONTROLLER_BATCH, 256),
    batchesAtOnce: integerSetting('TENANTRY_CONTROLLER_BATCHES', env.TENANTRY_CONTROLLER_BATCHES, 4),
    leaseMs: integerSetting('TENANTRY_LEASE_MS', env.TENANTRY_LEASE_MS, 30_000),
    backoffBaseMs: integerSetting('TENANTRY_BACKOFF_BASE_MS', env.TENANTRY_BACKOFF_BASE_MS, 1_000),
    backoffCapMs: integerSetting('TENANTRY_BACKOFF_CAP_MS', env.TENANTRY_BACKOFF_CAP_MS, 5 * 60_000),
    maxAttempts: integerSetting('TENANTRY_MAX_ATTEMPTS', env.TENANTRY_MAX_ATTEMPTS, 8),
    resyncIntervalMs: integerSetting('TENANTRY_RESYNC_MS', env.TENANTRY_RESYNC_MS, 10 * 60_000),
    pollIntervalMs: integerSetting('TENANTRY_POLL_MS', env.TENANTRY_POLL_MS, 500),
  };
}
