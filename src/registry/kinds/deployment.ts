import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { deploymentSlug } from '../../domain/identifiers.js';
import { Segment, Slug, strict, Text } from '../../domain/manifest.js';
import { byRef, checkName, col, defineKind, ref, slugPrefix, tooLong } from './kind.js';

export const DeploymentSpec = Type.Object(
  {
    tenant: Slug,
    system: Segment,
    qualifier: Type.Optional(Segment),
    description: Type.Optional(Text(2000)),
    parameters: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z][A-Za-z0-9]{0,62}$' }), Type.String({ maxLength: 1024 }), {
        maxProperties: 64,
      }),
    ),
  },
  strict,
);

/** A deployment: one system deployed for one tenant. */
export const deployment = defineKind({
  kind: 'Deployment',
  table: 'deployments',
  path: 'deployments',
  spec: DeploymentSpec,
  immutable: ['tenant', 'system', 'qualifier'],
  scope: 'tenant',
  parents: [
    { kind: 'Tenant', column: 'tenant_id', onDelete: 'cascade' },
    {
      kind: 'System',
      column: 'system_id',
      onDelete: {
        refuse: { code: 'system.in_use', message: (slug) => `System "${slug}" still has deployments.` },
      },
    },
  ],
  references: ['Tenant', 'System'],
  tenantMentions: [{ at: '/spec/tenant' }],
  applyTier: 1,
  async resolve(m, env) {
    const { spec } = m;
    const tenant = await ref(env, 'Tenant', spec.tenant, '/spec/tenant', 'tenant.not_found');
    const system = await ref(env, 'System', spec.system, '/spec/system', 'system.not_found');
    if (!tenant || !system) return undefined;
    if (tenant.lifecycle === 'Archived') {
      env.error('/spec/tenant', 'tenant.archived', `tenant "${spec.tenant}" is archived`);
      return undefined;
    }
    const slug = deploymentSlug(tenant.slug, system.slug, spec.qualifier);
    if (tooLong(slug, env) || !checkName(m, slug, env)) return undefined;
    return {
      slug,
      tenant: tenant.id,
      columns: { tenant_id: tenant.id, system_id: system.id, qualifier: spec.qualifier ?? null },
    };
  },
  filters: {
    tenant: (v) => sql`tenant_id in ${byRef('tenants', v)}`,
    system: (v) => sql`system_id in ${byRef('systems', v)}`,
    customer: (v) => sql`tenant_id in (select id from tenants where customer_id in ${byRef('customers', v)})`,
    region: (v) => sql`tenant_id in (select id from tenants where region = ${v})`,
    environmentType: (v) => sql`tenant_id in (select id from tenants where environment_type = ${v})`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
  },
  represent: { metadata: (row) => (row.tenant_id ? { tenantUuid: row.tenant_id } : {}) },
  reconciler: 'parent',
  backfill: true,
  events: ['created', 'updated', 'deleted', 'ready', 'failed'],
  cli: {
    name: 'deployment',
    aliases: ['deployment', 'deployments', 'deploy'],
    columns: [col.name, col.spec('TENANT', 'tenant'), col.spec('SYSTEM', 'system'), col.phase, col.age],
    wide: [col.uuid, col.spec('QUALIFIER', 'qualifier'), col.generation, col.reason],
  },
});
