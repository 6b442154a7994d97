import { type Kysely, sql } from 'kysely';

/**
 * Witness cosignatures of audit checkpoints (issue 17; c2sp.org/tlog-witness, tlog-cosignature).
 * One row per (log, tree size, witness): the cosignature line the witness returned for the log's
 * checkpoint of that size and root. The checkpoint note itself is not stored: Ed25519 signatures are
 * deterministic, so the log re-signs the same (origin, size, root) to the same note and appends these
 * lines. The largest size per witness is the `old` size of the next submission to it.
 *
 * Append-only like the other audit tables; platform only (a tenant reads its own log's cosigned
 * checkpoint through the API, which reads as the platform after authorising).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table audit_cosignatures (
  chain text not null,
  size bigint not null check (size >= 0),
  root_hash text not null check (octet_length(root_hash) = 64),
  witness text not null,
  cosignature text not null,
  created_at timestamptz not null default now(),
  primary key (chain, witness, size)
);
alter table audit_cosignatures enable row level security;
create policy platform_only on audit_cosignatures using (tenantry_is_platform()) with check (tenantry_is_platform());
revoke all on audit_cosignatures from tenantry_app;
grant select, insert on audit_cosignatures to tenantry_platform;
create trigger audit_cosignatures_append_only before update or delete on audit_cosignatures
  for each row execute function tenantry_audit_append_only();
create trigger audit_cosignatures_no_truncate before truncate on audit_cosignatures
  for each statement execute function tenantry_audit_append_only();
`.execute(db);
}
