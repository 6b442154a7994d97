import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { Slug, strict } from '../../domain/manifest.js';
import { byRef, checkName, col, defineKind, ref, slugPrefix } from './kind.js';

const Replicas = Type.Integer({ minimum: 1, maximum: 1000 });
export const ScalingPolicySpec = Type.Object(
  {
    service: Slug,
    metric: Type.Union([Type.Literal('cpu'), Type.Literal('memory')]),
    minReplicas: Replicas,
    maxReplicas: Replicas,
    targetUtilization: Type.Integer({ minimum: 1, maximum: 100, description: 'percent of the request' }),
  },
  strict,
);

/**
 * A scaling policy: exactly one per service (its slug is the service's). Admission (src/runtime/
 * compute-quota.ts) refuses a maximum that the tenant's binding quota `computeUnits` cannot hold.
 */
export const scalingPolicy = defineKind({
  kind: 'ScalingPolicy',
  table: 'scaling_policies',
  path: 'scaling-policies',
  code: 'scaling_policy',
  spec: ScalingPolicySpec,
  immutable: ['service'],
  scope: 'tenant',
  parents: [
    { kind: 'Tenant', column: 'tenant_id', onDelete: 'cascade' },
    { kind: 'Service', column: 'service_id', onDelete: 'cascade' },
  ],
  references: ['Service'],
  tenantMentions: [{ at: '/spec/service', via: 'Service' }],
  applyTier: 1,
  async resolve(m, env) {
    const { spec } = m;
    const s = await ref(env, 'Service', spec.service, '/spec/service', 'service.not_found');
    if (spec.minReplicas > spec.maxReplicas) {
      env.error('/spec/minReplicas', 'scaling.bounds', 'minReplicas must not exceed maxReplicas');
      return undefined;
    }
    if (!s || !checkName(m, s.slug, env)) return undefined;
    return {
      slug: s.slug,
      tenant: String(s.tenant_id),
      columns: { tenant_id: s.tenant_id, service_id: s.id },
    };
  },
  filters: {
    tenant: (v) => sql`tenant_id in ${byRef('tenants', v)}`,
    service: (v) => sql`service_id in ${byRef('services', v)}`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
  },
  represent: { metadata: (row) => (row.tenant_id ? { tenantUuid: row.tenant_id } : {}) },
  reconciler: 'runtime',
  backfill: false,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'scalingpolicy',
    aliases: ['scalingpolicy', 'scalingpolicies', 'scaling-policy', 'scaling-policies', 'hpa'],
    columns: [
      col.name,
      col.spec('METRIC', 'metric'),
      { header: 'MIN/MAX', value: (o) => `${o.spec?.minReplicas}/${o.spec?.maxReplicas}` },
      { header: 'TARGET', value: (o) => `${o.spec?.targetUtilization}%` },
      col.phase,
      col.age,
    ],
    wide: [col.uuid, col.generation, col.reason],
  },
});
