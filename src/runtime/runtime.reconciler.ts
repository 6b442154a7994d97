import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { canonicalJson, configChecksum } from '../domain/config-checksum.js';
import { effectiveLimits } from '../placement/quotas.js';
import { ProviderError } from '../providers/provider.js';
import type { Specs } from '../registry/kinds/index.js';
import type { ObjectRow } from '../registry/object.repository.js';
import { instanceNameOf, replicaBaseName } from './replica-names.js';
import type { DesiredService, ObservedService, RuntimeProvider } from './runtime-provider.js';

/** What the controller gives a runtime reconcile (src/controller/reconcilers.ts builds it). */
export interface RuntimeReconcile<R> {
  db: Db;
  runtime: { provider: RuntimeProvider } | { missing: string };
  kind: 'Service' | 'ScalingPolicy' | 'Configuration';
  row: ObjectRow;
  /** Writes status (and `extra` in the same transaction); ends the job. */
  settle(
    status: { phase: string; ready: { status: 'True' | 'False'; reason: string; message: string } },
    extra?: (trx: Trx, ctx: RequestContext) => Promise<void>,
  ): Promise<R>;
  /** Records the object's `drifted` status event inside the status transaction. */
  drifted(
    trx: Trx,
    ctx: RequestContext,
    data: { previousPhase: string; phase: string; reason: string; message: string; drift: string[] },
  ): Promise<void>;
  enqueue(trx: Trx, kind: 'Service', objectId: string, tenantId: string): Promise<void>;
}

const deleted = (what: string) => ({
  phase: 'Deleted',
  ready: {
    status: 'False' as const,
    reason: 'Deleted',
    message: `Deleted (${what}); the tombstone is kept.`,
  },
});

/**
 * Level-triggered reconcile of the runtime inventory:
 * - Service: resolve the desired state (image, replicas, the tenant's binding quota and partition,
 *   its scaling policy, its configuration version) and make the compute target run it. Drift seen on
 *   a service that was Ready opens a drift finding; the repair resolves it (by the controller).
 * - ScalingPolicy: accepted; its service is reconciled again.
 * - Configuration: settles draft / active / superseded for all versions of its name (the newest
 *   active version is active), then reconciles the tenant's services that follow that configuration.
 */
export async function reconcileRuntime<R>(r: RuntimeReconcile<R>): Promise<R> {
  if (r.kind === 'ScalingPolicy') {
    const serviceId = String(r.row.service_id);
    return r.settle(
      r.row.deleted_at
        ? deleted('its service returns to fixed replicas')
        : {
            phase: 'Ready',
            ready: { status: 'True', reason: 'Accepted', message: 'Applied through its service.' },
          },
      (trx) => r.enqueue(trx, 'Service', serviceId, String(r.row.tenant_id)),
    );
  }
  if (r.kind === 'Configuration') return reconcileConfiguration(r);
  return reconcileService(r);
}

async function reconcileConfiguration<R>(r: RuntimeReconcile<R>): Promise<R> {
  const tenantId = String(r.row.tenant_id);
  const name = String(r.row.config_name);
  return r.settle(
    r.row.deleted_at
      ? deleted('the version is no longer offered')
      : {
          phase: 'Ready',
          ready: { status: 'True', reason: 'Recorded', message: `Version ${r.row.version} of "${name}".` },
        },
    async (trx) => {
      await sql`
        update configurations c set version_state = case
            when c.spec->>'state' = 'draft' then 'draft'
            when c.version = (select max(version) from configurations a
                              where a.tenant_id = c.tenant_id and a.config_name = c.config_name
                                and a.deleted_at is null and a.spec->>'state' = 'active') then 'active'
            else 'superseded' end
        where c.tenant_id = ${tenantId} and c.config_name = ${name}`.execute(trx);
      const services = await sql<{ id: string }>`
        select id from services where tenant_id = ${tenantId} and deleted_at is null
          and spec->'configuration'->>'name' = ${name}`.execute(trx);
      for (const s of services.rows) await r.enqueue(trx, 'Service', s.id, tenantId);
    },
  );
}

