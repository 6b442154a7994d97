import { SpanKind } from '@opentelemetry/api';
import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { inSpan } from '../observability/tracing.js';
import { provisionedCondition } from '../providers/observed-details.js';
import {
  type DesiredResource,
  ProviderError,
  type ResourceProvider,
  type ResourceType,
} from '../providers/provider.js';
import { definitionOf, type Kind, type Specs, TABLES } from '../registry/kinds/index.js';
import { DEFAULT_PARTITIONS } from '../registry/kinds/integration-resource.js';
import type { ReconcilerName } from '../registry/kinds/kind.js';
import { findById, type ObjectRow } from '../registry/object.repository.js';
import type { Condition } from '../registry/representation.js';
import { reconcileRuntime } from '../runtime/runtime.reconciler.js';
import { NO_RUNTIME, type ProviderSet, slotFor } from './providers.js';
import { enqueueJob } from './queue/enqueue-job.js';
import type { ReconcileJob } from './queue/job.js';
import type { Finish } from './queue/job-types.js';
import { type Settled, type Settlement, settleAll, suspendedSql, target } from './settle.js';
import { type ObservedStatus, recordStatusEvent } from './status.js';

export interface ReconcileEnv {
  db: Db;
  providers: ProviderSet;
  /** A fresh system context per reconcile (request and correlation ids). */
  context: () => RequestContext;
  /**
   * Where status is written when the reconcile is one of a claimed batch (src/controller/settle-batch.ts):
   * with the batch's other settlements in one transaction, ending the job there when `complete`.
   * Absent: in a transaction of its own.
   */
  settler?: (s: Settlement, complete: boolean) => Promise<Settled>;
  /** Bounds the provider calls running at once (the controller's `workers`); absent: unbounded. */
  limit?: <T>(call: () => Promise<T>) => Promise<T>;
}

export interface ReconcileResult {
  /** The object is a finalised tombstone: its job can go. */
  finalised: boolean;
  /** The job was already ended inside the status transaction (see `Finish`). */
  finished: boolean;
}

/** Ends the job in the status write's own transaction: status and job release commit together. */
export type { Finish };

export interface ChildRow {
  slug: string;
  phase: string;
  conditions: Condition[];
  deleted_at: Date | null;
}

export { target };

const load = (db: Db, kind: Kind, id: string) =>
  asPlatform(db, (trx) => findById(trx, kind, id, { includeDeleted: true }));

/**
 * Level-triggered: the job only says which object to look at. The reconciler reads the desired
 * state (the registry row) and the real state (the provider), acts, and writes status. Provider
 * calls happen outside any database transaction; the status write is its own short transaction.
 */
export async function reconcile(
  env: ReconcileEnv,
  job: ReconcileJob,
  finish?: Finish,
  /** What a batch read for it (loadForReconcile); absent: read here. */
  preloaded?: { loaded: Loaded | undefined },
): Promise<ReconcileResult> {
  const loaded = preloaded
    ? preloaded.loaded
    : (await asPlatform(env.db, (trx) => loadForReconcile(trx, [job]))).get(jobKey(job));
  if (!loaded) return { finalised: true, finished: false };
  const name = definitionOf(job.kind).reconciler;
  const { row, resource, children } = loaded;
  if (resource) return reconcileResource(env, row, resource, finish);
  if (children) return reconcileParent(env, job.kind as 'Tenant' | 'Deployment', row, children, finish);
  return RECONCILERS[name](env, job.kind, row, finish);
}

/** What a reconcile reads before it acts: the row, a resource's desired state, a parent's dependents. */
export interface Loaded {
  row: ObjectRow;
  resource?: Awaited<ReturnType<typeof desiredResource>>;
  children?: ChildRow[];
}

export const jobKey = (job: { kind: string; objectId: string }): string =>
  `${job.kind}/${job.objectId.toLowerCase()}`;

/**
 * Reads what the reconciles of `jobs` start from, set-based (a claimed batch in one transaction: one
 * statement per kind for the rows, one for the resources' facts, one per parent kind for their
 * dependents). A job whose object is gone or finalised maps to undefined.
 */
