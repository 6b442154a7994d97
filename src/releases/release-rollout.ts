import { sql } from 'kysely';
import { recordChange } from '../changes/change-path.js';
import { lockTenantWrites } from '../changes/tenant-write-lock.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { diff } from '../domain/diff.js';
import type { Specs } from '../registry/kinds/index.js';
import { findById, updateObject } from '../registry/object.repository.js';
import { stateOf } from '../registry/representation.js';

/**
 * Puts a deployment's services on one release of its system (issue 21 on issue 20's inventory): every
 * live Service whose component a release artifact names (`artifacts[].service`) gets that artifact's
 * image by digest and the release's version, through the change path (lineage, audit, event and the
 * reconcile job that makes the compute target roll the replicas), in the caller's transaction. A
 * promotion calls it with the new version; a rollback with the version the deployment ran before.
 * Returns the slugs of the services it changed (none when the release has no artifact for them).
 */
export async function rollOutRelease(
  trx: Trx,
  ctx: RequestContext,
  target: { tenantId: string; deploymentId: string; systemId: string; version: string },
): Promise<string[]> {
  const rel = await sql<{ spec: Specs['Release'] }>`
    select spec from releases where system_id = ${target.systemId} and version = ${target.version}
      and deleted_at is null`.execute(trx);
  const release = rel.rows[0]?.spec;
  if (!release) return [];
  // The tenant's write lock before the service rows, as every change of the tenant takes them.
  await lockTenantWrites(trx, target.tenantId);
  const ids = await sql<{ id: string }>`
    select id from services where tenant_id = ${target.tenantId} and deployment_id = ${target.deploymentId}
      and deleted_at is null order by id`.execute(trx);
  const changed: string[] = [];
  for (const { id } of ids.rows) {
    const row = await findById(trx, 'Service', id, { forUpdate: true });
    if (!row) continue;
    const spec = row.spec as Specs['Service'];
    const artifact = release.artifacts.find((a) => a.service === spec.component);
    if (!artifact) continue;
    const image = `${artifact.image}@${artifact.digest}`;
    if (spec.image === image && spec.version === release.version) continue;
    const updated = await updateObject(trx, 'Service', id, {
      spec: JSON.stringify({ ...spec, image, version: release.version }),
    });
    const before = stateOf(row);
    const after = stateOf(updated);
    await recordChange(trx, ctx, {
      kind: 'Service',
      objectId: id,
      slug: row.slug,
      tenantId: target.tenantId,
      action: 'update',
      generation: Number(updated.generation),
      before,
      after,
      changes: diff(before, after),
    });
    changed.push(row.slug);
  }
  return changed;
}
