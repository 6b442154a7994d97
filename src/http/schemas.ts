import { type TSchema, Type } from '@sinclair/typebox';
import { KINDS, type Kind, manifestSchema } from '../registry/kinds/index.js';

/**
 * Route schemas. Request bodies are validated by their schema, except manifests: the services validate
 * those (with pointers into the manifest), so a route marks its manifest body with `manifestBody`.
 */
const manifestBodies = new WeakSet<object>();
export function manifestBody<T extends TSchema>(schema: T): T {
  manifestBodies.add(schema);
  return schema;
}
export const isManifestBody = (schema: unknown): boolean =>
  typeof schema === 'object' && schema !== null && manifestBodies.has(schema);

export const ProblemSchema = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'stable machine-readable error code' }),
    instance: Type.Optional(Type.String()),
    errors: Type.Optional(
      Type.Array(
        Type.Object({
          pointer: Type.String({ description: 'JSON pointer (RFC 6901)' }),
          code: Type.String(),
          detail: Type.String(),
        }),
      ),
    ),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details' },
);

export const ConditionSchema = Type.Object({
  type: Type.String(),
  status: Type.Union([Type.Literal('True'), Type.Literal('False'), Type.Literal('Unknown')]),
  reason: Type.String(),
  message: Type.String(),
  lastTransitionTime: Type.String({ format: 'date-time' }),
});

export const objectSchema = (kind: Kind) =>
  Type.Object(
    {
      apiVersion: Type.Literal('tenantry.dev/v1'),
      kind: Type.Literal(kind),
      metadata: Type.Object({
        uuid: Type.String({ format: 'uuid' }),
        name: Type.String(),
        slug: Type.String(),
        generation: Type.Integer(),
        labels: Type.Record(Type.String(), Type.String()),
        createdAt: Type.String({ format: 'date-time' }),
        updatedAt: Type.String({ format: 'date-time' }),
        deletedAt: Type.Optional(Type.String({ format: 'date-time' })),
        tenantUuid: Type.Optional(Type.String({ format: 'uuid' })),
        tenant: Type.Optional(Type.String({ format: 'uuid', description: 'WebhookEndpoint: owning tenant' })),
      }),
      spec: manifestSchema(kind).properties.spec,
      status: Type.Object({
        observedGeneration: Type.Integer(),
        phase: Type.String(),
        lifecycle: Type.String(),
        conditions: Type.Array(ConditionSchema),
        physicalName: Type.Optional(Type.String()),
        placement: Type.Optional(
          Type.Unknown({ description: 'Tenant: its binding to a cell (null: unplaced)' }),
        ),
        allocated: Type.Optional(Type.Integer({ description: 'Cell: tenants it hosts' })),
        secret: Type.Optional(
          Type.String({
            description: 'WebhookEndpoint: the generated signing secret, in the creating response only',
          }),
        ),
      }),
    },
    { $id: `${kind}` },
  );

export const OBJECT_SCHEMAS = Object.fromEntries(KINDS.map((k) => [k, objectSchema(k)])) as unknown as Record<
  Kind,
  TSchema
>;

export const DiffEntrySchema = Type.Object({
  op: Type.Union([Type.Literal('add'), Type.Literal('remove'), Type.Literal('replace')]),
  path: Type.String(),
  from: Type.Optional(Type.Unknown()),
  to: Type.Optional(Type.Unknown()),
});

export const errorResponses = (...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((s) => [
      s,
      {
        description: 'Problem details',
        content: { 'application/problem+json': { schema: Type.Ref('Problem') } },
      },
    ]),
  );
