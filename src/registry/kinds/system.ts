import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { strict, Text } from '../../domain/manifest.js';
import { col, defineKind } from './kind.js';

export const SystemSpec = Type.Object(
  {
    displayName: Text(200),
    serviceId: Type.String({ pattern: '^[A-Za-z0-9._-]{1,64}$' }),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

/** A system: a deployable product; tenants get deployments of it. */
export const system = defineKind({
  kind: 'System',
  table: 'systems',
  path: 'systems',
  spec: SystemSpec,
  immutable: [],
  scope: 'platform',
  references: [],
  applyTier: 1,
  async resolve(m, env) {
    const slug = m.metadata.name;
    if (slug === undefined || !/^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$/.test(slug)) {
      env.error(
        '/metadata/name',
        slug === undefined ? 'field.required' : 'slug.invalid',
        'a system needs a name of lowercase letters, digits and inner hyphens (at most 30)',
      );
      return undefined;
    }
    return { slug, tenant: null, columns: { service_id: m.spec.serviceId } };
  },
  filters: { phase: (v) => sql`phase = ${v}` },
  reconciler: 'accept',
  backfill: true,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'system',
    aliases: ['system', 'systems'],
    columns: [
      col.name,
      col.spec('SERVICE ID', 'serviceId'),
      col.spec('DISPLAY NAME', 'displayName'),
      col.phase,
      col.age,
    ],
    wide: [col.uuid, col.generation, col.reason],
  },
});
