import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, platformDb, type Trx } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { NotFoundError, UnauthorizedError } from '../errors/errors.js';
import { type RateDecision, takeToken } from '../ratelimit/take-token.js';
import type { BuiltinIssuer } from './builtin-issuer.js';

/**
 * Token requests admitted per minute, per client id and per source address: far above what a client
 * that caches its 15-minute token needs, far below what guessing a secret needs. Counted before the
 * secret is checked, so a right guess past the limit is refused too.
 */
export const TOKEN_RATE = { perClient: 60, perAddress: 600, windowSeconds: 60 } as const;

/** The bucket key of a client id or address (rate_limit_buckets is keyed by uuid). */
function bucketKey(kind: string, value: string): string {
  const x = createHash('sha256').update(`${kind}\u0000${value}`).digest('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** The roles a tenant's service client gets: the default `service` policy (read and operate, its tenant). */
export const SERVICE_CLIENT_ROLES = ['service'];
/** Lifetime of a token from the client-credentials grant. */
export const SERVICE_TOKEN_TTL_SECONDS = 900;

export interface ServiceCredentials {
  clientId: string;
  clientSecret: string;
  tenantId: string;
  roles: string[];
  createdAt: string;
  tokenEndpoint: string;
}

/**
 * Issues the tenant's service client in the caller's transaction (activation's step checkpoint):
 * one live client per tenant, so a re-run keeps the first. Returns its client id.
 */
export async function issueServiceClient(trx: Trx, tenantId: string, workflowId: string): Promise<string> {
  const clientId = `tc_${randomBytes(12).toString('hex')}`;
  const secret = randomBytes(32).toString('base64url');
  await sql`
    insert into service_clients (client_id, tenant_id, secret, roles, workflow_id)
    values (${clientId}, ${tenantId}, ${secret}, ${SERVICE_CLIENT_ROLES}, ${workflowId})
    on conflict (tenant_id) where revoked_at is null do nothing`.execute(trx);
  const r = await sql<{ client_id: string }>`
    select client_id from service_clients where tenant_id = ${tenantId} and revoked_at is null`.execute(trx);
  return r.rows[0]!.client_id;
}

/** Revokes the tenant's live client (activation's undo, a purge); its tokens expire within their TTL. */
export async function revokeServiceClients(trx: Trx, tenantId: string): Promise<number> {
  const r = await sql`update service_clients set revoked_at = now()
    where tenant_id = ${tenantId} and revoked_at is null`.execute(trx);
  return Number(r.numAffectedRows ?? 0);
}

const same = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

/**
 * The client-credentials grant (RFC 6749 §4.4) over Tenantry's built-in issuer, and the tenant's
 * credentials as its administrators read them (audited: a secret was handed out).
 */
export class ServiceClientsService {
  constructor(
    private readonly db: Db,
    private readonly issuer: BuiltinIssuer,
  ) {}

  async credentials(ctx: RequestContext, ref: string, baseUrl: string): Promise<ServiceCredentials> {
    return asPlatform(this.db, async (trx) => {
      const t = await sql<{ id: string; slug: string }>`
        select id, slug from tenants where deleted_at is null and
          ${isUuid(ref) ? sql`id = ${ref.toLowerCase()}` : sql`slug = ${ref}`}`.execute(trx);
      const tenant = t.rows[0];
      if (!tenant || (ctx.scope.kind === 'tenant' && ctx.scope.tenantId !== tenant.id))
        throw new NotFoundError('tenant.not_found', `No tenant "${ref}".`);
      const r = await sql<{ client_id: string; secret: string; roles: string[]; created_at: Date }>`
        select client_id, secret, roles, created_at from service_clients
        where tenant_id = ${tenant.id} and revoked_at is null`.execute(trx);
      const c = r.rows[0];
      if (!c)
        throw new NotFoundError(
          'service_credentials.not_found',
          `Tenant ${tenant.slug} has no service credentials; activating it issues them.`,
        );
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          tenantId: tenant.id,
          action: 'tenant.credentials.read',
          target: { kind: 'Tenant', id: tenant.id, slug: tenant.slug },
          before: null,
          after: { clientId: c.client_id },
          outcome: 'success',
          decision: null,
        }),
      );
      return {
        clientId: c.client_id,
        clientSecret: c.secret,
        tenantId: tenant.id,
        roles: c.roles,
        createdAt: c.created_at.toISOString(),
        tokenEndpoint: `${baseUrl}/v1/oauth/token`,
      };
    });
  }

  /** A service token for a live client of a tenant that is not deleted; 401 `oauth.invalid_client` otherwise. */
  /**
   * Takes one token request from the client id's and the source address's allowance (GCRA in
   * PostgreSQL, shared by every API process); the refusing decision, or null when admitted. Fails
   * open: a request is not refused because its bucket could not be read.
   */
  async admitToken(clientId: string, address: string): Promise<(RateDecision & { scope: string }) | null> {
    try {
      const byAddress = await takeToken(
        platformDb(this.db),
        bucketKey('address', address),
        'oauth.token.address',
        TOKEN_RATE.perAddress,
        TOKEN_RATE.windowSeconds,
      );
      if (!byAddress.allowed) return { ...byAddress, scope: 'address' };
      const byClient = await takeToken(
        platformDb(this.db),
        bucketKey('client', clientId),
        'oauth.token.client',
        TOKEN_RATE.perClient,
        TOKEN_RATE.windowSeconds,
      );
      return byClient.allowed ? null : { ...byClient, scope: 'client' };
    } catch {
      return null;
    }
  }

  async token(
    clientId: string,
    secret: string,
  ): Promise<{ access_token: string; token_type: 'Bearer'; expires_in: number }> {
    const r = await asPlatform(this.db, (trx) =>
      sql<{ secret: string; tenant_id: string; roles: string[] }>`
        select c.secret, c.tenant_id, c.roles from service_clients c
        join tenants t on t.id = c.tenant_id and t.deleted_at is null
        where c.client_id = ${clientId} and c.revoked_at is null`.execute(trx),
    );
    const c = r.rows[0];
    if (!c || !same(c.secret, secret))
      throw new UnauthorizedError('oauth.invalid_client', 'Unknown client, wrong secret, or revoked client.');
    const accessToken = await this.issuer.mint({
      subject: clientId,
      tenant: c.tenant_id,
      roles: c.roles,
      kind: 'service',
      appId: clientId,
      ttlSeconds: SERVICE_TOKEN_TTL_SECONDS,
    });
    return { access_token: accessToken, token_type: 'Bearer', expires_in: SERVICE_TOKEN_TTL_SECONDS };
  }
}