export async function loadForReconcile(
  trx: Trx,
  jobs: ReconcileJob[],
): Promise<Map<string, Loaded | undefined>> {
  const out = new Map<string, Loaded | undefined>();
  const byKind = new Map<Kind, string[]>();
  for (const j of jobs) byKind.set(j.kind, [...(byKind.get(j.kind) ?? []), j.objectId]);
  for (const [kind, ids] of byKind) {
    const rows = await findByIds(trx, kind, ids);
    const name = definitionOf(kind).reconciler;
    const live = rows.filter((r) => r.phase !== 'Deleted');
    const facts =
      name === 'resource' && live.length > 0 ? await desiredResources(trx, live) : new Map<string, never>();
    const children = name === 'parent' && live.length > 0 ? await childrenOfMany(trx, kind, live) : undefined;
    for (const row of live) {
      const id = row.id.toLowerCase();
      out.set(jobKey({ kind, objectId: id }), {
        row,
        ...(name === 'resource' ? { resource: facts.get(id) } : {}),
        ...(children ? { children: children.get(id) ?? [] } : {}),
      });
    }
  }
  return out;
}

const findByIds = async (trx: Trx, kind: Kind, ids: string[]): Promise<ObjectRow[]> =>
  (await sql<ObjectRow>`select * from ${sql.table(TABLES[kind])} where id = any(${ids}::uuid[])`.execute(trx))
    .rows;

/** The reconcilers a kind definition can name (`reconciler` in src/registry/kinds). */
const RECONCILERS: Record<
  ReconcilerName,
  (env: ReconcileEnv, kind: Kind, row: ObjectRow, finish?: Finish) => Promise<ReconcileResult>
> = {
  resource: async (env, _kind, row, finish) =>
    reconcileResource(env, row, await asPlatform(env.db, (trx) => desiredResource(trx, row)), finish),
  parent: async (env, kind, row, finish) =>
    reconcileParent(
      env,
      kind as 'Tenant' | 'Deployment',
      row,
      (await asPlatform(env.db, (trx) => childrenOfMany(trx, kind, [row]))).get(row.id.toLowerCase()) ?? [],
      finish,
    ),
  // Services, scaling policies and configuration versions (src/runtime): the compute target.
  runtime: (env, kind, row, finish) =>
    reconcileRuntime({
      db: env.db,
      runtime: env.providers.runtime ?? { missing: NO_RUNTIME },
      kind: kind as 'Service' | 'ScalingPolicy' | 'Configuration',
      row,
      settle: (status, extra) => settle(env, finish, kind, row, status as ObservedStatus, extra),
      drifted: (trx, ctx, data) => recordStatusEvent(trx, ctx, target(kind, row), 'drifted', data),
      enqueue: (trx, k, objectId, tenantId) =>
        enqueueJob(trx, { kind: k, objectId, tenantId, generation: 0 }),
    }),
  // Catalogue entries (customers, systems, placement objects, webhook endpoints): nothing to provision.
  accept: (env, kind, row, finish) =>
    settle(
      env,
      finish,
      kind,
      row,
      row.deleted_at
        ? deletedStatus('nothing was provisioned')
        : {
            phase: 'Ready',
            ready: { status: 'True', reason: 'Accepted', message: 'Recorded; nothing to provision.' },
          },
    ),
};

const deletedStatus = (what: string): ObservedStatus => ({
  phase: 'Deleted',
  ready: { status: 'False', reason: 'Deleted', message: `Deleted (${what}); the tombstone is kept.` },
});

/**
 * Writes status; on a transition that matters records it and pokes the parents (settle.ts's
 * settleAll, of this one object, in a transaction of its own; or with the other settlements of its
 * batch when the reconcile runs in one: `env.settler`). `finish` ends the job in the same transaction.
 * `actedSuspended`: see Settlement; when the lifecycle moved, nothing is written and LifecycleMoved
 * is thrown.
 */
export async function settle(
  env: Pick<ReconcileEnv, 'db' | 'context' | 'settler'>,
  finish: Finish | undefined,
  kind: Kind,
  row: ObjectRow,
  status: ObservedStatus,
  extra?: (trx: Trx, ctx: RequestContext) => Promise<void>,
  actedSuspended?: boolean,
): Promise<ReconcileResult> {
  const s: Settlement = {
    kind,
    row,
    status,
    ...(extra ? { extra } : {}),
    ...(actedSuspended !== undefined ? { actedSuspended } : {}),
  };
  const finalised = status.phase === 'Deleted';
  const settled = env.settler
    ? await env.settler(s, finish !== undefined)
    : await asPlatform(env.db, async (trx) => {
        const [r] = await settleAll(trx, [s], env.context);
        if (!r!.moved && finish) await finish(trx, finalised);
        return r!;
      });
  if (settled.moved) throw new LifecycleMoved();
  return { finalised, finished: finish !== undefined };
}

