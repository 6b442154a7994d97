import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { Segment, Slug, strict } from '../../domain/manifest.js';
import { byRef, checkName, col, defineKind, ref, slugPrefix, tooLong } from './kind.js';

export const IMAGE_BY_DIGEST = '^[a-z0-9][a-z0-9._/:-]{0,200}@sha256:[a-f0-9]{64}$';

export const ServiceSpec = Type.Object(
  {
    deployment: Slug,
    component: Segment,
    image: Type.String({ pattern: IMAGE_BY_DIGEST, description: 'by digest: `registry/name@sha256:…`' }),
    version: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$' }),
    replicas: Type.Integer({ minimum: 0, maximum: 1000, description: 'desired replicas' }),
    unitCost: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1000,
        description: 'compute units one replica uses (of the binding quota computeUnits); default 1',
      }),
    ),
    instanceName: Type.Optional(
      Type.String({
        pattern: '^[a-z]{2,20}-[a-z]{2,20}$',
        description:
          'the `{adjective}-{animal}` of replica names (`plan-eu-prod_brave-wolf-1`); default: derived from the service UUID',
      }),
    ),
    command: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { maxItems: 64 })),
    configuration: Type.Optional(
      Type.Object(
        {
          name: Segment,
          version: Type.Optional(
            Type.Integer({ minimum: 1, description: 'pinned version; absent: the active version' }),
          ),
        },
        strict,
      ),
    ),
  },
  strict,
);

/** A service (seed 002 RuntimeService): one component of a deployment, run on a compute target. */
export const service = defineKind({
  kind: 'Service',
  table: 'services',
  path: 'services',
  spec: ServiceSpec,
  immutable: ['deployment', 'component'],
  scope: 'tenant',
  parents: [
    { kind: 'Tenant', column: 'tenant_id', onDelete: 'cascade' },
    { kind: 'Deployment', column: 'deployment_id', onDelete: 'cascade' },
  ],
  references: ['Deployment'],
  tenantMentions: [{ at: '/spec/deployment', via: 'Deployment' }],
  applyTier: 1,
  async resolve(m, env) {
    const { spec } = m;
    const d = await ref(env, 'Deployment', spec.deployment, '/spec/deployment', 'deployment.not_found');
    if (!d) return undefined;
    const slug = `${d.slug}-${spec.component}`;
    if (tooLong(slug, env) || !checkName(m, slug, env)) return undefined;
    return {
      slug,
      tenant: String(d.tenant_id),
      columns: { tenant_id: d.tenant_id, deployment_id: d.id, component: spec.component },
    };
  },
  filters: {
    tenant: (v) => sql`tenant_id in ${byRef('tenants', v)}`,
    deployment: (v) => sql`deployment_id in ${byRef('deployments', v)}`,
    component: (v) => sql`component = ${v}`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
  },
  represent: {
    metadata: (row) => (row.tenant_id ? { tenantUuid: row.tenant_id } : {}),
    status: (row) => (row.observed ? { observed: row.observed } : {}),
  },
  reconciler: 'runtime',
  backfill: true,
  events: ['created', 'updated', 'deleted', 'ready', 'failed', 'drifted'],
  cli: {
    name: 'service',
    aliases: ['service', 'services', 'svc'],
    columns: [
      col.name,
      col.spec('VERSION', 'version'),
      {
        header: 'REPLICAS',
        value: (o) => {
          const r = (o.status.observed as { replicas?: { ready: number; current: number } } | undefined)
            ?.replicas;
          return `${r ? `${r.ready}/${r.current}` : '-'} of ${o.spec?.replicas ?? ''}`;
        },
      },
      col.phase,
      col.age,
    ],
    wide: [col.uuid, col.spec('IMAGE', 'image'), col.generation, col.reason],
  },
});
