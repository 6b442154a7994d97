import { type Kysely, sql } from 'kysely';

/**
 * One-statement audit appends (issue 17): `select tenantry_audit_append(…)` writes one audit record
 * as the platform in the statement's own (implicit) transaction, one round trip where BEGIN + scope /
 * INSERT / COMMIT took three. It is how a record that has a transaction of its own is written (a
 * refused or failed attempt, a disclosure: src/audit/append-audit.ts `appendAuditAlone`); a change
 * writes its record inside its own statement as before.
 *
 * Nothing is weaker than the transaction it replaces:
 * - security invoker: the INSERT runs as the caller's role, under row-level security, and fires the
 *   same enqueue trigger (migration 0051) in the same statement, so the record and its queue entry
 *   commit together or not at all, and the call returns only once both are committed;
 * - the platform scope is the function's own SET clause, in force for the insert only and restored
 *   when it returns (also inside a caller's transaction: a tenant-scoped one stays tenant-scoped).
 *   The setting shows every row on the platform role's connection and nothing on the tenant role's
 *   (`tenantry_is_platform`, 0013), and only the platform role may execute the function;
 * - `chain` is derived here from the tenant as the check constraint `audit_records_chain_tenant`
 *   requires, `time` is the column's default (the database clock at the insert).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
create function tenantry_audit_append(
  p_id uuid, p_tenant_id uuid, p_app_id text, p_actor_principal text, p_actor_kind text, p_session_id text,
  p_action text, p_target_kind text, p_target_id uuid, p_target_slug text, p_before jsonb, p_after jsonb,
  p_outcome text, p_decision jsonb, p_request_id text, p_correlation_id text
) returns void
language plpgsql volatile security invoker
set tenantry.platform = 'on' set tenantry.tenant_id = '' as $$
begin
  insert into audit_records (id, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind,
    target_id, target_slug, before, after, outcome, decision, request_id, correlation_id, chain)
  values (p_id, p_tenant_id, p_app_id, p_actor_principal, p_actor_kind, p_session_id, p_action, p_target_kind,
    p_target_id, p_target_slug, p_before, p_after, p_outcome, p_decision, p_request_id, p_correlation_id,
    coalesce(p_tenant_id::text, 'platform'));
end $$;
revoke all on function tenantry_audit_append(uuid, uuid, text, text, text, text, text, text, uuid, text, jsonb,
  jsonb, text, jsonb, text, text) from public;
grant execute on function tenantry_audit_append(uuid, uuid, text, text, text, text, text, text, uuid, text, jsonb,
  jsonb, text, jsonb, text, text) to tenantry_platform;
`.execute(db);
}
