import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { LABEL_PATTERN, SEGMENT_PATTERN } from './identifiers.js';

/**
 * The declarative manifest format: `apiVersion: tenantry.dev/v1`, `kind`, `metadata`, `spec`, one
 * document per object. Unknown fields anywhere are errors (additionalProperties: false).
 */
export const API_VERSION = 'tenantry.dev/v1';

export const strict = { additionalProperties: false } as const;
export const Segment = Type.String({
  pattern: SEGMENT_PATTERN,
  description: 'lowercase letters, digits, inner hyphens; at most 30',
});
export const Slug = Type.String({
  pattern: LABEL_PATTERN,
  maxLength: 63,
  description: 'a lowercase DNS label',
});
const Uuid = Type.String({ minLength: 1, maxLength: 64, description: 'RFC 9562 UUID (8-4-4-4-12 hex)' });
export const Text = (max: number) => Type.String({ minLength: 1, maxLength: max });
const Labels = Type.Record(
  Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$' }),
  Type.String({ maxLength: 253 }),
  {
    maxProperties: 64,
  },
);

/** Shared field schemas of the kinds' specs. */
export const Metadata = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    uuid: Type.Optional(Uuid),
    tenant: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 64,
        description: 'WebhookEndpoint only: the owning tenant (slug or UUID); absent = platform-wide',
      }),
    ),
    labels: Type.Optional(Labels),
    generation: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'optimistic concurrency: the generation this change is based on',
      }),
    ),
  },
  strict,
);

export const Isolation = Type.Union([Type.Literal('shared'), Type.Literal('pool'), Type.Literal('silo')], {
  description:
    'shared: shared tables, row filter; pool: schema per tenant; silo: dedicated cell, database per tenant',
});

export type MetadataInput = Static<typeof Metadata>;

/** A manifest's envelope around one kind's spec (the kinds are defined in src/registry/kinds). */
export function manifestEnvelope<K extends string, S extends TSchema>(kind: K, spec: S) {
  return Type.Object(
    { apiVersion: Type.Literal(API_VERSION), kind: Type.Literal(kind), metadata: Metadata, spec },
    { ...strict, $id: `${kind}Manifest` },
  );
}
