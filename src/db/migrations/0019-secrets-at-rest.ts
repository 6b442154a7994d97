import { type Kysely, type Migration, sql } from 'kysely';
import type { KeyProvider } from '../../secrets/key-provider.js';
import { SecretCipher } from '../../secrets/secret-cipher.js';

/**
 * Secrets at rest (issue 16): envelope encryption (src/secrets). `data_keys` holds one data key
 * per tenant (and one for platform-wide secrets), wrapped by a key-encryption key that never
 * enters the database; only the platform role can read it. The stored secrets become ciphertexts
 * bound to their tenant and row:
 * - `resource_secrets.value` (generated database credentials, jsonb in clear) becomes `sealed`;
 * - `webhook_endpoints.secrets` entries `{secret, …}` become `{sealed, …}`.
 * Rows written in clear before are sealed here, with the KEK of the starting process
 * (TENANTRY_SECRETS_KEY_FILE or the data folder's); a database that has such rows cannot be
 * migrated without it. Breaking for readers of those two columns (only src/ reads them).
 */
export function secretsAtRest(keys: KeyProvider | undefined): Migration {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await sql`
create table data_keys (
  id uuid primary key,
  tenant_id uuid,
  key_id text not null,
  wrapped bytea not null,
  created_at timestamptz not null default now(),
  rewrapped_at timestamptz,
  retired_at timestamptz
);
create unique index data_keys_live on data_keys ((coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)))
  where retired_at is null;
alter table data_keys enable row level security;
create policy platform_only on data_keys using (tenantry_is_platform()) with check (tenantry_is_platform());
revoke all on data_keys from tenantry_app;
grant select, insert, update on data_keys to tenantry_platform;

alter table resource_secrets add column sealed text;
`.execute(db);

      const plainResources = await sql<{
        tenant_id: string;
        resource_id: string;
        name: string;
        value: unknown;
      }>`
        select tenant_id, resource_id, name, value from resource_secrets`.execute(db);
      const plainEndpoints = await sql<{
        id: string;
        tenant_id: string | null;
        slug: string;
        secrets: { secret?: string; sealed?: string; fingerprint: string; notAfter: string | null }[];
      }>`
        select id, tenant_id, slug, secrets from webhook_endpoints
        where jsonb_path_exists(secrets, '$[*].secret')`.execute(db);
      if (plainResources.rows.length + plainEndpoints.rows.length > 0) {
        if (!keys)
          throw new Error(
            'migration 0019 seals the secrets stored in clear and needs the key-encryption key: start Tenantry (it passes TENANTRY_SECRETS_KEY_FILE or the data folder key)',
          );
        const cipher = new SecretCipher(keys, (work) => work(db));
        for (const r of plainResources.rows) {
          const sealed = await cipher.seal(JSON.stringify(r.value), {
            tenantId: r.tenant_id,
            row: `resource_secrets/${r.name}`,
          });
          await sql`update resource_secrets set sealed = ${sealed}
            where tenant_id = ${r.tenant_id} and resource_id = ${r.resource_id}`.execute(db);
        }
        for (const e of plainEndpoints.rows) {
          const secrets = await Promise.all(
            e.secrets.map(async ({ secret, ...s }) =>
              secret === undefined
                ? s
                : {
                    ...s,
                    sealed: await cipher.seal(secret, {
                      tenantId: e.tenant_id,
                      row: `webhook_endpoints/${e.slug}/${s.fingerprint}`,
                    }),
                  },
            ),
          );
          await sql`update webhook_endpoints set secrets = ${JSON.stringify(secrets)}::jsonb
            where id = ${e.id}`.execute(db);
        }
      }
      await sql`
alter table resource_secrets drop column value;
alter table resource_secrets alter column sealed set not null;
`.execute(db);
    },
  };
}
