import { sql } from 'kysely';
import { appendAuditAlone, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db } from '../db/database.js';
import { ConflictError } from '../errors/errors.js';
import { parseDetails } from '../providers/observed-details.js';
import type { ResourceSecrets } from '../providers/postgres/secret-store.js';
import type { ApiObject } from './representation.js';

/** How a client connects to a provisioned database resource (GET …/credentials). */
export interface DatabaseCredentials {
  resource: string;
  name: string;
  tenantUuid: string;
  isolation: string;
  host: string;
  port: number;
  database: string;
  /** pool: the tenant's schema (the role's search_path); silo and shared have none. */
  schema: string | null;
  username: string;
  password: string;
  /** `postgresql://user:password@host:port/database` */
  url: string;
}

/**
 * The generated credentials of a database resource, as its owner may read them: the connection
 * details the controller last observed (the Ready condition) and the secret of the secret store
 * (src/providers/postgres/secret-store.ts). Every read is audited (the reference, never the value)
 * in the same transaction that decides the answer: a read that cannot be audited fails. Callers
 * get here through the policy decorator (src/authz/authorized-credentials.ts) only.
 */
export class ResourceCredentialsService {
  constructor(
    private readonly db: Db,
    private readonly secrets: ResourceSecrets,
  ) {}

  async reveal(ctx: RequestContext, resource: ApiObject): Promise<DatabaseCredentials> {
    const { uuid, name, tenantUuid } = resource.metadata;
    const spec = resource.spec as { type: string; database?: { isolation: string } };
    if (spec.type !== 'database')
      throw new ConflictError(
        'credentials.not_applicable',
        `${name} is a ${spec.type}: only database resources have credentials.`,
      );
    // Only what was observed of the current generation: a migration's cut-over swaps the secret and
    // the details in one transaction (the new side's, or Pending until the reconcile), and the details
    // of the old side must not go with the new secret. The secret is read between two reads of the
    // status that agree, so both are of one side of any such switch.
    let status = await this.statusOf(uuid);
    let details: Record<string, string> = {};
    let secret: Record<string, string> | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      details = status.current ? parseDetails(status.message) : {};
      secret = details.host ? await this.secrets.get(uuid) : undefined;
      const again = await this.statusOf(uuid);
      if (again.key === status.key) break;
      status = again;
      secret = undefined;
    }
    if (!details.host || !details.database || !secret?.password || !tenantUuid)
      throw new ConflictError(
        'credentials.not_provisioned',
        `${name} is not provisioned yet (phase ${status.phase}): its credentials exist once it is Ready` +
          ' (`tenantry apply --wait`, or `tenantry get resource NAME`); a database of a remote cell agent keeps them in its cell.',
        { details: { phase: status.phase } },
      );
    const username = secret.username ?? details.role ?? '';
    const port = Number(details.port ?? 5432);
    const url = new URL('postgresql://h');
    url.hostname = details.host;
    url.port = String(port);
    url.username = username;
    url.password = secret.password;
    url.pathname = `/${encodeURIComponent(details.database)}`;
    await appendAuditAlone(
      this.db,
      auditEntryOf(ctx, {
        tenantId: tenantUuid,
        action: 'integrationresource.credentials',
        target: { kind: 'IntegrationResource', id: uuid, slug: name },
        before: null,
        after: { secretRef: details.secretRef ?? null, username },
        outcome: 'success',
      }),
    );
    return {
      resource: uuid,
      name,
      tenantUuid,
      isolation: details.isolation ?? spec.database?.isolation ?? '',
      host: details.host,
      port,
      database: details.database,
      schema: details.schema ?? null,
      username,
      password: secret.password,
      url: url.toString(),
    };
  }

  /** The resource's status now: its phase, and the Ready message when it is of the current generation. */
  private async statusOf(
    id: string,
  ): Promise<{ phase: string; current: boolean; message: string; key: string }> {
    const r = await asPlatform(this.db, (trx) =>
      sql<{ phase: string; current: boolean; message: string | null }>`
        select phase, phase = 'Ready' and observed_generation = generation and c->>'status' = 'True' as current,
               c->>'message' as message
        from integration_resources left join lateral (
          select c from jsonb_array_elements(conditions) c where c->>'type' = 'Ready' limit 1) rc on true
        where id = ${id}`.execute(trx),
    );
    const row = r.rows[0];
    const s = { phase: row?.phase ?? 'Deleted', current: row?.current === true, message: row?.message ?? '' };
    return { ...s, key: JSON.stringify(s) };
  }
}
