import { sql } from 'kysely';
import { chainOf } from '../audit/audit-hash.js';
import { noteTenantWriteLock, tenantWriteLockSql } from '../changes/tenant-write-lock.js';
import type { RequestContext } from '../context/request-context.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import { pokeParents } from '../controller/queue/poke-parents.js';
import { target } from '../controller/reconcilers.js';
import { recordStatusEvent } from '../controller/status.js';
import type { Trx } from '../db/database.js';
import type { ObjectRow } from '../registry/object.repository.js';

/** One observed status an agent reports for one object of its cell. */
export interface StatusReport {
  id: string;
  generation: number;
  phase: 'Provisioning' | 'Ready' | 'Failed' | 'Deleted';
  ready: { status: 'True' | 'False'; reason: string; message: string };
  /** Drift the agent found and repaired (a `drifted` event). */
  drift?: string[];
}

/** One report the service found current (its object's generation, not a finalised tombstone). */
export interface CurrentReport {
  report: StatusReport;
  row: ObjectRow;
  /** The phase written: `Terminating` while the object is being deleted and the agent is not done. */
  phase: string;
}

interface Written {
  id: string;
  old_phase: string;
  old_status: string | null;
}

/**
 * Writes the status of a whole report request of a cell's agent in the caller's transaction: the
 * tenant write locks of its tenants (one statement, in chain order), then phase, observedGeneration
 * and the merged Ready condition of every object in one statement. Only transitions that matter
 * (became Ready or Failed, drift repaired, a tombstone finalised) add statements of their own:
 * their audit record and event, the parents' poke, the tombstone's job. Same writes as
 * src/controller/reconcilers.ts `settle` does one object at a time.
 *
 * Concurrency contract: the tenant write locks are taken before any row (as every change of a
 * tenant takes them, in one order: no deadlock between two report requests); each row is written
 * only if its generation is still the reported one (a change meanwhile wins, and the object comes
 * again through the feed). Returns the ids written.
 */
export async function writeStatusReports(
  trx: Trx,
  ctx: RequestContext,
  reports: readonly CurrentReport[],
  now = new Date(),
): Promise<Set<string>> {
  if (reports.length === 0) return new Set();
  const chains = [
    ...new Set(reports.map((r) => chainOf(r.row.tenant_id ? String(r.row.tenant_id).toLowerCase() : null))),
  ].sort();
  await sql`select ${tenantWriteLockSql(sql`c`, 'status')} from unnest(${chains}::text[]) c order by c`.execute(
    trx,
  );
  for (const c of chains) noteTenantWriteLock(trx, c, 'status');
  const input = reports.map((r) => ({
    id: r.row.id,
    generation: Number(r.row.generation),
    phase: r.phase,
    status: r.report.ready.status,
    reason: r.report.ready.reason,
    message: r.report.ready.message,
  }));
  // `old` reads the rows as they are under the locks; the update merges the Ready condition as
  // mergeReady does (lastTransitionTime moves only when the status does).
  const written = await sql<Written>`
    with x as (
      select * from jsonb_to_recordset(${JSON.stringify(input)}::jsonb)
        as x(id uuid, generation bigint, phase text, status text, reason text, message text)
    ), old as (
      select r.id, r.phase as old_phase,
        (select c->>'status' from jsonb_array_elements(r.conditions) c where c->>'type' = 'Ready' limit 1) as old_status,
        (select c->>'lastTransitionTime' from jsonb_array_elements(r.conditions) c where c->>'type' = 'Ready' limit 1) as old_ltt
      from integration_resources r join x on x.id = r.id and r.generation = x.generation
    ), upd as (
      update integration_resources r set phase = x.phase, observed_generation = x.generation,
        conditions = jsonb_build_array(jsonb_build_object('type', 'Ready', 'status', x.status, 'reason', x.reason,
            'message', x.message, 'lastTransitionTime',
            case when o.old_status = x.status and o.old_ltt is not null then o.old_ltt else ${now.toISOString()} end))
          || coalesce((select jsonb_agg(c) from jsonb_array_elements(r.conditions) c where c->>'type' <> 'Ready'), '[]'::jsonb)
      from x join old o on o.id = x.id
      where r.id = x.id and r.generation = x.generation
      returning r.id
    )
    select o.id, o.old_phase, o.old_status from old o where o.id in (select id from upd)`.execute(trx);
  const byId = new Map(reports.map((r) => [r.row.id, r]));
  for (const w of written.rows) {
    const r = byId.get(w.id);
    if (!r) continue;
    const t = target('IntegrationResource', r.row);
    const event = {
      previousPhase: w.old_phase,
      phase: r.phase,
      reason: r.report.ready.reason,
      message: r.report.ready.message,
    };
    if (r.report.drift && w.old_phase === 'Ready')
      await recordStatusEvent(trx, ctx, t, 'drifted', { ...event, drift: r.report.drift });
    const becameFailed = r.phase === 'Failed' && w.old_phase !== 'Failed';
    if (r.phase === 'Ready' && w.old_phase !== 'Ready') await recordStatusEvent(trx, ctx, t, 'ready', event);
    if (becameFailed) await recordStatusEvent(trx, ctx, t, 'failed', event);
    const changed = w.old_status !== r.report.ready.status || w.old_phase !== r.phase;
    if (changed && r.row.tenant_id)
      await pokeParents(trx, {
        tenantId: String(r.row.tenant_id),
        deploymentId: r.row.deployment_id ? String(r.row.deployment_id) : null,
        force: becameFailed,
      });
    // A finalised tombstone: its job goes at once.
    if (r.report.phase === 'Deleted')
      await enqueueJob(trx, {
        kind: 'IntegrationResource',
        objectId: r.row.id,
        tenantId: r.row.tenant_id ? String(r.row.tenant_id) : null,
        generation: 0,
      });
  }
  return new Set(written.rows.map((w) => w.id));
}
