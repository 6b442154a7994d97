import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { Segment, strict, Text } from '../../domain/manifest.js';
import {
  compareVersions,
  isSemver,
  judgeRelease,
  type ReleaseInterfaces,
} from '../../domain/release-compatibility.js';
import { byRef, col, defineKind, tooLong } from './kind.js';

const Sha = Type.String({ pattern: '^[0-9a-f]{40}$', description: 'a git commit SHA (40 hex)' });
const Name = Type.String({ pattern: '^[a-z][a-z0-9._-]{0,127}$' });
const FieldName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*){0,7}$' });

const EventField = Type.Object(
  {
    type: Type.Union([
      Type.Literal('string'),
      Type.Literal('number'),
      Type.Literal('integer'),
      Type.Literal('boolean'),
      Type.Literal('object'),
      Type.Literal('array'),
    ]),
    required: Type.Optional(Type.Boolean()),
  },
  strict,
);
const EventVersion = Type.Integer({ minimum: 1, maximum: 1000 });

export const ReleaseSpec = Type.Object(
  {
    system: Segment,
    version: Type.String({
      maxLength: 64,
      pattern: '^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-[0-9a-z]+(\\.[0-9a-z]+)*)?$',
      description: 'semantic version MAJOR.MINOR.PATCH[-prerelease] (lowercase)',
    }),
    artifacts: Type.Array(
      Type.Object(
        {
          service: Segment,
          image: Type.String({
            pattern: '^[a-z0-9][a-z0-9._/:-]{0,254}$',
            description: 'image name, no tag',
          }),
          digest: Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }),
        },
        strict,
      ),
      { minItems: 1, maxItems: 50 },
    ),
    configuration: Type.Optional(
      Type.Array(
        Type.Object({ name: Name, version: Type.String({ minLength: 1, maxLength: 128 }) }, strict),
        {
          maxItems: 50,
        },
      ),
    ),
    produces: Type.Optional(
      Type.Object(
        {
          events: Type.Optional(
            Type.Array(
              Type.Object(
                {
                  type: Name,
                  version: EventVersion,
                  fields: Type.Record(FieldName, EventField, { maxProperties: 200 }),
                },
                strict,
              ),
              { maxItems: 100 },
            ),
          ),
          apis: Type.Optional(
            Type.Array(
              Type.Object(
                {
                  name: Name,
                  version: EventVersion,
                  operations: Type.Array(
                    Type.String({ pattern: '^(GET|PUT|POST|PATCH|DELETE|HEAD|OPTIONS) /[^\\s]{0,250}$' }),
                    { maxItems: 500, uniqueItems: true },
                  ),
                },
                strict,
              ),
              { maxItems: 50 },
            ),
          ),
        },
        strict,
      ),
    ),
    consumes: Type.Optional(
      Type.Object(
        {
          events: Type.Optional(
            Type.Array(Type.Object({ type: Name, version: EventVersion }, strict), { maxItems: 100 }),
          ),
          apis: Type.Optional(
            Type.Array(Type.Object({ name: Name, version: EventVersion }, strict), { maxItems: 50 }),
          ),
        },
        strict,
      ),
    ),
    provenance: Type.Object(
      {
        commit: Sha,
        repository: Type.String({ minLength: 1, maxLength: 500 }),
        pipelineRunId: Type.String({ minLength: 1, maxLength: 200 }),
        builder: Type.String({ minLength: 1, maxLength: 200 }),
        lineage: Type.Optional(
          Type.Array(Sha, { maxItems: 100, description: 'the commits this one descends from, newest first' }),
        ),
      },
      strict,
    ),
    validations: Type.Optional(
      Type.Array(
        Type.Object(
          {
            name: Name,
            passed: Type.Boolean(),
            url: Type.Optional(Type.String({ maxLength: 2000 })),
          },
          strict,
        ),
        { maxItems: 50, description: 'automated validation results (tests, scans) attached by CI' },
      ),
    ),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

