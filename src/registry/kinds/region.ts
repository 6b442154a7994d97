import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { strict, Text } from '../../domain/manifest.js';
import { col, defineKind, named } from './kind.js';

export const RegionSpec = Type.Object(
  {
    displayName: Text(200),
    jurisdiction: Type.Optional(
      Type.String({ pattern: '^[A-Z]{2,10}$', description: 'legal area for residency, e.g. EU, US' }),
    ),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

export const SEGMENT = /^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$/;

/** A region (placement, issue 8): where tenants and cells live; residency rules name them. */
export const region = defineKind({
  kind: 'Region',
  table: 'regions',
  path: 'regions',
  spec: RegionSpec,
  immutable: [],
  scope: 'platform',
  references: [],
  applyTier: 0,
  async resolve(m, env) {
    const slug = named(m, env, SEGMENT, 'lowercase letters, digits and inner hyphens (at most 30)');
    return slug === undefined ? undefined : { slug, tenant: null, columns: {} };
  },
  filters: { phase: (v) => sql`phase = ${v}` },
  reconciler: 'accept',
  backfill: false,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'region',
    aliases: ['region', 'regions'],
    columns: [
      col.name,
      col.spec('JURISDICTION', 'jurisdiction'),
      col.spec('DISPLAY NAME', 'displayName'),
      col.phase,
      col.age,
    ],
    wide: [col.uuid, col.generation, col.reason],
  },
});
