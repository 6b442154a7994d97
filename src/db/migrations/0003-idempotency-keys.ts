import { type Kysely, sql } from 'kysely';

/**
 * Idempotency keys for POST requests: the first response is kept and replayed for the same key.
 * Keyed by principal, not tenant: a key is only ever read back by the principal that wrote it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create table idempotency_keys (
  principal text not null,
  key text not null,
  method text not null,
  path text not null,
  request_hash text not null,
  status_code integer,
  response jsonb,
  created_at timestamptz not null default now(),
  primary key (principal, key)
);
create index idempotency_keys_created on idempotency_keys (created_at);
`.execute(db);
}
