import { type RawBuilder, sql } from 'kysely';
import { chainOf, PLATFORM_CHAIN } from '../audit/audit-hash.js';
import { noteTenantWriteLock, tenantWriteLockSql } from '../changes/tenant-write-lock.js';
import type { Trx } from '../db/database.js';
import type { DiffEntry } from '../domain/diff.js';
import {
  type EffectiveLimits,
  effectiveLimitsSql,
  type LimitsRow,
  limitsOf,
  type PlanSpecShape,
} from '../placement/quotas.js';
import { definitionOf, type Kind, TABLES } from './kinds/index.js';
import type { ObjectRow } from './kinds/kind.js';

export type { ObjectRow };

const table = (kind: Kind) => sql.table(TABLES[kind]);

/**
 * Reads one object by UUID. `forUpdate` takes its tenant's write lock (shared, as the change path
 * does) and then its row lock, both
 * until the transaction ends (lock order: src/changes/tenant-write-lock.ts), in one statement: a
 * materialised CTE takes the advisory lock, and the row is read `for update` by the id it yields.
 */
export async function findById(
  trx: Trx,
  kind: Kind,
  id: string,
  opts: { includeDeleted?: boolean; forUpdate?: boolean } = {},
): Promise<ObjectRow | undefined> {
  const live = opts.includeDeleted ? sql`` : sql`and deleted_at is null`;
  if (opts.forUpdate) return lockedRow(trx, kind, sql`id = ${id} ${live}`, live);
  const r = await sql<ObjectRow>`select * from ${table(kind)} where id = ${id} ${live}`.execute(trx);
  return r.rows[0];
}

/** Reads the live object with this slug (tombstones keep their slug but do not match); `forUpdate` as findById. */
export async function findBySlug(
  trx: Trx,
  kind: Kind,
  slug: string,
  opts: { forUpdate?: boolean } = {},
): Promise<ObjectRow | undefined> {
  const live = sql`and deleted_at is null`;
  // The tenant's write lock, then the row's (by id: the slug may be freed meanwhile, the id not).
  if (opts.forUpdate) return lockedRow(trx, kind, sql`slug = ${slug} ${live}`, live);
  const r = await sql<ObjectRow>`select * from ${table(kind)} where slug = ${slug} ${live}`.execute(trx);
  return r.rows[0];
}

/**
 * The row `where` finds, with its tenant's write lock and then its row lock, in one round trip. The
 * CTE is materialised and its id reaches the outer scan as an init plan, so the advisory lock is taken
 * before the row is locked; `for update` re-checks `live` on the newest version of the row.
 */
async function lockedRow(
  trx: Trx,
  kind: Kind,
  where: RawBuilder<unknown>,
  live: RawBuilder<unknown>,
): Promise<ObjectRow | undefined> {
  const scope = definitionOf(kind).scope;
  const chain =
    scope === 'self'
      ? sql`id::text`
      : scope === 'tenant'
        ? sql`coalesce(tenant_id::text, ${PLATFORM_CHAIN})`
        : sql`${PLATFORM_CHAIN}::text`;
  const r = await sql<ObjectRow>`
    with locked as materialized (
      select id, ${tenantWriteLockSql(chain, 'change')} from ${table(kind)} where ${where}
    )
    select * from ${table(kind)} where id = any(array(select id from locked)) ${live}
    for update`.execute(trx);
  const row = r.rows[0];
  if (row) {
    const tenantId = scope === 'self' ? row.id : scope === 'tenant' ? row.tenant_id : null;
    noteTenantWriteLock(trx, chainOf(tenantId ? String(tenantId).toLowerCase() : null), 'change');
  }
  return row;
}

/** What a tenant's slug rule reads (ResolveEnv.tenantContext), in one round trip. */
export interface TenantContext {
  /** The live Region objects' slugs, in order (empty: none declared). */
  regions: string[];
  /** The live customer with the slug asked for. */
  customer?: { id: string; short_code: string };
  /** The tenant `lock` names, locked (findById/findBySlug `forUpdate`); absent when there is none. */
  existing?: ObjectRow;
  /** The live plan `plan` (null: none); absent when no plan was asked for. */
  plan?: { spec: PlanSpecShape } | null;
  /** Whether any live cell exists (none: the installation does not place tenants, see src/placement). */
  cellsDeclared: boolean;
  /** A placed `existing` tenant's limits in force (effectiveLimits), which its change's policy checks. */
  limits?: EffectiveLimits;
}

/** What readTenantContext reads: a customer by slug, the tenant to lock, a plan by slug. */
export interface TenantContextQuery {
  customer: string;
  /**
   * The tenant to lock: by UUID (deleted ones too, as findById), or by slug (live, as findBySlug),
   * the slug being the customer's short code, `-` and `slugRest`. Absent: no tenant is read.
   */
  lock?: { id: string } | { slugRest: string };
  plan?: string;
}

/**
 * In one statement, what resolving, locking and placing a Tenant manifest read in up to seven
 * (issue 24): the regions, the live customer, the tenant `lock` names with its tenant write lock and
 * then its row lock (lockedRow's statement; by slug, the slug is taken from the customer row read
 * here), the live plan, whether any cell exists, and a placed tenant's limits in force.
 */
