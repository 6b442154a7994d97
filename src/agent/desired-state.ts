import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { type ResourceFacts, resourceFactsSql, toDesired } from '../controller/reconcilers.js';
import type { Trx } from '../db/database.js';
import type { DesiredResource } from '../providers/provider.js';
import type { ObjectRow } from '../registry/object.repository.js';

/** One object of a cell's desired state as its agent pulls it. */
export interface DesiredItem {
  id: string;
  /** The object's generation the agent reports status for. */
  generation: number;
  /** The object is being deleted: the agent removes the resource and reports `Deleted`. */
  deleted: boolean;
  /** The tenant's region (a provider configured for the region is used for it). */
  region: string;
  desired: DesiredResource;
}

/** An object of the desired state with its content hash, as the agent holds it. */
export type HashedItem = DesiredItem & { hash: string };

/** An entry of the feed's index: what the agent compares with what it holds. */
export interface IndexEntry {
  id: string;
  generation: number;
  hash: string;
}

/** The content hash of a whole index: over its entries in id order. Pure. */
export function indexHash(entries: readonly IndexEntry[]): string {
  const h = createHash('sha256');
  for (const e of [...entries].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
    h.update(`${e.id}:${e.hash}\n`);
  return h.digest('base64url');
}

/**
 * The objects of a cell's desired state: every integration resource of the tenants placed in it
 * that is not a finalised tombstone, with the facts a provider takes it with (the suspended flag of
 * its tenant included), and the content hash of all of that (computed by PostgreSQL over the
 * inputs of toDesired: equal inputs give an equal object). `ids` narrows it (still only the cell's).
 */
const cellObjects = (cellId: string, ids?: readonly string[]) => sql`
  select r.id, r.generation, r.deleted_at, r.spec, r.physical_name, r.tenant_id, ${resourceFactsSql}
  from integration_resources r join tenants t on t.id = r.tenant_id
  where t.cell_id = ${cellId} and r.phase <> 'Deleted'
    ${ids ? sql`and r.id = any(${ids as string[]}::uuid[])` : sql``}`;
const hashSql = sql`md5(row(x.generation, x.deleted_at is not null, x.spec, x.physical_name, x.tenant_id,
  x.tenant_slug, x.region, x.suspended, x.scope_slug, x.consumers)::text)`;

/** The desired state of a cell (or of `ids` of it), resolved as a provider takes it, in one statement. */
export async function cellDesiredItems(
  trx: Trx,
  cellId: string,
  ids?: readonly string[],
): Promise<HashedItem[]> {
  const r = await sql<ObjectRow & ResourceFacts & { hash: string }>`
    select x.*, ${hashSql} as hash from (${cellObjects(cellId, ids)}) x order by x.id`.execute(trx);
  return r.rows.map((row) => ({
    id: row.id,
    generation: Number(row.generation),
    deleted: row.deleted_at !== null,
    region: row.region,
    desired: toDesired(row, row),
    hash: row.hash,
  }));
}

/**
 * The feed's current index for a cell; the feed generation moves on whenever its hash changes.
 *
 * Concurrency contract: the generation is bumped by a conditional update on the agent's row
 * (`feed_hash <> new hash`), so concurrent readers that see the same change bump it once.
 */
export async function cellIndex(
  trx: Trx,
  cellId: string,
): Promise<{ generation: number; hash: string; items: IndexEntry[] }> {
  // Hashes only: the objects themselves are read for those an agent lacks (a change: one or two).
  const items = (
    await sql<{ id: string; generation: string; hash: string }>`
      select x.id, x.generation, ${hashSql} as hash from (${cellObjects(cellId)}) x order by x.id`.execute(
      trx,
    )
  ).rows.map((r) => ({ id: r.id, generation: Number(r.generation), hash: r.hash }));
  const hash = indexHash(items);
  const r = await sql<{ feed_generation: string }>`
    update cell_agents set feed_generation = feed_generation + 1, feed_hash = ${hash}
    where cell_id = ${cellId} and feed_hash <> ${hash}
    returning feed_generation`.execute(trx);
  let generation = r.rows[0]?.feed_generation;
  if (generation === undefined) {
    const g = await sql<{ feed_generation: string }>`
      select feed_generation from cell_agents where cell_id = ${cellId}`.execute(trx);
    generation = g.rows[0]?.feed_generation ?? '0';
  }
  return { generation: Number(generation), hash, items };
}
