import { sql } from 'kysely';
import type { Trx } from '../db/database.js';

/** The agent of a cell as an operator sees it (`GET /v1/cells/{ref}/agent`, the console's agent page). */
export interface AgentDetail {
  cell: { id: string; slug: string };
  name: string;
  /** In-process agent of the embedded default (role all), or an agent of another process. */
  embedded: boolean;
  /** The version the agent last said it runs (its User-Agent), null until its first heartbeat. */
  version: string | null;
  joinedAt: string;
  lastSeenAt: string;
  lease: {
    heartbeatIntervalMs: number;
    /** Connected, or Unknown after the lease's missed intervals. */
    connection: 'Connected' | 'Unknown';
    since: string;
    /** When the cell turns Unknown if no heartbeat comes before. */
    expiresAt: string;
  };
  credential: {
    /** Valid; Expired (the agent did not rotate it in time: it needs a new join token); Revoked. */
    state: 'Valid' | 'Expired' | 'Revoked';
    expiresAt: string;
    revokedAt: string | null;
    revokedBy: string | null;
  };
  /** Commands the agent has not finished (src/agent/agent-commands.ts), oldest first (at most 50). */
  pendingCommands: {
    id: string;
    op: string;
    state: 'Pending' | 'Running';
    attempts: number;
    createdAt: string;
    claimedAt: string | null;
  }[];
  /** Objects of the cell's desired state by phase, and how many the agent has not observed yet. */
  objects: { total: number; byPhase: Record<string, number>; notObserved: number };
}

interface AgentRow {
  name: string;
  embedded: boolean;
  version: string | null;
  joined_at: Date;
  last_heartbeat_at: Date;
  heartbeat_interval_ms: number;
  connection: 'Connected' | 'Unknown';
  connection_since: Date;
  credential_expires_at: Date;
  revoked_at: Date | null;
  revoked_by: string | null;
  now: Date;
}

/**
 * The agent of `cell`, or null when no agent ever joined it. Three reads, in the caller's
 * transaction. `missedHeartbeats`: the lease's length in heartbeat intervals.
 */
export async function agentDetail(
  trx: Trx,
  cell: { id: string; slug: string },
  missedHeartbeats: number,
): Promise<AgentDetail | null> {
  const a = (
    await sql<AgentRow>`
      select name, embedded, version, joined_at, last_heartbeat_at, heartbeat_interval_ms, connection,
        connection_since, credential_expires_at, revoked_at, revoked_by, now() as now
      from cell_agents where cell_id = ${cell.id}`.execute(trx)
  ).rows[0];
  if (!a) return null;
  const commands = await sql<{
    id: string;
    op: string;
    state: 'Pending' | 'Running';
    attempts: number;
    created_at: Date;
    claimed_at: Date | null;
  }>`
    select id, op, state, attempts, created_at, claimed_at from cell_agent_commands
    where cell_id = ${cell.id} and state in ('Pending', 'Running') order by created_at limit 50`.execute(trx);
  const phases = await sql<{ phase: string; n: number; not_observed: number }>`
    select r.phase, count(*)::int as n,
      count(*) filter (where r.observed_generation is distinct from r.generation)::int as not_observed
    from integration_resources r join tenants t on t.id = r.tenant_id
    where t.cell_id = ${cell.id} and r.phase <> 'Deleted'
    group by r.phase order by r.phase`.execute(trx);
  const byPhase = Object.fromEntries(phases.rows.map((p) => [p.phase, p.n]));
  return {
    cell,
    name: a.name,
    embedded: a.embedded,
    version: a.version,
    joinedAt: a.joined_at.toISOString(),
    lastSeenAt: a.last_heartbeat_at.toISOString(),
    lease: {
      heartbeatIntervalMs: a.heartbeat_interval_ms,
      connection: a.connection,
      since: a.connection_since.toISOString(),
      expiresAt: new Date(
        a.last_heartbeat_at.getTime() + missedHeartbeats * a.heartbeat_interval_ms,
      ).toISOString(),
    },
    credential: {
      state: a.revoked_at ? 'Revoked' : a.credential_expires_at <= a.now ? 'Expired' : 'Valid',
      expiresAt: a.credential_expires_at.toISOString(),
      revokedAt: a.revoked_at?.toISOString() ?? null,
      revokedBy: a.revoked_by,
    },
    pendingCommands: commands.rows.map((c) => ({
      id: c.id,
      op: c.op,
      state: c.state,
      attempts: c.attempts,
      createdAt: c.created_at.toISOString(),
      claimedAt: c.claimed_at?.toISOString() ?? null,
    })),
    objects: {
      total: phases.rows.reduce((s, p) => s + p.n, 0),
      byPhase,
      notObserved: phases.rows.reduce((s, p) => s + p.not_observed, 0),
    },
  };
}

/** The version in an agent's User-Agent (`tenantry-agent/1.2.3`), or null. Pure. */
export function agentVersionOf(userAgent: string | undefined): string | null {
  const m = /(?:^|\s)tenantry-agent\/([0-9A-Za-z.+-]{1,64})(?:\s|$)/.exec(userAgent ?? '');
  return m?.[1] ?? null;
}