/** The service as the compute target should run it, resolved from the registry in one transaction. */
export async function desiredService(trx: Trx, row: ObjectRow): Promise<DesiredService> {
  const spec = row.spec as Specs['Service'];
  const r = await sql<{
    tenant_slug: string;
    deployment_slug: string;
    tenant_spec: { region: string; environmentType: string; qualifier?: string };
    deployment_qualifier: string | null;
    system_slug: string;
    placement: { networkPartition?: string } | null;
    policy: Specs['ScalingPolicy'] | null;
  }>`
    select t.slug as tenant_slug, d.slug as deployment_slug, t.placement, t.spec as tenant_spec,
      d.qualifier as deployment_qualifier, y.slug as system_slug,
      (select p.spec from scaling_policies p where p.service_id = ${row.id} and p.deleted_at is null) as policy
    from tenants t join deployments d on d.tenant_id = t.id and d.id = ${String(row.deployment_id)}
      join systems y on y.id = d.system_id
    where t.id = ${String(row.tenant_id)}`.execute(trx);
  const x = r.rows[0];
  if (!x) throw new ProviderError('the service has no live deployment or tenant', 'ParentMissing', false);
  const limits = await effectiveLimits(trx, String(row.tenant_id));
  let configuration: DesiredService['configuration'];
  if (spec.configuration) {
    const { name, version } = spec.configuration;
    const c = await sql<{ version: number; checksum: string; spec: Specs['Configuration'] }>`
      select version, checksum, spec from configurations
      where tenant_id = ${String(row.tenant_id)} and config_name = ${name} and deleted_at is null
        and ${version === undefined ? sql`version_state = 'active'` : sql`version = ${version}`}
      order by version desc limit 1`.execute(trx);
    const found = c.rows[0];
    if (!found)
      throw new ProviderError(
        version === undefined
          ? `configuration "${name}" has no active version`
          : `configuration "${name}" has no version ${version}`,
        'ConfigurationNotFound',
        false,
      );
    configuration = {
      name,
      version: found.version,
      checksum: found.checksum,
      canonical: canonicalJson(found.spec.content),
    };
  }
  return {
    id: row.id,
    slug: row.slug,
    tenantId: String(row.tenant_id),
    tenantSlug: x.tenant_slug,
    deploymentSlug: x.deployment_slug,
    component: spec.component,
    replicaBase: replicaBaseName({
      system: x.system_slug,
      region: x.tenant_spec.region,
      environmentType: x.tenant_spec.environmentType,
      qualifiers: [x.tenant_spec.qualifier, x.deployment_qualifier],
      instance: spec.instanceName ?? instanceNameOf(row.id),
    }),
    image: spec.image,
    version: spec.version,
    replicas: spec.replicas,
    unitCost: spec.unitCost ?? 1,
    ...(spec.command ? { command: spec.command } : {}),
    binding: {
      computeUnits: limits?.quotas.computeUnits?.limit ?? null,
      // An unplaced tenant (no cells defined) is a partition of its own.
      networkPartition: x.placement?.networkPartition ?? x.tenant_slug,
    },
    ...(x.policy
      ? {
          scaling: {
            metric: x.policy.metric,
            minReplicas: x.policy.minReplicas,
            maxReplicas: x.policy.maxReplicas,
            targetUtilization: x.policy.targetUtilization,
          },
        }
      : {}),
    ...(configuration ? { configuration } : {}),
  };
}

const observedJson = (o: ObservedService, d: DesiredService, target: string) =>
  JSON.stringify({
    target,
    desired: configChecksum(d),
    replicas: o.replicas,
    namespace: d.tenantSlug,
    ...(d.configuration
      ? {
          configuration: {
            name: d.configuration.name,
            version: d.configuration.version,
            checksum: d.configuration.checksum,
          },
        }
      : {}),
    observedAt: new Date().toISOString(),
  });

/**
 * The runtime's health report of a deployment, what promotion verification reads
 * (`deployment_health`): from what the compute target observed of its live services' replicas —
 * on the local-process target, their `/healthz` answers — the replicas ready on their service's
 * version against those desired, written in the reconcile's status transaction. Only when every
 * service of the deployment is on one version (mid-rollout there is no single version to report).
 * The target measures readiness, not requests: an error rate reported for the same version
 * (`POST /v1/deployments/{ref}/health`) is kept; a new version starts at 0.
 */
