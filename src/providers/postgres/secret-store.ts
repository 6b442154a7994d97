import { sql } from 'kysely';
import { asPlatform, type Db } from '../../db/database.js';
import type { SecretBinding, SecretCipher } from '../../secrets/secret-cipher.js';

/**
 * Generated credentials of provisioned resources, kept in `resource_secrets` (readable only in the
 * platform scope; see migration 0005), sealed with the tenant's data key (src/secrets, migration
 * 0019) and bound to the resource. Status, events, audit records and logs only ever carry the
 * reference `resource-secrets/<resource uuid>`, never the value.
 */
export class SecretStore {
  constructor(
    private readonly db: Db,
    private readonly cipher: SecretCipher,
  ) {}

  static ref(resourceId: string): string {
    return `resource-secrets/${resourceId}`;
  }

  static binding(tenantId: string, resourceId: string): SecretBinding {
    return { tenantId, row: `resource_secrets/${resourceId}` };
  }

  async get(resourceId: string): Promise<Record<string, string> | undefined> {
    const r = await asPlatform(this.db, (trx) =>
      sql<{ tenant_id: string; sealed: string }>`
        select tenant_id, sealed from resource_secrets where resource_id = ${resourceId}`.execute(trx),
    );
    const row = r.rows[0];
    return row ? this.open(row.tenant_id, resourceId, row.sealed) : undefined;
  }

  /**
   * Stores the value unless one exists; returns the stored one. Concurrency contract:
   * `on conflict do nothing` then read, so two racing workers end up with the same secret.
   */
  async getOrCreate(
    input: { tenantId: string; resourceId: string; name: string },
    create: () => Record<string, string>,
  ): Promise<Record<string, string>> {
    const sealed = await this.cipher.seal(
      JSON.stringify(create()),
      SecretStore.binding(input.tenantId, input.resourceId),
    );
    const stored = await asPlatform(this.db, async (trx) => {
      await sql`
        insert into resource_secrets (tenant_id, resource_id, name, sealed)
        values (${input.tenantId}, ${input.resourceId}, ${input.name}, ${sealed})
        on conflict do nothing`.execute(trx);
      const r = await sql<{ tenant_id: string; sealed: string }>`
        select tenant_id, sealed from resource_secrets where resource_id = ${input.resourceId}`.execute(trx);
      return r.rows[0]!;
    });
    return this.open(stored.tenant_id, input.resourceId, stored.sealed);
  }

  private async open(tenantId: string, resourceId: string, sealed: string): Promise<Record<string, string>> {
    return JSON.parse(await this.cipher.open(sealed, SecretStore.binding(tenantId, resourceId)));
  }

  async delete(resourceId: string): Promise<void> {
    await asPlatform(this.db, (trx) =>
      sql`delete from resource_secrets where resource_id = ${resourceId}`.execute(trx),
    );
  }
}
