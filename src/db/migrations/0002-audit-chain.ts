import { createHash } from 'node:crypto';
import { type Kysely, sql } from 'kysely';

/**
 * The tamper-evident audit log (issue 6).
 *
 * - audit_records gains its chain position: `chain` (the tenant id, or 'platform'), a gap-free
 *   `seq` per chain, `prev_hash` and `hash` (sha256 over the canonical JSON of the record, format v1
 *   in src/audit/audit-hash.ts).
 * - audit_chain_heads holds the last (seq, hash) of each chain. Appending takes that row's lock, so
 *   appends to one chain serialise while different tenants' chains do not wait on each other.
 * - audit_checkpoints: signed (Ed25519) snapshots of every chain head, so that truncating a chain
 *   is detected.
 * - audit_retention: the segments that retention deleted, each ending at a signed checkpoint head.
 * - Append-only: the application role may not UPDATE or DELETE audit tables, and a trigger refuses
 *   UPDATE/DELETE/TRUNCATE for everyone (the owner included), except DELETE of audit records inside
 *   tenantry_audit_apply_retention(), which sets `tenantry.audit_retention` for its transaction only.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create function tenantry_audit_time(t timestamptz) returns text language sql immutable parallel safe
  as $$ select to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

alter table audit_records
  add column chain text,
  add column seq bigint,
  add column prev_hash text,
  add column hash text;

create table audit_chain_heads (
  chain text primary key,
  seq bigint not null check (seq >= 1),
  hash text not null,
  updated_at timestamptz not null default now()
);

create table audit_checkpoints (
  id uuid primary key,
  time timestamptz not null,
  heads jsonb not null,
  signature text not null,
  key_id text not null
);
create index audit_checkpoints_time on audit_checkpoints (time);

create table audit_retention (
  id uuid primary key,
  time timestamptz not null default now(),
  chain text not null,
  through_seq bigint not null,
  through_hash text not null,
  checkpoint_id uuid not null references audit_checkpoints (id),
  deleted bigint not null,
  unique (chain, through_seq)
);
`.execute(db);

  await backfill(db);

  await sql`
alter table audit_records
  alter column chain set not null,
  alter column seq set not null,
  alter column prev_hash set not null,
  alter column hash set not null,
  add constraint audit_records_chain_seq unique (chain, seq),
  add constraint audit_records_seq_positive check (seq >= 1),
  add constraint audit_records_chain_tenant check (chain = coalesce(tenant_id::text, 'platform')),
  -- The format is checked by verification; a regular expression here would cost more than the insert.
  add constraint audit_records_hash_length check (octet_length(hash) = 64 and octet_length(prev_hash) = 64);

-- Search: by actor, action, correlation id and time across tenants (tenant and target exist).
create index audit_records_time on audit_records (time, id);
create index audit_records_actor_time on audit_records (actor_principal, time);
create index audit_records_action_time on audit_records (action, time);
create index audit_records_correlation on audit_records (correlation_id);

create function tenantry_audit_append_only() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' and tg_table_name = 'audit_records'
     and coalesce(current_setting('tenantry.audit_retention', true), '') = 'on' then
    return old;
  end if;
  raise exception 'audit table % is append-only: % refused', tg_table_name, tg_op
    using errcode = 'insufficient_privilege',
          hint = 'Audit records are deleted only by retention, whole segments at a time.';
end $$;

create trigger audit_records_append_only before update or delete on audit_records
  for each row execute function tenantry_audit_append_only();
create trigger audit_records_no_truncate before truncate on audit_records
  for each statement execute function tenantry_audit_append_only();
create trigger audit_checkpoints_append_only before update or delete on audit_checkpoints
  for each row execute function tenantry_audit_append_only();
create trigger audit_checkpoints_no_truncate before truncate on audit_checkpoints
  for each statement execute function tenantry_audit_append_only();
create trigger audit_retention_append_only before update or delete on audit_retention
  for each row execute function tenantry_audit_append_only();
create trigger audit_retention_no_truncate before truncate on audit_retention
  for each statement execute function tenantry_audit_append_only();

-- Retention: deletes, per chain, the whole segment up to the head that checkpoint p_checkpoint
-- signed, provided that checkpoint is older than p_older_than (itself not in the future), and
-- records each deletion in audit_retention. The only way audit records are ever deleted.
-- Security definer: the application role holds no DELETE on audit_records.
create function tenantry_audit_apply_retention(p_checkpoint uuid, p_older_than timestamptz)
returns table (chain text, through_seq bigint, through_hash text, deleted bigint)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  cp audit_checkpoints;
  h record;
  n bigint;
begin
  if p_older_than > now() then
    raise exception 'retention cut-off % is in the future', p_older_than using errcode = 'invalid_parameter_value';
  end if;
  select * into cp from audit_checkpoints c where c.id = p_checkpoint;
  if not found then
    raise exception 'audit checkpoint % does not exist', p_checkpoint using errcode = 'no_data_found';
  end if;
  if cp.time >= p_older_than then
    raise exception 'audit checkpoint % is not older than %', p_checkpoint, p_older_than
      using errcode = 'invalid_parameter_value';
  end if;
  for h in
    select e.key as chain, (e.value->>'seq')::bigint as seq, e.value->>'hash' as hash
    from jsonb_each(cp.heads) e order by e.key
  loop
    continue when exists (select from audit_retention r where r.chain = h.chain and r.through_seq >= h.seq);
    if not exists (select from audit_records a where a.chain = h.chain and a.seq = h.seq and a.hash = h.hash) then
      raise exception 'audit chain % does not match checkpoint % at seq %; run audit verify', h.chain, cp.id, h.seq
        using errcode = 'data_corrupted';
    end if;
    perform set_config('tenantry.audit_retention', 'on', true);
    delete from audit_records a where a.chain = h.chain and a.seq <= h.seq;
    get diagnostics n = row_count;
    perform set_config('tenantry.audit_retention', '', true);
    insert into audit_retention (id, chain, through_seq, through_hash, checkpoint_id, deleted)
      values (gen_random_uuid(), h.chain, h.seq, h.hash, cp.id, n);
    chain := h.chain; through_seq := h.seq; through_hash := h.hash; deleted := n;
    return next;
  end loop;
end $$;
revoke all on function tenantry_audit_apply_retention(uuid, timestamptz) from public;
grant execute on function tenantry_audit_apply_retention(uuid, timestamptz) to tenantry_app;

-- Reading whole chains in (chain, seq) order, for verification and export by the platform.
-- Under row-level security the planner misjudges the policy's selectivity and sorts the whole table
-- for every batch; this reads by the (chain, seq) index instead. Platform scope only.
create function tenantry_audit_scan(p_chain text, p_after_chain text, p_after_seq bigint, p_limit integer)
returns table (id uuid, chain text, seq bigint, "time" text, tenant_id uuid, app_id text, actor_principal text,
  actor_kind text, session_id text, action text, target_kind text, target_id uuid, target_slug text, before jsonb,
  after jsonb, outcome text, decision jsonb, request_id text, correlation_id text, prev_hash text, hash text)
language plpgsql stable security definer set search_path = public, pg_temp as $$
#variable_conflict use_column
begin
  if not tenantry_is_platform() then
    raise exception 'reading whole audit chains needs the platform scope' using errcode = 'insufficient_privilege';
  end if;
  if p_chain is not null then
    return query select a.id, a.chain, a.seq, tenantry_audit_time(a.time), a.tenant_id, a.app_id, a.actor_principal,
        a.actor_kind, a.session_id, a.action, a.target_kind, a.target_id, a.target_slug, a.before, a.after,
        a.outcome, a.decision, a.request_id, a.correlation_id, a.prev_hash, a.hash
      from audit_records a where a.chain = p_chain and a.seq > p_after_seq order by a.seq limit p_limit;
  else
    return query select a.id, a.chain, a.seq, tenantry_audit_time(a.time), a.tenant_id, a.app_id, a.actor_principal,
        a.actor_kind, a.session_id, a.action, a.target_kind, a.target_id, a.target_slug, a.before, a.after,
        a.outcome, a.decision, a.request_id, a.correlation_id, a.prev_hash, a.hash
      from audit_records a where (a.chain, a.seq) > (p_after_chain, p_after_seq) order by a.chain, a.seq
      limit p_limit;
  end if;
end $$;
revoke all on function tenantry_audit_scan(text, text, bigint, integer) from public;
grant execute on function tenantry_audit_scan(text, text, bigint, integer) to tenantry_app;

-- Row-level security: a tenant sees its own chain head; checkpoints and retention are the platform's.
alter table audit_chain_heads enable row level security;
create policy tenant_isolation on audit_chain_heads
  using (tenantry_is_platform() or chain = tenantry_current_tenant()::text)
  with check (tenantry_is_platform() or chain = tenantry_current_tenant()::text);
alter table audit_checkpoints enable row level security;
create policy platform_only on audit_checkpoints
  using (tenantry_is_platform()) with check (tenantry_is_platform());
alter table audit_retention enable row level security;
create policy platform_only on audit_retention
  using (tenantry_is_platform()) with check (tenantry_is_platform());

grant select, insert, update on audit_chain_heads to tenantry_app;
revoke delete, truncate on audit_chain_heads from tenantry_app;
grant select, insert on audit_records, audit_checkpoints, audit_retention to tenantry_app;
revoke update, delete, truncate on audit_records, audit_checkpoints, audit_retention from tenantry_app;
`.execute(db);
}

interface LegacyRow {
  id: string;
  time: string;
  tenant_id: string | null;
  app_id: string | null;
  actor_principal: string;
  actor_kind: string;
  session_id: string | null;
  action: string;
  target_kind: string;
  target_id: string | null;
  target_slug: string | null;
  before: unknown;
  after: unknown;
  outcome: 'success' | 'failure' | 'denied';
  decision: unknown;
  request_id: string;
  correlation_id: string;
}

// Audit record hash format v1, frozen here as it was when this migration was written: a migration
// never changes, so it does not import the live hashing code (src/audit/audit-hash.ts, which keeps
// v1 equal to this; src/audit/audit-migration.test.ts verifies migrated chains with it).
const PLATFORM_CHAIN = 'platform';
const GENESIS_HASH = '0'.repeat(64);

/** Canonical JSON v1: object keys sorted, undefined members dropped, no whitespace. */
function canonicalJsonV1(value: unknown): string {
  if (typeof value !== 'object' || value === null) return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonicalJsonV1).join(',')}]`;
  const object = value as Record<string, unknown>;
  const members = Object.keys(object)
    .sort()
    .filter((k) => object[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJsonV1(object[k])}`);
  return `{${members.join(',')}}`;
}

