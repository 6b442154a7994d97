import { type Kysely, sql } from 'kysely';

/**
 * Cheaper per-row work on the audit log's hot paths (issue 17), same rules:
 * - The audit records' row-level policy is evaluated once per statement instead of once per row
 *   (`audit verify` reads every record as the platform; appends check it per row).
 *   `tenantry_is_platform()` is stable (a setting and a role membership that no statement changes
 *   while it runs), so as an initplan it gives every row the same answer as before; migration 0020
 *   did the same for `tenantry_current_tenant()`.
 * - The append-only trigger checks a sequencing update (migration 0023) by comparing the row with
 *   its position and hashes blanked to the old row, instead of converting both rows to jsonb four
 *   times: every column but seq, prev_hash and hash must be unchanged, as before (jsonb columns by
 *   jsonb equality, as the jsonb comparison did). It halves the sequencer's update of a batch.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
alter policy tenant_isolation on audit_records
  using ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()))
  with check ((select tenantry_is_platform()) or tenant_id = (select tenantry_current_tenant()));

create or replace function tenantry_audit_append_only() returns trigger language plpgsql as $$
declare
  unsealed audit_records;
begin
  if tg_op = 'DELETE' and tg_table_name = 'audit_records'
     and coalesce(current_setting('tenantry.audit_retention', true), '') = 'on' then
    return old;
  end if;
  -- Sequencing: an unsequenced record gets its position and hash, once; nothing else changes.
  -- (Nested: the fields of audit_records cannot be named for the other audit tables.)
  if tg_op = 'UPDATE' and tg_table_name = 'audit_records'
     and coalesce(current_setting('tenantry.audit_sequencing', true), '') = 'on' then
    unsealed := new;
    unsealed.seq := null;
    unsealed.prev_hash := null;
    unsealed.hash := null;
    if old.seq is null and new.seq is not null and unsealed is not distinct from old then
      return new;
    end if;
  end if;
  raise exception 'audit table % is append-only: % refused', tg_table_name, tg_op
    using errcode = 'insufficient_privilege',
          hint = 'Audit records are deleted only by retention, whole segments at a time.';
end $$;
`.execute(db);
}
