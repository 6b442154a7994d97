import { type Kysely, sql } from 'kysely';

/**
 * Room in every page of the registry's tables for the next version of each of its rows, and in the
 * reconcile queue's for a claim's (issue 24), so that the controller's status writes are HOT updates:
 * the new version written beside the old one on its page, with no new entry in any of the table's
 * indexes.
 *
 * A status write (phase, observed generation, conditions) changes no indexed column, but rows were
 * inserted into full pages (fillfactor 100): the new version went to another page and every index of
 * the table got an entry for it. Measured by the reconcile bench (BENCH_PG_STATEMENTS=1) on a fresh
 * batch of 2,500 objects: 9 of 10 status updates were not HOT, at any size. In a registry of 1k
 * tenants the few index pages those entries land on stay in memory and go to the WAL once after a
 * checkpoint; in one of 100k tenants (1M objects) the entries keyed by random UUIDs (primary keys,
 * `*_id`, the tenants' customer and region indexes) land on a different leaf each: one full-page
 * image in the WAL, and often a read, per UUID index per row (tenants 2.3 per row, deployments and
 * resources 1.0, against 0.15-0.25 at 1k), the main part of a PostgreSQL CPU per object that grew by a
 * quarter from 1k to 100k tenants. With this, all of them are HOT at both sizes, and those
 * statements touch a third of the buffers.
 *
 * 50 because a settled batch writes all the objects of its tenants in one statement, and a tenant's
 * objects, applied together, share their pages: every row of a page gets a new version before the
 * old ones can be pruned (80 left room for a third of them). A later status write of the row finds
 * the room again (the version left behind is pruned when the page needs it). The tables' heaps take
 * up to twice the pages; their indexes do not change. The queue's claim and lease renewal change no
 * indexed column either (its completion moves the indexed `run_after`: never HOT); its rows are
 * small and are written in many transactions, so 80 leaves enough room. Only rows written from now
 * on take the room: no table is rewritten.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter table tenants set (fillfactor = 50);
alter table deployments set (fillfactor = 50);
alter table integration_resources set (fillfactor = 50);
alter table reconcile_jobs set (fillfactor = 80);
`.execute(db);
}
