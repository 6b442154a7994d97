import { type Kysely, sql } from 'kysely';

/**
 * Console sign-in codes (issue 23): the one-time link `tenantry serve` prints. Kept as their
 * SHA-256 only, so any process of the installation (and the same one after a restart) redeems a
 * link another printed; a code is spent by the statement that checks it is unused and unexpired.
 * Platform objects: only the platform scope reads or writes them.
 *
 * Also the indexes behind the console's and the API's pages of an endpoint's deliveries, newest
 * first (a keyset cursor on created_at, seq, id), so a page stays one index range at any size,
 * and each delivery's attempts are found by its id (the tenant-led index does not serve platform
 * endpoints, whose deliveries have no tenant).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table console_sign_in_codes (
  code_hash text primary key,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz,
  check (expires_at > created_at)
);
create index console_sign_in_codes_expiry on console_sign_in_codes (expires_at);
alter table console_sign_in_codes enable row level security;
create policy platform_only on console_sign_in_codes
  using (tenantry_is_platform()) with check (tenantry_is_platform());
grant select, insert, update, delete on console_sign_in_codes to tenantry_app;
create index webhook_deliveries_endpoint_recent on webhook_deliveries (endpoint_id, created_at desc, seq desc, id desc);
create index webhook_attempts_delivery_only on webhook_attempts (delivery_id, id);
`.execute(db);
}
