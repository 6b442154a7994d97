import { type Kysely, sql } from 'kysely';

/**
 * Region migrations (issue 19): `tenant_migrations` also records a tenant's move to another
 * region's cell (database copied by logical replication between the two regions' data-plane
 * servers, blobs copied and checksummed, topics recreated with their ACLs).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter table tenant_migrations drop constraint tenant_migrations_kind_check;
alter table tenant_migrations add constraint tenant_migrations_kind_check check (kind in ('isolation', 'region'));
`.execute(db);
}
