import { type Static, Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { Segment, Slug, strict, Text } from '../../domain/manifest.js';
import { col, defineKind, named } from './kind.js';
import { SEGMENT } from './region.js';

export const GATES = ['validations', 'compatibility', 'rollback-readiness', 'previous-stage'] as const;

const Selector = Type.Object(
  {
    labels: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$' }),
        Type.String({ maxLength: 253 }),
        {
          maxProperties: 16,
        },
      ),
    ),
    plans: Type.Optional(Type.Array(Segment, { minItems: 1, maxItems: 20, uniqueItems: true })),
    regions: Type.Optional(Type.Array(Segment, { minItems: 1, maxItems: 20, uniqueItems: true })),
    earlyAccess: Type.Optional(
      Type.Boolean({ description: 'tenants labelled tenantry.dev/early-access: "true" (or not)' }),
    ),
  },
  strict,
);

export const Stage = Type.Object(
  {
    name: Segment,
    environmentTypes: Type.Array(Segment, { minItems: 1, maxItems: 10, uniqueItems: true }),
    cells: Type.Optional(Type.Array(Slug, { minItems: 1, maxItems: 50, uniqueItems: true })),
    protected: Type.Optional(Type.Boolean({ description: 'needs approvals (four eyes) before it starts' })),
    approvals: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 5, description: 'approvals required; default 1 when protected' }),
    ),
    gates: Type.Optional(
      Type.Array(Type.Union(GATES.map((g) => Type.Literal(g))), {
        uniqueItems: true,
        description: `default: all (${GATES.join(', ')})`,
      }),
    ),
    soakSeconds: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 604_800, description: 'wait after each wave before the next' }),
    ),
    waves: Type.Optional(
      Type.Array(Type.Object({ name: Segment, selector: Type.Optional(Selector) }, strict), {
        minItems: 1,
        maxItems: 20,
        description: 'in order; a tenant goes in the first wave whose selector matches, else the last',
      }),
    ),
    budget: Type.Optional(
      Type.Object(
        {
          maxFailures: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
          maxFailurePercent: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
        },
        {
          ...strict,
          description: 'blast radius: stop when more tenants fail verification (default: the first)',
        },
      ),
    ),
    verification: Type.Optional(
      Type.Object(
        {
          timeoutSeconds: Type.Integer({ minimum: 1, maximum: 3600 }),
          maxErrorRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
        },
        strict,
      ),
    ),
  },
  strict,
);
export type StageSpec = Static<typeof Stage>;

export const PipelineSpec = Type.Object(
  {
    systems: Type.Optional(
      Type.Array(Segment, {
        maxItems: 200,
        uniqueItems: true,
        description: 'the systems it promotes; the pipeline named "default" promotes every other',
      }),
    ),
    stages: Type.Array(Stage, { minItems: 1, maxItems: 10 }),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

/**
 * A pipeline (issue 21): the ordered stages a system's releases are promoted through (default
 * dev → qa → staging → prod), each mapped to environment types (and optionally cells), with its
 * approvals, gates, soak time, tenant waves, failure budget and verification.
 */
export const pipeline = defineKind({
  kind: 'Pipeline',
  table: 'pipelines',
  path: 'pipelines',
  spec: PipelineSpec,
  immutable: [],
  scope: 'platform',
  references: ['System', 'Cell'],
  applyTier: 1,
  async resolve(m, env) {
    const slug = named(m, env, SEGMENT, 'lowercase letters, digits and inner hyphens (at most 30)');
    if (!slug) return undefined;
    let ok = true;
    const seen = new Set<string>();
    for (const [i, s] of m.spec.stages.entries()) {
      const at = `/spec/stages/${i}`;
      if (seen.has(s.name)) {
        env.error(`${at}/name`, 'pipeline.stage_duplicate', `stage "${s.name}" is named twice`);
        ok = false;
      }
      seen.add(s.name);
      for (const [j, e] of s.environmentTypes.entries())
        if (!env.environmentTypes.includes(e)) {
          env.error(
            `${at}/environmentTypes/${j}`,
            'environment_type.unknown',
            `unknown environment type; one of ${env.environmentTypes.join(', ')}`,
          );
          ok = false;
        }
      if (s.protected && s.approvals === 0) {
        env.error(
          `${at}/approvals`,
          'pipeline.protected_without_approval',
          'a protected stage needs at least one approval',
        );
        ok = false;
      }
      for (const [j, c] of (s.cells ?? []).entries())
        if (!(await env.findBySlug('Cell', c))) {
          env.error(`${at}/cells/${j}`, 'cell.not_found', `Cell "${c}" does not exist`);
          ok = false;
        }
    }
    for (const [i, sys] of (m.spec.systems ?? []).entries())
      if (!(await env.findBySlug('System', sys))) {
        env.error(`/spec/systems/${i}`, 'system.not_found', `System "${sys}" does not exist`);
        ok = false;
      }
    return ok ? { slug, tenant: null, columns: {} } : undefined;
  },
  filters: {
    system: (v) => sql`spec->'systems' ? ${v}`,
    phase: (v) => sql`phase = ${v}`,
  },
  reconciler: 'accept',
  backfill: false,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'pipeline',
    aliases: ['pipeline', 'pipelines'],
    columns: [
      col.name,
      {
        header: 'STAGES',
        value: (o) =>
          ((o.spec?.stages as { name: string }[] | undefined) ?? []).map((s) => s.name).join(' → '),
      },
      col.phase,
      col.age,
    ],
    wide: [col.uuid, { header: 'SYSTEMS', value: (o) => ((o.spec?.systems as string[]) ?? []).join(',') }],
  },
});
