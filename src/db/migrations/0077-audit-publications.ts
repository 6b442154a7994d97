import { type Kysely, sql } from 'kysely';

/**
 * Audit checkpoint publication marks in a table of their own (issue 24). They were columns of
 * audit_trees, the row the sequencer rewrites with every batch that moves its log: a publisher
 * that held the row (its event and its mark commit together, numbered at commit) made the
 * sequencer's batch wait for the publication's commit, and publishing on a cadence of its own
 * (CheckpointPublisher, every log moved since the last tick in one transaction) held many rows at
 * once. Now the sequencer writes audit_trees and the publisher audit_publications: neither waits
 * for the other. Publishers exclude each other per log by a transaction advisory lock
 * (src/audit/checkpoint-events.ts).
 *
 * - audit_publications (chain, published_size, published_at): per log, the tree size and time of its
 *   latest checkpoint event. Platform only, as audit_trees.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table audit_publications (
  chain text primary key,
  published_size bigint not null check (published_size >= 0),
  published_at timestamptz not null
);
alter table audit_publications enable row level security;
create policy platform_only on audit_publications
  using ((select tenantry_is_platform())) with check ((select tenantry_is_platform()));
revoke all on audit_publications from tenantry_app;
grant select, insert, update on audit_publications to tenantry_platform;

insert into audit_publications (chain, published_size, published_at)
  select chain, published_size, coalesce(published_at, now()) from audit_trees where published_size > 0;
alter table audit_trees drop column published_size, drop column published_at;
`.execute(db);
}
