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

/** An entry of the feed's index: what the agent compares with what it holds. */
export interface IndexEntry {
  id: string;
  generation: number;
  hash: string;
}

/** JSON with object keys sorted, so equal content hashes equally whatever order it was built in. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/** The content hash of one item (SHA-256, base64url). Pure. */
export const itemHash = (item: DesiredItem): string =>
  createHash('sha256').update(canonical(item)).digest('base64url');

/** The content hash of a whole index: over its entries in id order. Pure. */
export function indexHash(entries: readonly IndexEntry[]): string {
  const h = createHash('sha256');
  for (const e of [...entries].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
    h.update(`${e.id}:${e.hash}\n`);
  return h.digest('base64url');
}

/**
 * The desired state of a cell: every integration resource of the tenants placed in it that is not
 * a finalised tombstone, resolved as a provider takes it (the suspended flag of its tenant
 * included), in one statement. `ids` narrows it to those objects (still only the cell's).
 */
export async function cellDesiredItems(
  trx: Trx,
  cellId: string,
  ids?: readonly string[],
): Promise<DesiredItem[]> {
  const r = await sql<ObjectRow & ResourceFacts>`
    select r.*, ${resourceFactsSql}
    from integration_resources r join tenants t on t.id = r.tenant_id
    where t.cell_id = ${cellId} and r.phase <> 'Deleted'
      ${ids ? sql`and r.id = any(${ids as string[]}::uuid[])` : sql``}
    order by r.id`.execute(trx);
  return r.rows.map((row) => ({
    id: row.id,
    generation: Number(row.generation),
    deleted: row.deleted_at !== null,
    region: row.region,
    desired: toDesired(row, row),
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
  const items = (await cellDesiredItems(trx, cellId)).map((i) => ({
    id: i.id,
    generation: i.generation,
    hash: itemHash(i),
  }));
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