/** The slug of release `version` of `system`: dots become hyphens (`checkout-1-4-2`). */
export const releaseSlug = (system: string, version: string): string =>
  `${system}-${version.replace(/\./g, '-')}`;

/**
 * A release (issue 21): one version of a catalogue system, with its artifacts by image digest,
 * configuration references, the event and API schemas it produces and consumes, and provenance.
 * A release is immutable once created. Its version's bump is judged against the system's previous
 * release (src/domain/release-compatibility.ts): a change the bump does not admit is refused.
 */
export const release = defineKind({
  kind: 'Release',
  table: 'releases',
  path: 'releases',
  spec: ReleaseSpec,
  immutable: [
    'system',
    'version',
    'artifacts',
    'configuration',
    'produces',
    'consumes',
    'provenance',
    'validations',
  ],
  scope: 'platform',
  parents: [
    {
      kind: 'System',
      column: 'system_id',
      onDelete: {
        refuse: { code: 'system.has_releases', message: (slug) => `System "${slug}" still has releases.` },
      },
    },
  ],
  references: ['System'],
  applyTier: 1,
  async resolve(m, env) {
    const { spec } = m;
    const slug = releaseSlug(spec.system, spec.version);
    if (m.metadata.name !== undefined && m.metadata.name !== slug) {
      env.error(
        '/metadata/name',
        'slug.mismatch',
        `must be "${slug}" (derived from system and version) or absent`,
      );
      return undefined;
    }
    if (tooLong(slug, env)) return undefined;
    if (!isSemver(spec.version)) {
      env.error('/spec/version', 'release.version_invalid', `"${spec.version}" is not a semantic version`);
      return undefined;
    }
    const system = await env.findBySlug('System', spec.system);
    if (!system) {
      env.error('/spec/system', 'system.not_found', `System "${spec.system}" does not exist`);
      return undefined;
    }
    const columns = { system_id: system.id, version: spec.version };
    const existing = await env.findBySlug('Release', slug);
    if (existing) return { slug, tenant: null, columns };
    // The previous release: the highest version below this one.
    const previous = (await env.liveWith('Release', 'system_id', system.id))
      .map((r) => ({ version: String(r.version), spec: r.spec as ReleaseInterfaces }))
      .filter((r) => compareVersions(r.version, spec.version) < 0)
      .sort((a, b) => compareVersions(b.version, a.version))[0];
    if (previous) {
      const verdict = judgeRelease(previous, { version: spec.version, spec });
      for (const f of verdict.refused)
        env.error(
          f.pointer,
          f.code,
          f.level === 'forbidden'
            ? `${f.message} (against ${spec.system} ${previous.version})`
            : `${f.message}: that needs a ${f.level} release, and ${previous.version} → ${spec.version} is a ${verdict.bump}`,
        );
      if (verdict.refused.length > 0) return undefined;
    }
    return { slug, tenant: null, columns };
  },
  filters: {
    system: (v) => sql`system_id in ${byRef('systems', v)}`,
    version: (v) => sql`version = ${v}`,
    phase: (v) => sql`phase = ${v}`,
  },
  represent: {
    metadata: (row) => ({ version: row.version }),
  },
  reconciler: 'accept',
  backfill: false,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'release',
    aliases: ['release', 'releases', 'rel'],
    columns: [
      col.name,
      col.spec('SYSTEM', 'system'),
      col.spec('VERSION', 'version'),
      {
        header: 'COMMIT',
        value: (o) => String((o.spec?.provenance?.commit as string | undefined)?.slice(0, 12) ?? ''),
      },
      col.age,
    ],
    wide: [
      col.uuid,
      { header: 'PIPELINE RUN', value: (o) => String(o.spec?.provenance?.pipelineRunId ?? '') },
      {
        header: 'ARTIFACTS',
        value: (o) => String((o.spec?.artifacts as unknown[] | undefined)?.length ?? 0),
      },
    ],
  },
});