/** sha256 (hex) of the canonical JSON of the v1 document. */
const hashV1 = (doc: object): string => createHash('sha256').update(canonicalJsonV1(doc)).digest('hex');

/** Records written before the chain existed are chained in (time, id) order, per tenant. */
async function backfill(db: Kysely<unknown>): Promise<void> {
  const { rows } = await sql<LegacyRow>`
    select id, tenantry_audit_time(time) as time, tenant_id, app_id, actor_principal, actor_kind, session_id,
           action, target_kind, target_id, target_slug, before, after, outcome, decision, request_id, correlation_id
    from audit_records order by time, id`.execute(db);
  const heads = new Map<string, { seq: number; hash: string }>();
  for (const r of rows) {
    const chain = r.tenant_id ?? PLATFORM_CHAIN;
    const head = heads.get(chain) ?? { seq: 0, hash: GENESIS_HASH };
    const doc = {
      v: 1 as const,
      id: r.id,
      chain,
      seq: head.seq + 1,
      time: r.time,
      tenantId: r.tenant_id,
      appId: r.app_id,
      actor: { principal: r.actor_principal, kind: r.actor_kind },
      sessionId: r.session_id,
      action: r.action,
      target: { kind: r.target_kind, id: r.target_id, slug: r.target_slug },
      before: r.before,
      after: r.after,
      outcome: r.outcome,
      decision: r.decision,
      requestId: r.request_id,
      correlationId: r.correlation_id,
      prevHash: head.hash,
    };
    const hash = hashV1(doc);
    await sql`update audit_records set chain = ${chain}, seq = ${doc.seq}, prev_hash = ${head.hash}, hash = ${hash}
              where id = ${r.id}`.execute(db);
    heads.set(chain, { seq: doc.seq, hash });
  }
  for (const [chain, head] of heads) {
    await sql`insert into audit_chain_heads (chain, seq, hash) values (${chain}, ${head.seq}, ${head.hash})`.execute(
      db,
    );
  }
}