/** Status after a failed attempt (the controller decides retry or final). */
export async function settleFailure(
  env: ReconcileEnv,
  job: ReconcileJob,
  err: ProviderError,
  final: boolean,
  retryInMs: number,
): Promise<void> {
  const row = await load(env.db, job.kind, job.objectId);
  if (!row || row.phase === 'Deleted') return;
  const message = final
    ? `${err.message} (gave up after ${job.attempts + 1} attempt(s); tried again at the next resync)`
    : `${err.message} (attempt ${job.attempts + 1} failed; retrying in ${Math.ceil(retryInMs / 1000)}s)`;
  const phase = row.deleted_at ? 'Terminating' : final ? 'Failed' : 'Provisioning';
  await settle(env, undefined, job.kind, row, {
    phase,
    ready: { status: 'False', reason: err.reason, message },
  });
}

/** The facts of a resource's tenant and scope that its desired state is resolved from. */
export interface ResourceFacts {
  tenant_slug: string;
  region: string;
  suspended: boolean;
  scope_slug: string;
  consumers: string[] | null;
  /** The tenant's cell has an agent (src/agent): the control plane calls no provider for it. */
  agent_managed: boolean;
}

/** The SQL of ResourceFacts for `r` (an integration_resources row) joined to its tenant `t`. */
export const resourceFactsSql = sql`t.slug as tenant_slug, t.region,
  ${suspendedSql} as suspended,
  coalesce((select d.slug from deployments d where d.id = r.deployment_id), t.slug) as scope_slug,
  (select array_agg(c.slug order by c.slug) from deployments c
    where c.tenant_id = t.id and c.deleted_at is null
      and c.slug in (select jsonb_array_elements_text(coalesce(r.spec->'kafkaTopic'->'consumers', '[]'::jsonb)))
  ) as consumers,
  exists (select 1 from cell_agents a where a.cell_id = t.cell_id) as agent_managed`;

/** A resource's desired state as a provider takes it (pure). */
export function toDesired(row: ObjectRow, x: ResourceFacts): DesiredResource {
  const spec = row.spec as Specs['IntegrationResource'];
  const topic = spec.kafkaTopic;
  return {
    id: row.id,
    type: spec.type as ResourceType,
    tenantId: String(row.tenant_id),
    tenantSlug: x.tenant_slug,
    scopeSlug: x.scope_slug,
    physicalName: String(row.physical_name),
    ...(topic
      ? {
          kafkaTopic: {
            partitions: topic.partitions ?? DEFAULT_PARTITIONS,
            replicationFactor: topic.replicationFactor ?? 1,
            retentionMs: topic.retentionMs ?? null,
            consumers: x.consumers ?? [],
          },
        }
      : {}),
    ...(spec.database ? { database: { isolation: spec.database.isolation } } : {}),
    ...(x.suspended ? { suspended: true } : {}),
  };
}

export async function desiredResource(
  trx: Trx,
  row: ObjectRow,
): Promise<{ desired: DesiredResource; region: string; agentManaged: boolean }> {
  return (await desiredResources(trx, [row])).get(row.id.toLowerCase())!;
}

/** desiredResource of many resources in one statement, by lower-case id. */
async function desiredResources(
  trx: Trx,
  rows: ObjectRow[],
): Promise<Map<string, { desired: DesiredResource; region: string; agentManaged: boolean }>> {
  const r = await sql<ResourceFacts & { id: string }>`
    select r.id, ${resourceFactsSql}
    from integration_resources r join tenants t on t.id = r.tenant_id
    where r.id = any(${rows.map((x) => x.id)}::uuid[])`.execute(trx);
  const facts = new Map(r.rows.map((x) => [String(x.id).toLowerCase(), x]));
  const out = new Map<string, { desired: DesiredResource; region: string; agentManaged: boolean }>();
  for (const row of rows) {
    const x = facts.get(row.id.toLowerCase());
    if (x)
      out.set(row.id.toLowerCase(), {
        desired: toDesired(row, x),
        region: x.region,
        agentManaged: x.agent_managed,
      });
  }
  return out;
}

