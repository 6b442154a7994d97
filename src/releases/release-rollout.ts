import { sql } from 'kysely';
import { type ObjectState, writeWithChange } from '../changes/change-path.js';
import { lockTenantsWrites } from '../changes/tenant-write-lock.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import { diff } from '../domain/diff.js';
import type { Specs } from '../registry/kinds/index.js';
import { type ObjectRow, updateObjectSql } from '../registry/object.repository.js';
import { stateOf } from '../registry/representation.js';

/** A tenant's deployment of a system, whose services a roll-out puts on one release. */
export interface RolloutTarget {
  tenantId: string;
  deploymentId: string;
}

/**
 * Puts deployments' services on one release of their system (issue 21 on issue 20's inventory): every
 * live Service whose component a release artifact names (`artifacts[].service`) gets that artifact's
 * image by digest and the release's version, through the change path (lineage, audit, event and the
 * reconcile job that makes the compute target roll the replicas), in the caller's transaction. A
 * promotion calls it with a batch of tenants and the new version; a rollback with the version the
 * deployments ran before. Returns, per target (in their order), the slugs of the services it changed
 * (none when the release has no artifact for them).
 *
 * Round trips: the release, the tenants' write locks, and their services' rows are one read each for
 * the whole batch; then each changed service is one statement (its update with its lineage, audit,
 * event and job: writeWithChange).
 *
 * Concurrency: every tenant's write lock is taken exclusive (as a status writer does: the rows are
 * locked in an order of this function's own), in the targets' order, before any service row; then
 * the services' rows `for update`.
 */
export async function rollOutReleases(
  trx: Trx,
  ctx: RequestContext,
  release: { systemId: string; version: string },
  targets: readonly RolloutTarget[],
): Promise<string[][]> {
  const changed = targets.map((): string[] => []);
  if (targets.length === 0) return changed;
  const rel = await sql<{ spec: Specs['Release'] }>`
    select spec from releases where system_id = ${release.systemId} and version = ${release.version}
      and deleted_at is null`.execute(trx);
  const spec = rel.rows[0]?.spec;
  if (!spec) return changed;
  // The tenants' write locks before the service rows, as every change of a tenant takes them.
  await lockTenantsWrites(
    trx,
    targets.map((t) => t.tenantId),
  );
  const rows = (
    await sql<ObjectRow>`
      select s.* from services s
      join unnest(${targets.map((t) => t.tenantId)}::uuid[], ${targets.map((t) => t.deploymentId)}::uuid[])
        as x(tenant_id, deployment_id) on s.tenant_id = x.tenant_id and s.deployment_id = x.deployment_id
      where s.deleted_at is null
      order by s.id
      for update of s`.execute(trx)
  ).rows;
  const index = new Map(targets.map((t, i) => [`${t.tenantId}/${t.deploymentId}`.toLowerCase(), i]));
  for (const row of rows) {
    const service = row.spec as Specs['Service'];
    const artifact = spec.artifacts.find((a) => a.service === service.component);
    if (!artifact) continue;
    const image = `${artifact.image}@${artifact.digest}`;
    if (service.image === image && service.version === spec.version) continue;
    const next = { ...service, image, version: spec.version };
    const before = stateOf(row);
    // The state the update leaves, as the row will read back (JSON, so undefined members go).
    const after = JSON.parse(JSON.stringify({ ...before, spec: next })) as ObjectState;
    await writeWithChange(
      trx,
      ctx,
      {
        kind: 'Service',
        objectId: row.id,
        slug: row.slug,
        tenantId: String(row.tenant_id),
        action: 'update',
        generation: Number(row.generation) + 1,
        before,
        after,
        changes: diff(before, after),
      },
      updateObjectSql('Service', row.id, { spec: JSON.stringify(next) }),
    );
    changed[index.get(`${row.tenant_id}/${row.deployment_id}`)!]!.push(row.slug);
  }
  return changed;
}

/** rollOutReleases of one deployment: the slugs of the services it changed. */
export async function rollOutRelease(
  trx: Trx,
  ctx: RequestContext,
  target: RolloutTarget & { systemId: string; version: string },
): Promise<string[]> {
  const [changed] = await rollOutReleases(trx, ctx, target, [target]);
  return changed ?? [];
}
