import { sql } from 'kysely';
import { type Change, recordChange } from '../changes/change-path.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { diff } from '../domain/diff.js';
import { isUuid } from '../domain/identifiers.js';
import { ConflictError, NotFoundError } from '../errors/errors.js';
import type { PlacementPolicy } from '../placement/placement.policy.js';
import { type ChangeAction, childrenOf, type Kind, kindCode, tenantOf } from './kinds/index.js';
import {
  countLive,
  findById,
  findBySlug,
  listObjects,
  type ObjectRow,
  updateObject,
} from './object.repository.js';
import { stateOf } from './representation.js';

/*
 * Changes to existing objects, each in the caller's transaction (trx first): finding the object a
 * URL names, generation checks, deletion with the cascade and refusal rules of the kind definitions.
 */

/** The object a URL names (UUID or slug); 404 if there is none. */
export async function locate(
  trx: Trx,
  kind: Kind,
  ref: string,
  opts: { includeDeleted?: boolean; forUpdate?: boolean } = {},
): Promise<ObjectRow> {
  const row = isUuid(ref)
    ? await findById(trx, kind, ref.toLowerCase(), opts)
    : await findBySlug(trx, kind, ref, opts);
  if (!row) throw objectNotFound(kind, ref);
  return row;
}

/** 404: no object of this kind that the caller's scope sees has this UUID or slug. */
export const objectNotFound = (kind: Kind, ref: string): NotFoundError =>
  new NotFoundError(`${kindCode(kind)}.not_found`, `${kind} "${ref}" does not exist.`, { kind, ref });

/** Deletes an object, leaving a tombstone; resources go before their deployment. */
export async function deleteObject(
  trx: Trx,
  ctx: RequestContext,
  policy: PlacementPolicy,
  kind: Exclude<Kind, 'Tenant'>,
  ref: string,
  expectedGeneration?: number,
): Promise<ObjectRow> {
  const row = await locate(trx, kind, ref, { forUpdate: true });
  checkGeneration(kind, row, expectedGeneration);
  for (const child of childrenOf(kind)) {
    const rule = child.ref.onDelete;
    if (typeof rule === 'object' && (await countLive(trx, child.kind, child.ref.column, row.id)) > 0)
      throw new ConflictError(rule.refuse.code, rule.refuse.message(row.slug));
  }
  return deleteWithChildren(trx, ctx, policy, kind, row);
}

/** If-Match: the object must be at the generation the caller last saw (else 412). */
export function checkGeneration(kind: Kind, row: ObjectRow, expected: number | undefined): void {
  if (expected !== undefined && expected !== row.generation) {
    throw new ConflictError(
      'object.generation_conflict',
      `${kind} "${row.slug}" is at generation ${row.generation}, not ${expected}.`,
      {
        status: 412,
        details: { currentGeneration: row.generation, expectedGeneration: expected },
      },
    );
  }
}

/** Deletes the live children the kind's definitions cascade to (one level, catalogue order), then the object. */
export async function deleteWithChildren(
  trx: Trx,
  ctx: RequestContext,
  policy: PlacementPolicy,
  kind: Kind,
  row: ObjectRow,
): Promise<ObjectRow> {
  for (const child of childrenOf(kind)) {
    if (child.ref.onDelete !== 'cascade') continue;
    for (const c of await listObjects(trx, child.kind, {
      where: [sql`${sql.ref(child.ref.column)} = ${row.id}`],
      limit: 100_000,
      includeDeleted: false,
    })) {
      await softDelete(trx, ctx, policy, child.kind, c);
    }
  }
  return softDelete(trx, ctx, policy, kind, row);
}

async function softDelete(
  trx: Trx,
  ctx: RequestContext,
  policy: PlacementPolicy,
  kind: Kind,
  row: ObjectRow,
): Promise<ObjectRow> {
  await policy.beforeDelete(trx, kind, row);
  const updated = await updateObject(trx, kind, row.id, {
    lifecycle: 'Deleted',
    phase: 'Terminating',
    deleted_at: new Date(),
  });
  await recordObjectChange(trx, ctx, kind, 'delete', row, updated);
  await policy.afterDelete(trx, ctx, kind, updated);
  return updated;
}

/** Records a change of an existing object (lifecycle action or delete) through the change path. */
export async function recordObjectChange(
  trx: Trx,
  ctx: RequestContext,
  kind: Kind,
  action: ChangeAction,
  before: ObjectRow,
  after: ObjectRow,
): Promise<void> {
  const prior = stateOf(before);
  const next = stateOf(after);
  const change: Change = {
    kind,
    objectId: after.id,
    slug: after.slug,
    tenantId: tenantOf(kind, after),
    action,
    generation: after.generation,
    before: prior,
    after: next,
    changes: diff(prior, next),
  };
  await recordChange(trx, ctx, change);
}
