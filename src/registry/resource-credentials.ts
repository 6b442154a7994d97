import { appendAuditAlone, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import type { Db } from '../db/database.js';
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
    // Only what the controller observed of the current generation: a migration's cut-over swaps the
    // secret and makes the resource Pending, and the details of the old side must not go with it.
    const ready = resource.status.conditions.find((c) => c.type === 'Ready');
    const current =
      resource.status.phase === 'Ready' &&
      resource.status.observedGeneration === resource.metadata.generation &&
      ready?.status === 'True';
    const details = current ? parseDetails(ready.message) : {};
    const secret = details.host ? await this.secrets.get(uuid) : undefined;
    if (!details.host || !details.database || !secret?.password || !tenantUuid)
      throw new ConflictError(
        'credentials.not_provisioned',
        `${name} is not provisioned yet (phase ${resource.status.phase}): its credentials exist once it is Ready` +
          ' (`tenantry apply --wait`, or `tenantry get resource NAME`); a database of a remote cell agent keeps them in its cell.',
        { details: { phase: resource.status.phase } },
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
      isolation: spec.database?.isolation ?? details.isolation ?? '',
      host: details.host,
      port,
      database: details.database,
      schema: details.schema ?? null,
      username,
      password: secret.password,
      url: url.toString(),
    };
  }
}
