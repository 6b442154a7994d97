import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { LABEL_PATTERN, SEGMENT_PATTERN } from '../../domain/identifiers.js';
import { Segment, strict, Text } from '../../domain/manifest.js';
import { col, defineKind, named } from './kind.js';

const Count = (description: string) => Type.Integer({ minimum: 0, maximum: 1_000_000_000, description });
export const CellSpec = Type.Object(
  {
    region: Segment,
    stage: Type.String({ pattern: SEGMENT_PATTERN, description: 'e.g. prod, nonprod' }),
    environmentTypes: Type.Array(Segment, {
      minItems: 1,
      maxItems: 20,
      uniqueItems: true,
      description: 'the tenant environment types this cell hosts',
    }),
    tenancy: Type.Union([Type.Literal('shared'), Type.Literal('dedicated')], {
      description: 'shared: pool of shared/pool tenants; dedicated: one silo tenant per cell',
    }),
    capacity: Type.Object({ tenants: Count('how many tenants the cell may host') }, strict),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

/** A cell (placement, issue 8): one runtime environment in a region that hosts tenants. */
export const cell = defineKind({
  kind: 'Cell',
  table: 'cells',
  path: 'cells',
  spec: CellSpec,
  immutable: ['region', 'stage', 'tenancy'],
  scope: 'platform',
  references: ['Region'],
  applyTier: 0,
  async resolve(m, env) {
    const slug = named(m, env, new RegExp(LABEL_PATTERN), 'a lowercase DNS label');
    const { spec } = m;
    let ok = slug !== undefined;
    const regions = await env.regions();
    if (!regions.includes(spec.region)) {
      env.error('/spec/region', 'region.unknown', `unknown region; regions: ${regions.join(', ')}`);
      ok = false;
    }
    for (const [i, t] of spec.environmentTypes.entries()) {
      if (!env.environmentTypes.includes(t)) {
        env.error(
          `/spec/environmentTypes/${i}`,
          'environment_type.unknown',
          `unknown environment type; one of ${env.environmentTypes.join(', ')}`,
        );
        ok = false;
      }
    }
    if (!ok || slug === undefined) return undefined;
    return { slug, tenant: null, columns: { region: spec.region, stage: spec.stage, tenancy: spec.tenancy } };
  },
  filters: {
    region: (v) => sql`region = ${v}`,
    stage: (v) => sql`stage = ${v}`,
    tenancy: (v) => sql`tenancy = ${v}`,
    phase: (v) => sql`phase = ${v}`,
  },
  represent: { status: (row) => ({ allocated: Number(row.allocated) }) },
  reconciler: 'accept',
  backfill: false,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'cell',
    aliases: ['cell', 'cells'],
    columns: [
      col.name,
      col.spec('REGION', 'region'),
      col.spec('STAGE', 'stage'),
      col.spec('TENANCY', 'tenancy'),
      {
        header: 'TENANTS',
        value: (o) => `${o.status.allocated ?? 0}/${o.spec?.capacity?.tenants ?? ''}`,
      },
      col.phase,
      col.age,
    ],
    wide: [
      col.uuid,
      {
        header: 'ENV TYPES',
        value: (o) => ((o.spec?.environmentTypes as string[] | undefined) ?? []).join(','),
      },
      col.generation,
      col.reason,
    ],
  },
});
