import { type Kysely, sql } from 'kysely';

/**
 * W3C trace context carried from a change into the work it causes: the reconcile job and the event
 * (so webhook attempts and reconciles continue the trace of the request that caused them).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter table outbox_events add column traceparent text;
alter table reconcile_jobs add column traceparent text;
`.execute(db);
}