/** One provider call in its own client span (`provider kafka ensure`), never with secrets. */
function providerCall<Op extends 'observe' | 'ensure' | 'delete'>(
  env: Pick<ReconcileEnv, 'limit'>,
  provider: ResourceProvider,
  op: Op,
  desired: DesiredResource,
): ReturnType<ResourceProvider[Op]> {
  const call = () =>
    inSpan(
      `provider ${provider.name} ${op}`,
      {
        'tenantry.resource_type': desired.type,
        'tenantry.object_id': desired.id,
        'tenantry.tenant_id': desired.tenantId,
      },
      () => provider[op](desired) as Promise<never>,
      SpanKind.CLIENT,
    );
  return (env.limit ? env.limit(call) : call()) as ReturnType<ResourceProvider[Op]>;
}

const retained = (db: Db, tenantId: string) =>
  asPlatform(db, async (trx) => {
    const r = await sql`
      select 1 from tenant_retention r where r.tenant_id = ${tenantId} and r.purged_at is null
        and (r.resources_purge_after > now()
             or exists (select 1 from legal_holds h where h.tenant_id = r.tenant_id and h.released_at is null))`.execute(
      trx,
    );
    return r.rows.length > 0;
  });

/** The lifecycle a provider call acted on changed before its status was written: act again. */
class LifecycleMoved extends Error {
  constructor() {
    super('the tenant lifecycle changed during the provider call');
  }
}

async function reconcileResource(
  env: ReconcileEnv,
  row: ObjectRow,
  { desired, region, agentManaged }: Awaited<ReturnType<typeof desiredResource>>,
  finish?: Finish,
): Promise<ReconcileResult> {
  // The cell's agent (src/agent) runs the providers and reports this object's status itself.
  if (agentManaged) return { finalised: false, finished: false };
  const slot = slotFor(env.providers, desired.type, region);
  if (row.deleted_at) {
    // An archived tenant's resources are kept while its retention window is open or a legal hold
    // is in force: the purge workflow removes them then, not the reconcile (src/workflows/retention.ts).
    if (await retained(env.db, desired.tenantId))
      return settle(env, finish, 'IntegrationResource', row, {
        phase: 'Deleted',
        ready: {
          status: 'False',
          reason: 'Retained',
          message: "Deleted; kept under the tenant's retention until it is purged.",
        },
      });
    if ('provider' in slot) await providerCall(env, slot.provider, 'delete', desired);
    const what = 'provider' in slot ? `removed from ${slot.provider.name}` : 'no provider was configured';
    return settle(env, finish, 'IntegrationResource', row, deletedStatus(what));
  }
  if (!('provider' in slot)) throw new ProviderError(slot.missing, 'ProviderNotConfigured', false);
  const provider = slot.provider;
  const before = await providerCall(env, provider, 'observe', desired);
  let after = before;
  let current = desired;
  if (!before.exists || before.drift.length > 0) after = await providerCall(env, provider, 'ensure', current);
  const wasProvisioned = row.phase === 'Ready';
  const drifted = wasProvisioned && (!before.exists || before.drift.length > 0);
  // A suspension or resume commits the tenant's lifecycle and then revokes or restores access in its
  // workflow; a reconcile that read the lifecycle before that commit must not undo the workflow's
  // step afterwards (NOLOGIN after the resume gave LOGIN back). So the status write reads the
  // lifecycle again under the tenant's write lock (which the lifecycle change takes too), and when
  // it changed, abandons the write, repeats the call and tries again: whichever order the two run
  // in, the last word on access is the committed lifecycle's.
  for (let round = 0; ; round++) {
    if (!after.exists || after.drift.length > 0) {
      throw new ProviderError(
        `${provider.name} still differs after ensure: ${after.drift.join('; ') || 'missing'}`,
        'DriftPersists',
        true,
      );
    }
    try {
      return await settle(
        env,
        finish,
        'IntegrationResource',
        row,
        {
          phase: 'Ready',
          ready: provisionedCondition(provider.name, after.details),
        },
        drifted
          ? (trx, ctx) =>
              recordStatusEvent(trx, ctx, target('IntegrationResource', row), 'drifted', {
                previousPhase: row.phase,
                phase: 'Ready',
                reason: 'DriftRepaired',
                message: `${provider.name} repaired the resource`,
                drift: before.exists ? before.drift : ['the resource was missing'],
              })
          : undefined,
        round < 2 ? Boolean(current.suspended) : undefined,
      );
    } catch (err) {
      if (!(err instanceof LifecycleMoved)) throw err;
      current = (await asPlatform(env.db, (trx) => desiredResource(trx, row))).desired;
      after = await providerCall(env, provider, 'ensure', current);
    }
  }
}

