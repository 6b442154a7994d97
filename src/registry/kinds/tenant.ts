import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { isUuid, tenantSlug } from '../../domain/identifiers.js';
import { Isolation, Segment, Slug, strict, Text } from '../../domain/manifest.js';
import { byRef, checkName, col, defineKind, found, ref, slugPrefix, tooLong } from './kind.js';

const Residency = Type.Object(
  {
    allowedRegions: Type.Optional(
      Type.Array(Segment, {
        minItems: 1,
        maxItems: 50,
        uniqueItems: true,
        description: "where the tenant's data may live; default: the tenant's own region",
      }),
    ),
    preferredRegion: Type.Optional(Segment),
  },
  strict,
);

export const TenantSpec = Type.Object(
  {
    customer: Slug,
    region: Segment,
    environmentType: Segment,
    qualifier: Type.Optional(Segment),
    description: Type.Optional(Text(2000)),
    // Placement (src/placement): the plan by code, the isolation model, the residency policy, an optional cell pin.
    plan: Type.Optional(Segment),
    isolation: Type.Optional(Isolation),
    residency: Type.Optional(Residency),
    cell: Type.Optional(Slug),
    // Region failover (src/tenant-migrations/standby.ts): a standby kept in sync in this region's cell.
    standby: Type.Optional(
      Type.Object(
        {
          region: Segment,
          failoverAfterChecks: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 1000,
              description:
                "fail over on its own once this many measurements in a row (one per keeper tick, 15 s) found the primary's data plane unreachable",
            }),
          ),
        },
        { ...strict, description: "a standby region: the tenant's database and blobs are replicated there" },
      ),
    ),
  },
  strict,
);

/**
 * A tenant: one customer's environment of the platform in one region. Its slug is derived from the
 * customer's short code, the region, the environment type and an optional qualifier.
 */
export const tenant = defineKind({
  kind: 'Tenant',
  table: 'tenants',
  path: 'tenants',
  spec: TenantSpec,
  immutable: ['customer', 'region', 'environmentType', 'qualifier'],
  scope: 'self',
  parents: [
    {
      kind: 'Customer',
      column: 'customer_id',
      onDelete: {
        refuse: {
          code: 'customer.has_tenants',
          message: (slug) => `Customer "${slug}" still has tenants; delete them first.`,
        },
      },
    },
  ],
  references: ['Customer', 'Plan', 'Cell', 'Region'],
  tenantMentions: [{ at: '/metadata/uuid' }, { at: '/metadata/name' }],
  applyTier: 1,
  async resolve(m, env) {
    const { spec } = m;
    let ok = true;
    // The slug's part after the customer's short code. The tenant is found and locked (by its UUID,
    // else by its slug) in the same round trip as the regions, the customer and the plan.
    const rest = tenantSlug({
      prefix: '',
      region: spec.region,
      environmentType: spec.environmentType,
      qualifier: spec.qualifier,
    });
    const uuid = m.metadata.uuid?.toLowerCase();
    const lock = uuid === undefined ? { slugRest: rest } : isUuid(uuid) ? { id: uuid } : undefined;
    const context = await env.tenantContext({
      customer: spec.customer,
      ...(lock ? { lock } : {}),
      ...(spec.plan !== undefined ? { plan: spec.plan } : {}),
    });
    const regions = context.regions;
    for (const [pointer, region] of [
      ['/spec/region', spec.region],
      ['/spec/residency/preferredRegion', spec.residency?.preferredRegion],
      ['/spec/standby/region', spec.standby?.region],
      ...(spec.residency?.allowedRegions ?? []).map((r, i) => [`/spec/residency/allowedRegions/${i}`, r]),
    ] as const) {
      if (region !== undefined && !regions.includes(region)) {
        env.error(pointer, 'region.unknown', `unknown region; regions: ${regions.join(', ')}`);
        ok = false;
      }
    }
    const standby = spec.standby?.region;
    if (standby !== undefined && standby === spec.region) {
      env.error(
        '/spec/standby/region',
        'standby.same_region',
        "a standby lives in another region than the tenant's",
      );
      ok = false;
    } else if (
      standby !== undefined &&
      !(spec.residency?.allowedRegions ?? [spec.region]).includes(standby)
    ) {
      env.error(
        '/spec/standby/region',
        'placement.residency',
        `the standby region must be among the tenant's allowed regions (${(spec.residency?.allowedRegions ?? [spec.region]).join(', ')})`,
      );
      ok = false;
    }
    if (
      spec.plan !== undefined &&
      !found(env, context.plan ?? undefined, 'Plan', spec.plan, '/spec/plan', 'plan.not_found')
    )
      ok = false;
    if (spec.cell !== undefined && !(await ref(env, 'Cell', spec.cell, '/spec/cell', 'cell.not_found')))
      ok = false;
    if (!env.environmentTypes.includes(spec.environmentType)) {
      env.error(
        '/spec/environmentType',
        'environment_type.unknown',
        `unknown environment type; one of ${env.environmentTypes.join(', ')}`,
      );
      ok = false;
    }
    const customer = found(
      env,
      context.customer,
      'Customer',
      spec.customer,
      '/spec/customer',
      'customer.not_found',
    );
    if (!customer || !ok) return undefined;
    const slug = tenantSlug({
      prefix: String(customer.short_code),
      region: spec.region,
      environmentType: spec.environmentType,
      qualifier: spec.qualifier,
    });
    if (tooLong(slug, env) || !checkName(m, slug, env)) return undefined;
    return {
      slug,
      tenant: 'self',
      columns: {
        customer_id: customer.id,
        region: spec.region,
        environment_type: spec.environmentType,
        qualifier: spec.qualifier ?? null,
      },
      ...(lock && ('id' in lock || slug === `${customer.short_code}-${rest}`)
        ? { existing: context.existing ?? null }
        : {}),
    };
  },
  filters: {
    cell: (v) => sql`cell_id in ${byRef('cells', v)}`,
    plan: (v) => sql`spec->>'plan' = ${v}`,
    customer: (v) => sql`customer_id in ${byRef('customers', v)}`,
    region: (v) => sql`region = ${v}`,
    environmentType: (v) => sql`environment_type = ${v}`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
    lifecycle: (v) => sql`lifecycle = ${v}`,
  },
  represent: { status: (row) => ({ placement: row.placement ?? null }) },
  reconciler: 'parent',
  backfill: true,
  events: [
    'created',
    'updated',
    'activated',
    'suspended',
    'resumed',
    'archived',
    'deleted',
    'plan_updated',
    'region_migrated',
    'migrated',
    'migration_rolled_back',
    'failed_over',
    'ready',
    'failed',
  ],
  cli: {
    name: 'tenant',
    aliases: ['tenant', 'tenants'],
    columns: [
      col.name,
      col.spec('CUSTOMER', 'customer'),
      col.spec('REGION', 'region'),
      col.spec('ENV', 'environmentType'),
      col.lifecycle,
      col.phase,
      col.age,
    ],
    wide: [
      col.uuid,
      col.spec('PLAN', 'plan'),
      {
        header: 'CELL',
        value: (o) => String((o.status.placement as { cell?: string } | null)?.cell ?? ''),
      },
      col.spec('ISOLATION', 'isolation'),
      col.generation,
      col.reason,
    ],
  },
});
