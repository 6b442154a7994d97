import { sql } from 'kysely';
import { asPlatform, type Db } from '../../db/database.js';

/**
 * Generated credentials of provisioned resources, kept in `resource_secrets` (readable only in the
 * platform scope; see migration 0005). Status, events, audit records and logs only ever carry the
 * reference `resource-secrets/<resource uuid>`, never the value.
 */
export class SecretStore {
  constructor(private readonly db: Db) {}

  static ref(resourceId: string): string {
    return `resource-secrets/${resourceId}`;
  }

  async get(resourceId: string): Promise<Record<string, string> | undefined> {
    const r = await asPlatform(this.db, (trx) =>
      sql<{ value: Record<string, string> }>`
        select value from resource_secrets where resource_id = ${resourceId}`.execute(trx),
    );
    return r.rows[0]?.value;
  }

  /**
   * Stores the value unless one exists; returns the stored one. Concurrency contract:
   * `on conflict do nothing` then read, so two racing workers end up with the same secret.
   */
  async getOrCreate(
    input: { tenantId: string; resourceId: string; name: string },
    create: () => Record<string, string>,
  ): Promise<Record<string, string>> {
    return asPlatform(this.db, async (trx) => {
      await sql`
        insert into resource_secrets (tenant_id, resource_id, name, value)
        values (${input.tenantId}, ${input.resourceId}, ${input.name}, ${JSON.stringify(create())})
        on conflict do nothing`.execute(trx);
      const r = await sql<{ value: Record<string, string> }>`
        select value from resource_secrets where resource_id = ${input.resourceId}`.execute(trx);
      return r.rows[0]!.value;
    });
  }

  async delete(resourceId: string): Promise<void> {
    await asPlatform(this.db, (trx) =>
      sql`delete from resource_secrets where resource_id = ${resourceId}`.execute(trx),
    );
  }
}