/**
 * Parents' dependents, by the parent's lower-case id: a deployment's resources; a tenant's resources
 * and deployments. Both tables' keys lead with tenant_id, so the tenant narrows every lookup.
 */
async function childrenOfMany(trx: Trx, kind: Kind, rows: ObjectRow[]): Promise<Map<string, ChildRow[]>> {
  const cols = sql`slug, phase, conditions, deleted_at`;
  const r =
    kind === 'Tenant'
      ? await sql<ChildRow & { parent: string }>`
          select tenant_id as parent, ${cols} from integration_resources where tenant_id = any(${rows.map((x) => x.id)}::uuid[])
          union all
          select tenant_id, ${cols} from deployments where tenant_id = any(${rows.map((x) => x.id)}::uuid[])`.execute(
          trx,
        )
      : await sql<ChildRow & { parent: string }>`
          select r.deployment_id as parent, ${sql.raw('r.slug, r.phase, r.conditions, r.deleted_at')}
          from unnest(${rows.map((x) => String(x.tenant_id))}::uuid[], ${rows.map((x) => x.id)}::uuid[]) as p(tenant_id, id)
          join integration_resources r on r.tenant_id = p.tenant_id and r.deployment_id = p.id`.execute(trx);
  const out = new Map<string, ChildRow[]>();
  for (const { parent, ...c } of r.rows) {
    const key = String(parent).toLowerCase();
    out.set(key, [...(out.get(key) ?? []), c]);
  }
  return out;
}

/** Deployments and tenants: Ready when their own state is realised and all their resources are. */
async function reconcileParent(
  env: ReconcileEnv,
  kind: 'Deployment' | 'Tenant',
  row: ObjectRow,
  children: ChildRow[],
  finish?: Finish,
): Promise<ReconcileResult> {
  if (row.deleted_at) {
    const pending = children.filter((c) => c.phase !== 'Deleted');
    if (pending.length > 0) {
      return settle(env, finish, kind, row, {
        phase: 'Terminating',
        ready: {
          status: 'False',
          reason: 'WaitingForDependents',
          message: `Deleting; waiting for ${pending.length} dependent object(s): ${names(pending)}.`,
        },
      });
    }
    return settle(env, finish, kind, row, deletedStatus('after its dependents'));
  }
  if (kind === 'Tenant' && row.lifecycle !== 'Active') {
    const lifecycle = row.lifecycle as 'Draft' | 'Suspended' | 'Archived';
    return settle(env, finish, kind, row, {
      phase: lifecycle,
      ready:
        lifecycle === 'Draft'
          ? { status: 'False', reason: 'Draft', message: 'The tenant is a draft; activate it to use it.' }
          : {
              status: 'True',
              reason: lifecycle,
              message: `The tenant is ${lifecycle.toLowerCase()}; its resources are kept and its credentials revoked.`,
            },
    });
  }
  const notReady = children.filter((c) => c.deleted_at === null && c.phase !== 'Ready');
  if (notReady.length > 0) {
    return settle(env, finish, kind, row, {
      phase: 'Provisioning',
      ready: {
        status: 'False',
        reason: 'DependentsNotReady',
        message: `${notReady.length} of ${children.filter((c) => !c.deleted_at).length} dependent object(s) not Ready: ${names(notReady)}.`,
      },
    });
  }
  return settle(env, finish, kind, row, {
    phase: 'Ready',
    ready: { status: 'True', reason: 'Provisioned', message: 'All dependent objects are Ready.' },
  });
}

function names(rows: ChildRow[]): string {
  const shown = rows.slice(0, 5).map((c) => {
    const ready = c.conditions.find((x) => x.type === 'Ready');
    return `${c.slug} (${c.phase}${ready ? `: ${ready.reason}` : ''})`;
  });
  return shown.join(', ') + (rows.length > 5 ? `, and ${rows.length - 5} more` : '');
}
