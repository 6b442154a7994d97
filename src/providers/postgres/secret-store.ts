import { sql } from 'kysely';
import pg from 'pg';
import { guardPool } from '../../db/connection-errors.js';
import { asPlatform, type Db } from '../../db/database.js';
import type { KeyProvider } from '../../secrets/key-provider.js';
import type { SecretBinding, SecretCipher } from '../../secrets/secret-cipher.js';

/** Where generated credentials of provisioned resources are kept (never in status, events, logs). */
export interface ResourceSecrets {
  get(resourceId: string): Promise<Record<string, string> | undefined>;
  getOrCreate(
    input: { tenantId: string; resourceId: string; name: string },
    create: () => Record<string, string>,
  ): Promise<Record<string, string>>;
  delete(resourceId: string): Promise<void>;
}

/**
 * Generated credentials of provisioned resources, kept in `resource_secrets` (readable only in the
 * platform scope; see migration 0005), sealed with the tenant's data key (src/secrets, migration
 * 0019) and bound to the resource. Status, events, audit records and logs only ever carry the
 * reference `resource-secrets/<resource uuid>`, never the value.
 */
export class SecretStore implements ResourceSecrets {
  constructor(
    private readonly db: Db,
    private readonly cipher: SecretCipher,
  ) {}

  static ref(resourceId: string): string {
    return `resource-secrets/${resourceId}`;
  }

  /**
   * Bound to the tenant and the credential's role name (unique on the data-plane server), not the
   * resource id: a tenant migration swaps credentials between resource ids (src/tenant-migrations).
   */
  static binding(tenantId: string, name: string): SecretBinding {
    return { tenantId, row: `resource_secrets/${name}` };
  }

  async get(resourceId: string): Promise<Record<string, string> | undefined> {
    const r = await asPlatform(this.db, (trx) =>
      sql<{ tenant_id: string; name: string; sealed: string }>`
        select tenant_id, name, sealed from resource_secrets where resource_id = ${resourceId}`.execute(trx),
    );
    const row = r.rows[0];
    return row ? this.open(row.tenant_id, row.name, row.sealed) : undefined;
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
      SecretStore.binding(input.tenantId, input.name),
    );
    const stored = await asPlatform(this.db, async (trx) => {
      await sql`
        insert into resource_secrets (tenant_id, resource_id, name, sealed)
        values (${input.tenantId}, ${input.resourceId}, ${input.name}, ${sealed})
        on conflict do nothing`.execute(trx);
      const r = await sql<{ tenant_id: string; name: string; sealed: string }>`
        select tenant_id, name, sealed from resource_secrets where resource_id = ${input.resourceId}`.execute(
        trx,
      );
      return r.rows[0]!;
    });
    return this.open(stored.tenant_id, stored.name, stored.sealed);
  }

  private async open(tenantId: string, name: string, sealed: string): Promise<Record<string, string>> {
    return JSON.parse(await this.cipher.open(sealed, SecretStore.binding(tenantId, name)));
  }

  async delete(resourceId: string): Promise<void> {
    await asPlatform(this.db, (trx) =>
      sql`delete from resource_secrets where resource_id = ${resourceId}`.execute(trx),
    );
  }

  /** The references of a tenant's stored credentials (a purge's record). */
  async refsOfTenant(tenantId: string): Promise<string[]> {
    const r = await asPlatform(this.db, (trx) =>
      sql<{ resource_id: string }>`
        select resource_id from resource_secrets where tenant_id = ${tenantId} order by resource_id`.execute(
        trx,
      ),
    );
    return r.rows.map((x) => SecretStore.ref(x.resource_id));
  }

  async deleteTenant(tenantId: string): Promise<number> {
    const r = await asPlatform(this.db, (trx) =>
      sql`delete from resource_secrets where tenant_id = ${tenantId}`.execute(trx),
    );
    return Number(r.numAffectedRows ?? 0);
  }
}

/** A value at rest in `tenantry_resource_secrets`: sealed by the agent's key file. */
type StoredValue = { sealed: string; keyId: string } | Record<string, string>;

