import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { TenantryError } from '../errors/errors.js';

/** A tenant named by the request itself (body, path or query), to compare with the envelope's. */
export interface TenantMention {
  /** JSON pointer into the body, or `/path/<param>`, `/query/<param>`. */
  pointer: string;
  ref: string;
  /** `deployment`: the tenant of the deployment named by `ref`. */
  via?: 'tenant' | 'deployment';
}

/** 403 `tenant.spoofing`: the request names another tenant than the caller's token. Never corrected silently. */
export class TenantSpoofing extends TenantryError {
  constructor(pointer: string) {
    super('tenant.spoofing', 403, "The request names a tenant other than the caller's.", {
      errors: [{ pointer, code: 'tenant.spoofing', message: "not the caller's tenant" }],
      details: { pointer },
    });
  }
}

/**
 * For tenant-scoped callers: every tenant the request names must be the envelope's tenant. Looked up
 * as the platform, so that naming another existing tenant is reported as spoofing (403) rather
 * than hidden (404); a name that matches no tenant is left to the operation (404/422).
 */
export async function checkTenantMentions(
  db: Db,
  ctx: RequestContext,
  mentions: TenantMention[],
): Promise<void> {
  if (ctx.scope.kind !== 'tenant' || mentions.length === 0) return;
  const own = ctx.scope.tenantId;
  const found = await asPlatform(db, async (trx) => {
    const out: { pointer: string; tenant: string | null }[] = [];
    for (const m of mentions) {
      const byId = isUuid(m.ref);
      const table = m.via === 'deployment' ? 'deployments' : 'tenants';
      const column = m.via === 'deployment' ? 'tenant_id' : 'id';
      const r = await sql<{ tenant: string }>`
        select ${sql.ref(column)}::text as tenant from ${sql.table(table)}
        where deleted_at is null and ${byId ? sql`id = ${m.ref.toLowerCase()}::uuid` : sql`slug = ${m.ref}`}`.execute(
        trx,
      );
      out.push({ pointer: m.pointer, tenant: r.rows[0]?.tenant ?? null });
    }
    return out;
  });
  for (const f of found) if (f.tenant !== null && f.tenant !== own) throw new TenantSpoofing(f.pointer);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);

/**
 * The tenants named by manifests: a Deployment's tenant, a resource's tenant or deployment, a
 * WebhookEndpoint's tenant, a Tenant itself. The one check for manifests, whatever their format
 * (JSON or YAML): the registry decorator applies it to the parsed documents.
 */
export function manifestMentions(docs: unknown[]): TenantMention[] {
  const out: TenantMention[] = [];
  docs.forEach((doc, i) => {
    if (!doc || typeof doc !== 'object') return;
    const d = doc as { kind?: unknown; metadata?: Record<string, unknown>; spec?: Record<string, unknown> };
    const spec = d.spec && typeof d.spec === 'object' ? d.spec : {};
    const meta = d.metadata && typeof d.metadata === 'object' ? d.metadata : {};
    const at = `/${i}`;
    if (d.kind === 'Deployment') {
      const t = str(spec.tenant);
      if (t) out.push({ pointer: `${at}/spec/tenant`, ref: t });
    } else if (d.kind === 'IntegrationResource') {
      const scope = (spec.scope && typeof spec.scope === 'object' ? spec.scope : {}) as Record<
        string,
        unknown
      >;
      const t = str(scope.tenant);
      const dep = str(scope.deployment);
      if (t) out.push({ pointer: `${at}/spec/scope/tenant`, ref: t });
      if (dep) out.push({ pointer: `${at}/spec/scope/deployment`, ref: dep, via: 'deployment' });
    } else if (d.kind === 'WebhookEndpoint') {
      const t = str(meta.tenant);
      if (t) out.push({ pointer: `${at}/metadata/tenant`, ref: t });
    } else if (d.kind === 'Tenant') {
      const id = str(meta.uuid);
      const name = str(meta.name);
      if (id) out.push({ pointer: `${at}/metadata/uuid`, ref: id });
      if (name) out.push({ pointer: `${at}/metadata/name`, ref: name });
    }
  });
  return out;
}

export function checkManifestTenants(db: Db, ctx: RequestContext, docs: unknown[]): Promise<void> {
  return checkTenantMentions(db, ctx, manifestMentions(docs));
}
