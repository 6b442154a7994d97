import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { isLabel, SEGMENT_PATTERN } from '../../domain/identifiers.js';
import { strict, Text } from '../../domain/manifest.js';
import { col, defineKind, slugPrefix } from './kind.js';

export const CustomerSpec = Type.Object(
  {
    displayName: Text(200),
    shortCode: Type.String({
      pattern: SEGMENT_PATTERN,
      description: 'tenant slug prefix; several customers may share one',
    }),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

/** A customer: the party tenants are provisioned for; its short code prefixes their slugs. */
export const customer = defineKind({
  kind: 'Customer',
  table: 'customers',
  path: 'customers',
  spec: CustomerSpec,
  immutable: ['shortCode'],
  scope: 'platform',
  references: [],
  applyTier: 1,
  async resolve(m, env) {
    const slug = m.metadata.name;
    if (slug === undefined || !isLabel(slug)) {
      env.error(
        '/metadata/name',
        slug === undefined ? 'field.required' : 'slug.invalid',
        'a customer needs a name that is a lowercase DNS label',
      );
      return undefined;
    }
    return { slug, tenant: null, columns: { short_code: m.spec.shortCode } };
  },
  filters: { phase: (v) => sql`phase = ${v}`, search: slugPrefix },
  reconciler: 'accept',
  backfill: true,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'customer',
    aliases: ['customer', 'customers'],
    columns: [
      col.name,
      col.spec('SHORT CODE', 'shortCode'),
      col.spec('DISPLAY NAME', 'displayName'),
      col.phase,
      col.age,
    ],
    wide: [col.uuid, col.generation, col.reason],
  },
});