/**
 * The secrets of a cell agent's resources, kept in the data-plane PostgreSQL itself (table
 * `tenantry_resource_secrets`, created on first use): with an agent they never reach the control
 * plane. Same contract as SecretStore (`on conflict do nothing`, then read).
 *
 * At rest each value is sealed (AES-256-GCM) by the agent's own key file (the KeyProvider of
 * src/secrets, TENANTRY_SECRETS_KEY_FILE in the agent's folder), bound to the tenant and the
 * credential's role name, so a value copied to another row does not open. Rows written before
 * sealing (plain JSON) are still read. Without a key provider values are stored as they are.
 */
export class DataplaneSecretStore implements ResourceSecrets {
  private readonly pool: pg.Pool;
  private ready: Promise<unknown> | undefined;

  constructor(
    url: string,
    private readonly keys?: KeyProvider,
  ) {
    this.pool = guardPool(new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5_000 }));
  }

  private static context(tenantId: string, name: string): string {
    return `tenantry-dataplane-secret|${tenantId}|${name}`;
  }

  private async seal(tenantId: string, name: string, value: Record<string, string>): Promise<StoredValue> {
    if (!this.keys) return value;
    const w = await this.keys.wrap(
      Buffer.from(JSON.stringify(value)),
      DataplaneSecretStore.context(tenantId, name),
    );
    return { keyId: w.keyId, sealed: w.wrapped.toString('base64') };
  }

  private async open(row: {
    tenant_id: string;
    name: string;
    value: StoredValue;
  }): Promise<Record<string, string>> {
    const v = row.value;
    if (typeof v.sealed !== 'string' || typeof v.keyId !== 'string') return v as Record<string, string>;
    if (!this.keys) throw new Error("a sealed data-plane secret needs the agent's key file");
    const plain = await this.keys.unwrap(
      v.keyId,
      Buffer.from(v.sealed, 'base64'),
      DataplaneSecretStore.context(row.tenant_id, row.name),
    );
    return JSON.parse(plain.toString('utf8'));
  }

  private async query<R extends pg.QueryResultRow>(
    text: string,
    values: unknown[],
  ): Promise<pg.QueryResult<R>> {
    this.ready ??= this.pool
      .query(
        `create table if not exists tenantry_resource_secrets (
          resource_id uuid primary key, tenant_id uuid not null, name text not null, value jsonb not null,
          created_at timestamptz not null default now())`,
      )
      .catch((err) => {
        this.ready = undefined;
        throw err;
      });
    await this.ready;
    return this.pool.query<R>(text, values);
  }

  async get(resourceId: string): Promise<Record<string, string> | undefined> {
    const r = await this.query<{ tenant_id: string; name: string; value: StoredValue }>(
      'select tenant_id, name, value from tenantry_resource_secrets where resource_id = $1',
      [resourceId],
    );
    return r.rows[0] ? this.open(r.rows[0]) : undefined;
  }

  async getOrCreate(
    input: { tenantId: string; resourceId: string; name: string },
    create: () => Record<string, string>,
  ): Promise<Record<string, string>> {
    await this.query(
      `insert into tenantry_resource_secrets (resource_id, tenant_id, name, value) values ($1, $2, $3, $4)
       on conflict do nothing`,
      [
        input.resourceId,
        input.tenantId,
        input.name,
        JSON.stringify(await this.seal(input.tenantId, input.name, create())),
      ],
    );
    return (await this.get(input.resourceId))!;
  }

  async delete(resourceId: string): Promise<void> {
    await this.query('delete from tenantry_resource_secrets where resource_id = $1', [resourceId]);
  }

  async refsOfTenant(tenantId: string): Promise<string[]> {
    const r = await this.query<{ resource_id: string }>(
      'select resource_id from tenantry_resource_secrets where tenant_id = $1 order by resource_id',
      [tenantId],
    );
    return r.rows.map((x) => SecretStore.ref(x.resource_id));
  }

  async deleteTenant(tenantId: string): Promise<number> {
    return (
      (await this.query('delete from tenantry_resource_secrets where tenant_id = $1', [tenantId])).rowCount ??
      0
    );
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