export async function readTenantContext(trx: Trx, q: TenantContextQuery): Promise<TenantContext> {
  const lock = q.lock;
  const which = !lock
    ? sql`false`
    : 'id' in lock
      ? sql`id = ${lock.id}`
      : sql`slug = (select short_code || '-' || ${lock.slugRest}::text from customer) and deleted_at is null`;
  const r = await sql<
    ObjectRow & {
      tenantry_regions: string[];
      tenantry_cells: boolean;
      tenantry_customer_id: string | null;
      tenantry_short_code: string;
      tenantry_limits: LimitsRow | null;
      tenantry_plan: { spec: PlanSpecShape } | null;
    }
  >`
    with customer as materialized (
      select id, short_code from customers where slug = ${q.customer} and deleted_at is null
    ), locked as materialized (
      select id, ${tenantWriteLockSql(sql`id::text`, 'change')} from tenants where ${which}
    )
    select r.tenantry_regions, c.id as tenantry_customer_id, c.short_code as tenantry_short_code,
      exists (select 1 from cells where deleted_at is null) as tenantry_cells,
      (select jsonb_build_object('spec', spec) from plans
        where slug = ${q.plan ?? null} and deleted_at is null) as tenantry_plan,
      case when locked_tenant.placement is not null
        then (select to_jsonb(l) from (${effectiveLimitsSql(sql`locked_tenant.id`)}) l) end as tenantry_limits,
      locked_tenant.*
    from (select coalesce(array_agg(slug order by slug), '{}') as tenantry_regions
          from regions where deleted_at is null) r
    left join customer c on true
    left join lateral (
      select * from tenants where id = any(array(select id from locked))
        ${lock && 'id' in lock ? sql`` : sql`and deleted_at is null`} for update
    ) locked_tenant on true`.execute(trx);
  const {
    tenantry_regions: regions,
    tenantry_cells: cellsDeclared,
    tenantry_customer_id,
    tenantry_short_code,
    tenantry_limits,
    tenantry_plan,
    ...row
  } = r.rows[0]!;
  const existing = row.id === null ? undefined : (row as ObjectRow);
  if (existing) noteTenantWriteLock(trx, chainOf(existing.id.toLowerCase()), 'change');
  return {
    regions,
    cellsDeclared,
    ...(tenantry_customer_id === null
      ? {}
      : { customer: { id: tenantry_customer_id, short_code: tenantry_short_code } }),
    ...(existing ? { existing } : {}),
    ...(tenantry_limits ? { limits: limitsOf(tenantry_limits) } : {}),
    ...(q.plan !== undefined ? { plan: tenantry_plan } : {}),
  };
}

export async function insertObject(
  trx: Trx,
  kind: Kind,
  columns: Record<string, unknown>,
): Promise<ObjectRow> {
  const names = Object.keys(columns);
  const r = await sql<ObjectRow>`
    insert into ${table(kind)} (${sql.join(names.map((n) => sql.ref(n)))})
    values (${sql.join(names.map((n) => columns[n]))})
    returning *`.execute(trx);
  return r.rows[0]!;
}

/** Updates a locked row and bumps its generation by one. */
export async function updateObject(
  trx: Trx,
  kind: Kind,
  id: string,
  set: Record<string, unknown>,
): Promise<ObjectRow> {
  const r = await updateObjectSql(kind, id, set).execute(trx);
  return r.rows[0]!;
}

/** The update of updateObject as a statement, for a caller that makes it part of a larger one. */
export function updateObjectSql(kind: Kind, id: string, set: Record<string, unknown>): RawBuilder<ObjectRow> {
  const assignments = Object.entries(set).map(([k, v]) => sql`${sql.ref(k)} = ${v}`);
  return sql<ObjectRow>`
    update ${table(kind)}
    set ${sql.join([...assignments, sql`generation = generation + 1`, sql`updated_at = now()`])}
    where id = ${id}
    returning *`;
}

export interface ListQuery {
  where: RawBuilder<unknown>[];
  after?: { slug: string; id: string } | undefined;
  limit: number;
  includeDeleted: boolean;
}

/** Keyset pagination on (slug, id): rows that existed when paging began are never skipped or repeated. */
export async function listObjects(trx: Trx, kind: Kind, q: ListQuery): Promise<ObjectRow[]> {
  const where = [...q.where];
  if (!q.includeDeleted) where.push(sql`deleted_at is null`);
  if (q.after) where.push(sql`(slug, id) > (${q.after.slug}, ${q.after.id})`);
  const r = await sql<ObjectRow>`
    select * from ${table(kind)}
    ${where.length > 0 ? sql`where ${sql.join(where, sql` and `)}` : sql``}
    order by slug, id
    limit ${q.limit}`.execute(trx);
  return r.rows;
}

export async function countLive(trx: Trx, kind: Kind, column: string, value: string): Promise<number> {
  const r = await sql<{ n: number }>`
    select count(*) as n from ${table(kind)} where ${sql.ref(column)} = ${value} and deleted_at is null`.execute(
    trx,
  );
  return r.rows[0]?.n ?? 0;
}

/** One desired-state version of an object, as its lineage keeps it. */
export interface VersionRecord {
  generation: number;
  action: string;
  state: unknown;
  changes: DiffEntry[];
  actor: unknown;
  requestId: string;
  correlationId: string;
  createdAt: string;
}

/** The lineage of one object: every desired-state version with who, when and what changed. */
export async function readLineage(trx: Trx, kind: Kind, id: string): Promise<VersionRecord[]> {
  const r = await sql<{
    generation: number;
    action: string;
    state: unknown;
    changes: DiffEntry[];
    actor: unknown;
    request_id: string;
    correlation_id: string;
    created_at: Date;
  }>`
    select generation, action, state, changes, actor, request_id, correlation_id, created_at
    from object_versions where object_kind = ${kind} and object_id = ${id} order by generation`.execute(trx);
  return r.rows.map((v) => ({
    generation: v.generation,
    action: v.action,
    state: v.state,
    changes: v.changes,
    actor: v.actor,
    requestId: v.request_id,
    correlationId: v.correlation_id,
    createdAt: v.created_at.toISOString(),
  }));
}
