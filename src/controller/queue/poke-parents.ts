import { sql } from 'kysely';
import type { Trx } from '../../db/database.js';

export interface ChildTransition {
  tenantId: string;
  /** The resource's deployment; null for a deployment (its parent is the tenant) or a tenant's own resource. */
  deploymentId: string | null;
  /** The child failed: its parents are made due whatever their state. */
  force: boolean;
}

/**
 * After a child's status transition (a resource's or a deployment's), makes its parents' jobs due
 * now (the resource's deployment, and the tenant) — unless the parent could not change its mind yet:
 * a live parent that is still Pending or Provisioning while some live dependent of it is not Ready
 * stays so, and is made due by the transition of its last dependent instead. A parent that is Ready
 * (a dependent fell back), deleting, or not Active is always made due, and so is every parent when
 * `force` (the child failed: its parent's message names it). So a parent whose children settle one
 * after another is reconciled again once, not once per child (issue 24).
 *
 * Concurrency contract: runs in the child's status transaction, which holds the tenant's write lock
 * (src/changes/tenant-write-lock.ts), as does every other status write and change of the tenant's
 * objects. The siblings' phases read here are therefore the committed ones of every status write
 * before this one, and the ones after see this one: the last of several children settling at once
 * is the one that finds none waiting, so no parent is left waiting. The enqueue itself is
 * enqueue-job.ts's upsert (a lease held on the parent is kept; its holder sees the `ticket` move).
 * A batch of children settled in one transaction (src/controller/settle-batch.ts) holds the write
 * locks of all their tenants, so the same reasoning holds for each parent.
 */
export async function pokeParentsOf(trx: Trx, children: ChildTransition[]): Promise<void> {
  // One row per parent (an upsert may not touch a row twice), forced if any child forces it.
  const deployments = new Map<string, { tenantId: string; id: string; force: boolean }>();
  const tenants = new Map<string, boolean>();
  for (const c of children) {
    tenants.set(c.tenantId, (tenants.get(c.tenantId) ?? false) || c.force);
    if (!c.deploymentId) continue;
    const d = deployments.get(c.deploymentId);
    deployments.set(c.deploymentId, {
      tenantId: c.tenantId,
      id: c.deploymentId,
      force: (d?.force ?? false) || c.force,
    });
  }
  if (tenants.size === 0) return;
  const ds = [...deployments.values()];
  // The parents are also selected by `id = any(…)`: a join on the unnested arrays alone was planned
  // as a hash join over a sequential scan of the whole table (every tenant at 100k tenants, for
  // each batch of settlements: a cost per object that grew with the registry, issue 24); with the
  // ids in an index condition the rows are looked up by primary key at any size.
  const waiting = (phase: string) => sql`(${sql.ref(phase)} in ('Pending', 'Provisioning'))`;
  await sql`
    insert into reconcile_jobs (object_kind, object_id, tenant_id, generation)
    select p.kind, p.id, p.tenant_id, 0 from (
      select 'Deployment' as kind, d.id, d.tenant_id, v.force,
        d.deleted_at is null and ${waiting('d.phase')} and exists (
          select 1 from integration_resources r
          where r.tenant_id = d.tenant_id and r.deployment_id = d.id and r.deleted_at is null and r.phase <> 'Ready'
        ) as unchanged
      from unnest(${ds.map((d) => d.tenantId)}::uuid[], ${ds.map((d) => d.id)}::uuid[], ${ds.map((d) => d.force)}::boolean[])
        as v(tenant_id, id, force)
      join deployments d on d.tenant_id = v.tenant_id and d.id = v.id
      where d.id = any(${ds.map((d) => d.id)}::uuid[])
      union all
      select 'Tenant', t.id, t.id, v.force,
        t.deleted_at is null and t.lifecycle = 'Active' and ${waiting('t.phase')} and (
          exists (select 1 from deployments c
                  where c.tenant_id = t.id and c.deleted_at is null and c.phase <> 'Ready')
          or exists (select 1 from integration_resources c
                     where c.tenant_id = t.id and c.deleted_at is null and c.phase <> 'Ready'))
      from unnest(${[...tenants.keys()]}::uuid[], ${[...tenants.values()]}::boolean[]) as v(id, force)
      join tenants t on t.id = v.id
      where t.id = any(${[...tenants.keys()]}::uuid[])
    ) p
    where p.force or not p.unchanged
    on conflict (object_kind, object_id) do update
      set generation = greatest(reconcile_jobs.generation, excluded.generation),
          run_after = now(), attempts = 0, updated_at = now(), ticket = reconcile_jobs.ticket + 1`.execute(
    trx,
  );
}

/** After one child's status transition: pokeParentsOf of one. */
export function pokeParents(
  trx: Trx,
  input: { tenantId: string; deploymentId: string | null; force: boolean },
): Promise<void> {
  return pokeParentsOf(trx, [input]);
}
