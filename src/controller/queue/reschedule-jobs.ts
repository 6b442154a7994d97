import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';

/**
 * What a controller does with the schedule when it starts:
 * - a job that last failed because its provider was not configured, for a resource type this
 *   process has a provider for, is due now with a fresh count (the operator has just configured it);
 * - a job scheduled further ahead than `resyncMs` (the interval was shortened) comes at the resync,
 *   spread by ±10% (one instant per job: this runs once per start), so the new interval applies to
 *   every job, not only after each one's old `run_after`.
 *
 * Concurrency contract: leased jobs (`locked_until` in the future) are untouched, so this may run
 * while other controllers work; both updates only ever move `run_after` earlier.
 */
export async function rescheduleJobs(
  trx: Trx,
  input: { resyncMs: number; configuredTypes: string[] },
): Promise<{ providerRetried: number; resynced: number }> {
  const free = sql`(locked_until is null or locked_until < now())`;
  const retried = await sql`
    update reconcile_jobs j set run_after = now(), attempts = 0, updated_at = now()
    from integration_resources r
    where j.object_kind = 'IntegrationResource' and r.id = j.object_id
      and j.last_error like 'ProviderNotConfigured:%' and r.resource_type = any(${input.configuredTypes}::text[])
      and ${free}`.execute(trx);
  const resynced = await sql`
    update reconcile_jobs set updated_at = now(),
      run_after = now() + make_interval(secs => ${input.resyncMs / 1000} * (0.9 + 0.2 * random()))
    where run_after > now() + make_interval(secs => ${input.resyncMs / 1000} * 1.1) and ${free}`.execute(trx);
  return {
    providerRetried: Number(retried.numAffectedRows ?? 0),
    resynced: Number(resynced.numAffectedRows ?? 0),
  };
}
