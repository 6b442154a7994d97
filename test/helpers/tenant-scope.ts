import type pg from 'pg';
import { tenantScopeProof } from '../../src/db/database.js';

/** The scope key (migration 0020), read behind the application's back as the owner. */
export async function scopeKey(owner: pg.Pool): Promise<Buffer> {
  return (await owner.query<{ key: Buffer }>('select key from tenantry_scope_key')).rows[0]!.key;
}

/**
 * Enters a tenant's scope on a raw connection of the tenant role, as the application does for a
 * verified caller (src/db/database.ts): with a proof made with the scope key.
 */
export async function enterTenant(client: pg.ClientBase, key: Buffer, tenantId: string): Promise<void> {
  const expires = Math.floor(Date.now() / 1000) + 60;
  await client.query('select tenantry_enter_tenant($1::uuid, $2::bigint, $3)', [
    tenantId,
    expires,
    tenantScopeProof(key, tenantId, expires),
  ]);
}
