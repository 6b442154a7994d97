import { SpanKind } from '@opentelemetry/api';
import { sql } from 'kysely';
import { lockTenantWrites } from '../changes/tenant-write-lock.js';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { inSpan } from '../observability/tracing.js';
import {
  type DesiredResource,
  type ObservedResource,
  ProviderError,
  type ResourceProvider,
  type ResourceType,
} from '../providers/provider.js';
import { definitionOf, type Kind, type Specs } from '../registry/kinds/index.js';
import { DEFAULT_PARTITIONS } from '../registry/kinds/integration-resource.js';
import type { ReconcilerName } from '../registry/kinds/kind.js';
import { findById, type ObjectRow } from '../registry/object.repository.js';
import type { Condition } from '../registry/representation.js';
import { reconcileRuntime } from '../runtime/runtime.reconciler.js';
import { NO_RUNTIME, type ProviderSet, slotFor } from './providers.js';
import { enqueueJob } from './queue/enqueue-job.js';
import type { ReconcileJob } from './queue/job.js';
import type { Finish } from './queue/job-types.js';
import { pokeParents } from './queue/poke-parents.js';
import { type ObservedStatus, recordStatusEvent, type StatusTarget, writeStatus } from './status.js';

export interface ReconcileEnv {
  db: Db;
  providers: ProviderSet;
  /** A fresh system context per reconcile (request and correlation ids). */
  context: () => RequestContext;
}

export interface ReconcileResult {
  /** The object is a finalised tombstone: its job can go. */
  finalised: boolean;
  /** The job was already ended inside the status transaction (see `Finish`). */
  finished: boolean;
}

/** Ends the job in the status write's own transaction: status and job release commit together. */
export type { Finish };

interface ChildRow {
  slug: string;
  phase: string;
  conditions: Condition[];
  deleted_at: Date | null;
}

export const target = (kind: Kind, row: ObjectRow): StatusTarget => ({
  kind,
  id: row.id,
  slug: row.slug,
  tenantId: kind === 'Tenant' ? row.id : (row.tenant_id ?? null),
  generation: row.generation,
  phase: row.phase,
  conditions: (row.conditions as Condition[]) ?? [],
});

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
): Promise<ReconcileResult> {
  const name = definitionOf(job.kind).reconciler;
  // One read transaction: the row, and what its reconciler reads besides (a resource's facts, a
  // parent's dependents), rather than one transaction each.
  const loaded = await asPlatform(env.db, async (trx) => {
    const row = await findById(trx, job.kind, job.objectId, { includeDeleted: true });
    if (!row || row.phase === 'Deleted') return undefined;
    return {
      row,
      resource: name === 'resource' ? await desiredResource(trx, row) : undefined,
      children: name === 'parent' ? await childrenOf(trx, job.kind, row) : undefined,
    };
  });
  if (!loaded) return { finalised: true, finished: false };
  const { row, resource, children } = loaded;
  if (resource) return reconcileResource(env, row, resource, finish);
  if (children) return reconcileParent(env, job.kind as 'Tenant' | 'Deployment', row, children, finish);
  return RECONCILERS[name](env, job.kind, row, finish);
}

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
      await asPlatform(env.db, (trx) => childrenOf(trx, kind, row)),
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
 * Writes status; on a transition that matters records it and pokes the parents. Lock order: the
 * tenant write lock, the object's row, the tenant's audit chain head and event sequence, the
 * parents' jobs, the object's own job (src/changes/tenant-write-lock.ts). `guard`, under the tenant
 * write lock and before anything is written, may throw to abandon the write (e.g. the lifecycle the
 * provider call acted on has changed meanwhile).
 */
