import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { TenantryError } from '../errors/errors.js';
import { definitionOf, isKind, type Kind, TABLES } from '../registry/kinds/index.js';
import type { ObjectCache } from '../registry/object-cache.js';

/** A tenant named by the request itself (body, path or query), to compare with the envelope's. */
export interface TenantMention {
  /** JSON pointer into the body, or `/path/<param>`, `/query/<param>`. */
  pointer: string;
  ref: string;
  /** A kind: the tenant of the object of that kind named by `ref` (default: `ref` names a tenant). */
  via?: Kind;
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
  /** The API's read cache: a tenant name seen before is resolved without a round trip. */
  objects?: ObjectCache,
): Promise<void> {
  if (ctx.scope.kind !== 'tenant' || mentions.length === 0) return;
  const own = ctx.scope.tenantId;
  if (objects && mentions.every((m) => m.via === undefined)) {
    const known = mentions.map((m) => objects.tenantOf(m.ref));
    if (known.every((t) => t !== undefined)) {
      mentions.forEach((m, i) => {
        if (known[i] !== own) throw new TenantSpoofing(m.pointer);
      });
      return;
    }
  }
  const began = objects?.begin() ?? 0;
  const found = await asPlatform(db, async (trx) => {
    const out: { pointer: string; tenant: string | null }[] = [];
    for (const m of mentions) {
      const byId = isUuid(m.ref);
      const via = m.via ?? 'Tenant';
      const table = TABLES[via];
      const column = definitionOf(via).scope === 'self' ? 'id' : 'tenant_id';
      const r = await sql<{ tenant: string }>`
        select ${sql.ref(column)}::text as tenant from ${sql.table(table)}
        where deleted_at is null and ${byId ? sql`id = ${m.ref.toLowerCase()}::uuid` : sql`slug = ${m.ref}`}`.execute(
        trx,
      );
      const tenant = r.rows[0]?.tenant ?? null;
      if (tenant !== null && m.via === undefined) objects?.setTenantOf(m.ref, tenant, began);
      out.push({ pointer: m.pointer, tenant });
    }
    return out;
  });
  for (const f of found) if (f.tenant !== null && f.tenant !== own) throw new TenantSpoofing(f.pointer);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);

/** The tenants named by manifests, where their kind definitions say (`tenantMentions`). */
export function manifestMentions(docs: unknown[]): TenantMention[] {
  const out: TenantMention[] = [];
  docs.forEach((doc, i) => {
    if (!doc || typeof doc !== 'object') return;
    const kind = (doc as { kind?: unknown }).kind;
    if (typeof kind !== 'string' || !isKind(kind)) return;
    for (const mention of definitionOf(kind).tenantMentions ?? []) {
      const ref = str(at(doc, mention.at));
      if (ref)
        out.push({
          pointer: `/${i}${mention.at}`,
          ref,
          ...(mention.via ? { via: mention.via as Kind } : {}),
        });
    }
  });
  return out;
}

/** The value at a JSON pointer (plain object members only). */
function at(doc: unknown, pointer: string): unknown {
  let v = doc;
  for (const key of pointer.split('/').slice(1)) {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

export function checkManifestTenants(db: Db, ctx: RequestContext, docs: unknown[]): Promise<void> {
  return checkTenantMentions(db, ctx, manifestMentions(docs));
}
