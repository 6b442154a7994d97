import { type Kysely, sql } from 'kysely';

/**
 * Cell agents (issue 22): the version an agent says it runs (`tenantry-agent/<version>` in the
 * User-Agent of its heartbeats), shown on its detail (`GET /v1/cells/{ref}/agent`, the console).
 * Null until its first heartbeat, and for agents that do not say.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table cell_agents add column version text check (length(version) <= 64)`.execute(db);
}