export async function reportDeploymentHealth(
  trx: Trx,
  tenantId: string,
  deploymentId: string,
): Promise<void> {
  await sql`
    insert into deployment_health as h (tenant_id, deployment_id, version, ready_replicas, desired_replicas, error_rate)
    select s.tenant_id, s.deployment_id, min(s.spec ->> 'version'),
      sum((select count(*) from jsonb_array_elements(coalesce(s.observed -> 'replicas' -> 'items', '[]')) i
           where (i ->> 'ready')::boolean and i ->> 'version' = s.spec ->> 'version'))::int,
      sum(coalesce((s.observed -> 'replicas' ->> 'desired')::int, 0))::int, 0
    from services s
    where s.tenant_id = ${tenantId} and s.deployment_id = ${deploymentId} and s.deleted_at is null
    group by s.tenant_id, s.deployment_id
    having count(distinct s.spec ->> 'version') = 1
    on conflict (tenant_id, deployment_id) do update set version = excluded.version,
      ready_replicas = excluded.ready_replicas, desired_replicas = excluded.desired_replicas,
      error_rate = case when h.version = excluded.version then h.error_rate else 0 end, reported_at = now()`.execute(
    trx,
  );
}

async function reconcileService<R>(r: RuntimeReconcile<R>): Promise<R> {
  const { row } = r;
  const desired = await asPlatform(r.db, (trx) => desiredService(trx, row));
  if (row.deleted_at) {
    if ('provider' in r.runtime) await r.runtime.provider.delete(desired);
    return r.settle(
      deleted(
        'provider' in r.runtime
          ? `removed from ${r.runtime.provider.name}`
          : 'no compute target was configured',
      ),
      async (trx) => {
        await sql`update drift_findings set resolved_at = now(), resolved_by = 'controller: service deleted'
          where tenant_id = ${desired.tenantId} and object_id = ${row.id} and resolved_at is null`.execute(
          trx,
        );
      },
    );
  }
  if (!('provider' in r.runtime)) throw new ProviderError(r.runtime.missing, 'ProviderNotConfigured', false);
  const provider = r.runtime.provider;
  const before = await provider.observe(desired);
  // Drift is the real state moving away from a desired state that was already realised: a change of
  // the desired state itself (the manifest, its policy, the active configuration, the quota) is not.
  const realised = (row.observed as { desired?: string } | null)?.desired;
  const wasProvisioned = row.phase === 'Ready' && realised === configChecksum(desired);
  const drift = before.exists
    ? before.drift
    : ['the service is not running on the compute target', ...before.drift];
  if (wasProvisioned && drift.length > 0) {
    // Opened before the repair, so that a repair that fails leaves the finding open.
    await asPlatform(r.db, (trx) =>
      sql`insert into drift_findings (tenant_id, object_kind, object_id, object_slug, drift)
        select ${desired.tenantId}, 'Service', ${row.id}, ${row.slug}, ${JSON.stringify(drift)}
        where not exists (select 1 from drift_findings where tenant_id = ${desired.tenantId}
                          and object_id = ${row.id} and resolved_at is null)`.execute(trx),
    );
  }
  const after = before.exists && before.drift.length === 0 ? before : await provider.ensure(desired);
  if (!after.exists || after.drift.length > 0)
    throw new ProviderError(
      `${provider.name} still differs after ensure: ${after.drift.join('; ') || 'missing'}`,
      'DriftPersists',
      true,
    );
  const rep = after.replicas;
  return r.settle(
    {
      phase: 'Ready',
      ready: {
        status: 'True',
        reason: 'Provisioned',
        message: `${provider.name}: ${rep.desired} replica(s) desired, ${rep.current} exist, ${rep.ready} ready (namespace ${desired.tenantSlug}).`,
      },
    },
    async (trx, ctx) => {
      await sql`update services set observed = ${observedJson(after, desired, provider.name)}::jsonb
        where tenant_id = ${desired.tenantId} and id = ${row.id}`.execute(trx);
      await reportDeploymentHealth(trx, desired.tenantId, String(row.deployment_id));
      await sql`update drift_findings set resolved_at = now(), resolved_by = ${`controller: ${provider.name} ensure`}
        where tenant_id = ${desired.tenantId} and object_id = ${row.id} and resolved_at is null`.execute(trx);
      if (wasProvisioned && drift.length > 0)
        await r.drifted(trx, ctx, {
          previousPhase: row.phase,
          phase: 'Ready',
          reason: 'DriftRepaired',
          message: `${provider.name} repaired the service`,
          drift,
        });
    },
  );
}
