import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';

/**
 * Makes a job due now: an object to reconcile (a deployment whose resource changed status; `kind`
 * is its kind) or a job of a registered type (`kind` is the type, `objectId` its key). Same upsert
 * as the change path's (src/changes/change-path.ts), which enqueues desired-state changes.
 *
 * Concurrency contract: `insert … on conflict do update` on the object's row; a lease held on it
 * is kept (the holder sees the bumped `ticket` when it finishes and leaves the job due).
 */
export async function enqueueJob(
  trx: Trx,
  input: { kind: string; objectId: string; tenantId: string | null; generation: number },
): Promise<void> {
  await sql`
    insert into reconcile_jobs (object_kind, object_id, tenant_id, generation)
    values (${input.kind}, ${input.objectId}, ${input.tenantId}, ${input.generation})
    on conflict (object_kind, object_id) do update
      set generation = greatest(reconcile_jobs.generation, excluded.generation),
          run_after = now(), attempts = 0, updated_at = now(), ticket = reconcile_jobs.ticket + 1`.execute(
    trx,
  );
}
