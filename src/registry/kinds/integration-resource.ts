import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { kafkaTopicName } from '../../domain/identifiers.js';
import { Slug, strict } from '../../domain/manifest.js';
import { byRef, checkName, col, defineKind, ref, slugPrefix } from './kind.js';

const TopicPart = Type.String({ pattern: '^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$' });
export const KafkaTopicSpec = Type.Object(
  {
    domain: TopicPart,
    subdomain: TopicPart,
    event: TopicPart,
    version: Type.String({ pattern: '^v[1-9][0-9]{0,3}$' }),
    access: Type.String({ pattern: '^[a-z]{2,10}$', description: 'e.g. pub' }),
    partitions: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    replicationFactor: Type.Optional(Type.Integer({ minimum: 1, maximum: 10 })),
    retentionMs: Type.Optional(Type.Integer({ minimum: -1, maximum: 315_360_000_000 })),
    consumers: Type.Optional(
      Type.Array(Slug, { maxItems: 100, uniqueItems: true, description: 'consumer deployments (read ACLs)' }),
    ),
  },
  strict,
);
/** A topic's partitions when its spec names none. */
export const DEFAULT_PARTITIONS = 3;

export const BlobContainerSpec = Type.Object({ publicAccess: Type.Optional(Type.Literal('none')) }, strict);
export const DatabaseSpec = Type.Object(
  { isolation: Type.Union([Type.Literal('shared'), Type.Literal('pool'), Type.Literal('silo')]) },
  strict,
);

export const ResourceScope = Type.Union([
  Type.Object({ deployment: Slug }, strict),
  Type.Object({ tenant: Slug }, strict),
]);

export const IntegrationResourceSpec = Type.Object(
  {
    scope: ResourceScope,
    type: Type.Union([Type.Literal('kafka-topic'), Type.Literal('blob-container'), Type.Literal('database')]),
    kafkaTopic: Type.Optional(KafkaTopicSpec),
    blobContainer: Type.Optional(BlobContainerSpec),
    database: Type.Optional(DatabaseSpec),
  },
  strict,
);

/** An integration resource: a Kafka topic, blob container or database of a deployment or tenant. */
export const integrationResource = defineKind({
  kind: 'IntegrationResource',
  table: 'integration_resources',
  path: 'integration-resources',
  code: 'integration_resource',
  spec: IntegrationResourceSpec,
  immutable: [
    'scope',
    'type',
    'kafkaTopic/domain',
    'kafkaTopic/subdomain',
    'kafkaTopic/event',
    'kafkaTopic/version',
    'kafkaTopic/access',
    'database/isolation',
  ],
  scope: 'tenant',
  parents: [
    { kind: 'Tenant', column: 'tenant_id', onDelete: 'cascade' },
    { kind: 'Deployment', column: 'deployment_id', onDelete: 'cascade' },
  ],
  references: ['Deployment', 'Tenant'],
  tenantMentions: [{ at: '/spec/scope/tenant' }, { at: '/spec/scope/deployment', via: 'Deployment' }],
  applyTier: 1,
  async resolve(m, env) {
    const { spec } = m;
    const blocks = {
      'kafka-topic': 'kafkaTopic',
      'blob-container': 'blobContainer',
      database: 'database',
    } as const;
    const own = blocks[spec.type];
    let ok = true;
    for (const block of Object.values(blocks)) {
      if (block !== own && spec[block] !== undefined) {
        env.error(`/spec/${block}`, 'field.not_allowed', `not allowed for type ${spec.type}`);
        ok = false;
      }
    }
    if (spec.type !== 'blob-container' && spec[own] === undefined) {
      env.error(`/spec/${own}`, 'field.required', `required for type ${spec.type}`);
      ok = false;
    }
    const byDeployment = 'deployment' in spec.scope;
    const scopeSlug = 'deployment' in spec.scope ? spec.scope.deployment : spec.scope.tenant;
    const scope = byDeployment
      ? await ref(env, 'Deployment', scopeSlug, '/spec/scope/deployment', 'deployment.not_found')
      : await ref(env, 'Tenant', scopeSlug, '/spec/scope/tenant', 'tenant.not_found');
    if (!scope || !ok) return undefined;
    const tenantId = byDeployment ? String(scope.tenant_id) : scope.id;

    let slug: string;
    let physical: string;
    if (spec.type === 'kafka-topic') {
      const t = spec.kafkaTopic!;
      slug = [scope.slug, t.domain, t.subdomain, t.event, t.version, t.access].join('.');
      physical = kafkaTopicName(scope.id, t);
      // Kafka cannot shrink a topic: refused here, so that a dry run or diff shows it before any write.
      const existing = await env.findBySlug('IntegrationResource', slug);
      const before = (existing?.spec as { kafkaTopic?: { partitions?: number } } | undefined)?.kafkaTopic;
      const had = before ? (before.partitions ?? DEFAULT_PARTITIONS) : undefined;
      const wants = t.partitions ?? DEFAULT_PARTITIONS;
      if (had !== undefined && wants < had) {
        env.error(
          '/spec/kafkaTopic/partitions',
          'kafka.partition_shrink',
          `topic ${physical} has ${had} partitions and Kafka cannot shrink a topic to ${wants}; ` +
            `keep ${had} or more, or delete and recreate the resource`,
        );
        ok = false;
      }
      for (const [i, consumer] of (t.consumers ?? []).entries()) {
        const pointer = `/spec/kafkaTopic/consumers/${i}`;
        const d = await ref(env, 'Deployment', consumer, pointer, 'consumer.not_found');
        if (d && d.tenant_id !== tenantId) {
          env.error(pointer, 'consumer.cross_tenant', 'a consumer must be a deployment of the same tenant');
          ok = false;
        }
        if (!d) ok = false;
      }
    } else if (spec.type === 'blob-container') {
      slug = `${scope.slug}.blob`;
      physical = scope.slug;
    } else {
      const isolation = spec.database!.isolation;
      slug = `${scope.slug}.database`;
      const base = scope.slug.replace(/-/g, '_');
      physical =
        isolation === 'silo'
          ? `tenantry_${base}`
          : isolation === 'pool'
            ? `t_${base}`
            : `shared/${scope.slug}`;
    }
    if (!ok || !checkName(m, slug, env)) return undefined;
    return {
      slug,
      tenant: tenantId,
      columns: {
        tenant_id: tenantId,
        deployment_id: byDeployment ? scope.id : null,
        scope: byDeployment ? 'deployment' : 'tenant',
        resource_type: spec.type,
        physical_name: physical,
      },
    };
  },
  filters: {
    tenant: (v) => sql`tenant_id in ${byRef('tenants', v)}`,
    deployment: (v) => sql`deployment_id in ${byRef('deployments', v)}`,
    type: (v) => sql`resource_type = ${v}`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
  },
  represent: {
    metadata: (row) => (row.tenant_id ? { tenantUuid: row.tenant_id } : {}),
    status: (row) => ({ physicalName: String(row.physical_name) }),
  },
  reconciler: 'resource',
  backfill: true,
  events: ['created', 'updated', 'deleted', 'ready', 'failed', 'drifted'],
  cli: {
    name: 'resource',
    aliases: [
      'integrationresource',
      'integrationresources',
      'integration-resource',
      'integration-resources',
      'resource',
      'resources',
      'ir',
    ],
    columns: [
      col.name,
      col.spec('TYPE', 'type'),
      { header: 'PHYSICAL NAME', value: (o) => String(o.status.physicalName ?? '') },
      col.phase,
      col.age,
    ],
    wide: [col.uuid, col.generation, col.reason],
  },
});