export async function settle(
  env: Pick<ReconcileEnv, 'db' | 'context'>,
  finish: Finish | undefined,
  kind: Kind,
  row: ObjectRow,
  status: ObservedStatus,
  extra?: (trx: Trx, ctx: RequestContext) => Promise<void>,
  guard?: (trx: Trx) => Promise<void>,
): Promise<ReconcileResult> {
  const t = target(kind, row);
  await asPlatform(env.db, async (trx) => {
    // The tenant's write lock before the row, as every change of the tenant takes it (no deadlock).
    await lockTenantWrites(trx, t.tenantId);
    if (guard) await guard(trx);
    const ctx = env.context();
    const tr = await writeStatus(trx, t, status);
    if (extra) await extra(trx, ctx);
    const event = {
      previousPhase: t.phase,
      phase: status.phase,
      reason: status.ready.reason,
      message: status.ready.message,
    };
    if (tr.becameReady) await recordStatusEvent(trx, ctx, t, 'ready', event);
    if (tr.becameFailed) await recordStatusEvent(trx, ctx, t, 'failed', event);
    if (tr.changed && (kind === 'IntegrationResource' || kind === 'Deployment') && row.tenant_id)
      await pokeParents(trx, {
        tenantId: String(row.tenant_id),
        deploymentId: kind === 'IntegrationResource' && row.deployment_id ? String(row.deployment_id) : null,
        force: tr.becameFailed,
      });
    if (finish) await finish(trx, status.phase === 'Deleted');
  });
  return { finalised: status.phase === 'Deleted', finished: finish !== undefined };
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
  t.lifecycle in ('Suspended', 'Archived')
    or exists (select from tenant_migrations m where m.tenant_id = t.id and m.writes_frozen) as suspended,
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
  const r = await sql<ResourceFacts>`
    select ${resourceFactsSql}
    from integration_resources r join tenants t on t.id = r.tenant_id
    where r.id = ${row.id}`.execute(trx);
  const x = r.rows[0]!;
  return { desired: toDesired(row, x), region: x.region, agentManaged: x.agent_managed };
}

/** One provider call in its own client span (`provider kafka ensure`), never with secrets. */
function providerCall<Op extends 'observe' | 'ensure' | 'delete'>(
  provider: ResourceProvider,
  op: Op,
  desired: DesiredResource,
): ReturnType<ResourceProvider[Op]> {
  return inSpan(
    `provider ${provider.name} ${op}`,
    {
      'tenantry.resource_type': desired.type,
      'tenantry.object_id': desired.id,
      'tenantry.tenant_id': desired.tenantId,
    },
    () => provider[op](desired) as Promise<never>,
    SpanKind.CLIENT,
  ) as ReturnType<ResourceProvider[Op]>;
}

const summary = (o: ObservedResource): string =>
  Object.entries(o.details)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(', ');

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
  constructor(readonly desired: DesiredResource) {
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
    if ('provider' in slot) await providerCall(slot.provider, 'delete', desired);
    const what = 'provider' in slot ? `removed from ${slot.provider.name}` : 'no provider was configured';
    return settle(env, finish, 'IntegrationResource', row, deletedStatus(what));
  }
  if (!('provider' in slot)) throw new ProviderError(slot.missing, 'ProviderNotConfigured', false);
  const provider = slot.provider;
  const before = await providerCall(provider, 'observe', desired);
  let after = before;
  let current = desired;
  if (!before.exists || before.drift.length > 0) after = await providerCall(provider, 'ensure', current);
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
    const acted = current;
    const guard =
      round < 2
        ? async (trx: Trx) => {
            const again = (await desiredResource(trx, row)).desired;
            if (Boolean(again.suspended) !== Boolean(acted.suspended)) throw new LifecycleMoved(again);
          }
        : undefined;
    try {
      return await settle(
        env,
        finish,
        'IntegrationResource',
        row,
        {
          phase: 'Ready',
          ready: { status: 'True', reason: 'Provisioned', message: `${provider.name}: ${summary(after)}` },
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
        guard,
      );
    } catch (err) {
      if (!(err instanceof LifecycleMoved)) throw err;
      current = err.desired;
      after = await providerCall(provider, 'ensure', current);
    }
  }
}

/** A parent's dependents: a deployment's resources; a tenant's resources and deployments. */
async function childrenOf(trx: Trx, kind: Kind, row: ObjectRow): Promise<ChildRow[]> {
  // Both tables' keys lead with tenant_id, so the tenant narrows every lookup to one tenant's rows.
  const tenantId = kind === 'Tenant' ? row.id : String(row.tenant_id);
  const r = await sql<ChildRow>`
    select slug, phase, conditions, deleted_at from integration_resources
    where tenant_id = ${tenantId} ${kind === 'Deployment' ? sql`and deployment_id = ${row.id}` : sql``}
    ${
      kind === 'Tenant'
        ? sql`union all select slug, phase, conditions, deleted_at from deployments where tenant_id = ${tenantId}`
        : sql``
    }`.execute(trx);
  return r.rows;
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
