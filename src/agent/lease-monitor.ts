import { sql } from 'kysely';
import type { Logger } from 'pino';
import { lockTenantWrites } from '../changes/tenant-write-lock.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import { asPlatform, type Db } from '../db/database.js';
import { MISSED_HEARTBEATS } from './agent.service.js';

/**
 * Marks the cells whose agent missed MISSED_HEARTBEATS heartbeats, and their objects, `Unknown`
 * (never Failed): the cell's AgentConnected condition and each object's Ready condition say since
 * when nothing was heard. The agent's next heartbeat is told to report everything again.
 *
 * Concurrency contract: one conditional update (`connection = 'Connected'` and the lease run out)
 * takes each lost cell; any number of control-plane processes may run a monitor.
 */
export async function markLostAgents(db: Db): Promise<string[]> {
  return asPlatform(db, async (trx) => {
    const lost = await sql<{
      cell_id: string;
      slug: string;
      last_heartbeat_at: Date;
      heartbeat_interval_ms: number;
      revoked: boolean;
    }>`
      update cell_agents a set connection = 'Unknown', connection_since = now()
      from cells c
      where c.id = a.cell_id and a.connection = 'Connected'
        and a.last_heartbeat_at < now() - make_interval(secs => a.heartbeat_interval_ms * ${MISSED_HEARTBEATS} / 1000.0)
      returning a.cell_id, c.slug, a.last_heartbeat_at, a.heartbeat_interval_ms, a.revoked_at is not null as revoked`.execute(
      trx,
    );
    for (const cell of lost.rows) {
      const since = cell.last_heartbeat_at.toISOString();
      const why = `no heartbeat from the cell's agent since ${since} (${MISSED_HEARTBEATS} missed intervals of ${cell.heartbeat_interval_ms} ms)`;
      const condition = {
        type: 'AgentConnected',
        status: 'Unknown',
        reason: 'HeartbeatMissed',
        message: `Unknown: ${why}.`,
        lastTransitionTime: new Date().toISOString(),
      };
      // A revoked agent's cell keeps saying Revoked; its objects are Unknown all the same.
      if (!cell.revoked)
        await sql`
        update cells set conditions = coalesce(
          (select jsonb_agg(c) from jsonb_array_elements(conditions) c where c->>'type' <> 'AgentConnected'),
          '[]'::jsonb) || jsonb_build_array(${JSON.stringify(condition)}::jsonb)
        where id = ${cell.cell_id}`.execute(trx);
      // The status writers' lock order (src/changes/tenant-write-lock.ts): the tenants first.
      const tenants = await sql<{ id: string }>`
        select id from tenants where cell_id = ${cell.cell_id} order by id`.execute(trx);
      for (const t of tenants.rows) await lockTenantWrites(trx, t.id);
      const objects = await sql<{ id: string; tenant_id: string; deployment_id: string | null }>`
        update integration_resources r set phase = 'Unknown',
          conditions = jsonb_build_array(jsonb_build_object(
            'type', 'Ready', 'status', 'Unknown', 'reason', 'AgentUnreachable',
            'message', ${`Unknown since ${new Date().toISOString()}: ${why}; last observed phase `} || r.phase || '.',
            'lastTransitionTime', now())) || coalesce(
            (select jsonb_agg(c) from jsonb_array_elements(r.conditions) c where c->>'type' <> 'Ready'), '[]'::jsonb)
        from tenants t
        where t.id = r.tenant_id and t.cell_id = ${cell.cell_id} and r.phase not in ('Deleted', 'Unknown')
        returning r.id, r.tenant_id, r.deployment_id`.execute(trx);
      // Their deployments and tenants are looked at again (DependentsNotReady).
      const parents = new Set<string>();
      for (const o of objects.rows)
        for (const [kind, objectId] of [
          ['Deployment', o.deployment_id],
          ['Tenant', o.tenant_id],
        ] as const) {
          if (!objectId || parents.has(objectId)) continue;
          parents.add(objectId);
          await enqueueJob(trx, { kind, objectId, tenantId: o.tenant_id, generation: 0 });
        }
    }
    return lost.rows.map((c) => c.slug);
  });
}

/** Runs markLostAgents every `intervalMs` until stopped. */
export class LeaseMonitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running = markLostAgents(this.db)
        .then((cells) => cells.length > 0 && this.logger.warn({ cells }, 'cell agents lost: objects Unknown'))
        .catch((err) => this.logger.warn({ err: (err as Error).message }, 'agent lease check failed'));
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
