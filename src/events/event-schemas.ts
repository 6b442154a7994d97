import { type TSchema, Type } from '@sinclair/typebox';
import {
  cloudEventType,
  EVENT_NAMES,
  type EventName,
  KINDS,
  type Kind,
  STATUS_EVENTS,
} from '../registry/kinds/index.js';

/**
 * The published JSON Schema of every event type (docs/events/<type>.json, written by
 * `npm run events:schemas`). A published version never changes (src/events/event-schemas.test.ts
 * keeps each one's hash); a breaking change is a new type version (`.v2`).
 */
const KIND_OF: Record<string, Kind> = Object.fromEntries(KINDS.map((k) => [k.toLowerCase(), k]));

const Actor = Type.Object({ principal: Type.String(), kind: Type.String() });

/**
 * The object's desired state. `spec` is the kind's manifest spec (see the OpenAPI document); it is not
 * pinned here, so that adding an optional field to a kind does not change a published event schema.
 */
const State = Type.Object({
  metadata: Type.Object({
    uuid: Type.String({ format: 'uuid' }),
    slug: Type.String(),
    labels: Type.Record(Type.String(), Type.String()),
  }),
  spec: Type.Object({}, { description: "the kind's manifest spec; secrets only as ref:sha256:… references" }),
  lifecycle: Type.String(),
});

/** A desired-state change: the object before and after (null on create / delete respectively). */
const ChangeData = (kind: Kind) =>
  Type.Object(
    {
      kind: Type.Literal(kind),
      uuid: Type.String({ format: 'uuid' }),
      slug: Type.String(),
      generation: Type.Integer({ minimum: 1 }),
      previous: Type.Union([State, Type.Null()]),
      current: Type.Union([State, Type.Null()]),
      actor: Actor,
      appId: Type.Optional(Type.Union([Type.String(), Type.Null()])),
      sessionId: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    },
    { additionalProperties: false },
  );

/** An observed-state change reported by the controller (`ready` / `failed`). */
const StatusData = (kind: Kind) =>
  Type.Object(
    {
      kind: Type.Literal(kind),
      uuid: Type.String({ format: 'uuid' }),
      slug: Type.String(),
      observedGeneration: Type.Integer({ minimum: 0 }),
      previous: Type.Object({ phase: Type.String() }),
      current: Type.Object({ phase: Type.String() }),
      reason: Type.String(),
      message: Type.String(),
      drift: Type.Optional(Type.Array(Type.String(), { description: 'drifted: what differed' })),
    },
    { additionalProperties: false },
  );

/** A workflow's progress (src/workflows): started, a step completed, succeeded, failed (or cancelled). */
const WorkflowData = Type.Object(
  {
    workflowId: Type.String({ format: 'uuid' }),
    tenantId: Type.String({ format: 'uuid' }),
    type: Type.Optional(Type.String({ description: 'e.g. lifecycle.suspend' })),
    state: Type.Optional(Type.String({ description: 'Pending, Succeeded, Failed or Cancelled' })),
    step: Type.Optional(Type.String()),
    position: Type.Optional(Type.Integer({ minimum: 0 })),
    attempts: Type.Optional(Type.Integer({ minimum: 1 })),
    error: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    actor: Type.Optional(Actor),
    input: Type.Optional(Type.Object({})),
  },
  { additionalProperties: false },
);

/** A signed tree head of one audit log (src/audit/checkpoint-events.ts). */
const AuditCheckpointData = Type.Object(
  {
    chain: Type.String({ description: 'the tenant id, or "platform"' }),
    origin: Type.String({ description: 'the log: tenantry/audit/<chain>' }),
    treeSize: Type.Integer({ minimum: 0 }),
    rootHash: Type.String({ pattern: '^[0-9a-f]{64}$', description: 'RFC 9162 Merkle tree root, hex' }),
    checkpoint: Type.String({
      description: 'the C2SP signed-note checkpoint (Ed25519): keep it, and later demand a consistency proof',
    }),
  },
  { additionalProperties: false },
);

/** A promotion's progress (src/releases); tenant events name the tenant and its deployment. */
const PromotionData = Type.Object(
  {
    promotionId: Type.String({ format: 'uuid' }),
    system: Type.String(),
    version: Type.String(),
    stage: Type.String(),
    mode: Type.Optional(Type.String({ description: 'promote or rollback' })),
    wave: Type.Optional(Type.Integer({ minimum: 0 })),
    tenantId: Type.Optional(Type.String({ format: 'uuid' })),
    deploymentId: Type.Optional(Type.String({ format: 'uuid' })),
    fromVersion: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    toVersion: Type.Optional(Type.String()),
    reason: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    until: Type.Optional(Type.String({ format: 'date-time' })),
    actor: Type.Optional(Actor),
  },
  { additionalProperties: false },
);

function dataSchema(name: EventName, kind: Kind | undefined): TSchema {
  if (name.startsWith('workflow.')) return WorkflowData;
  if (name.startsWith('audit.')) return AuditCheckpointData;
  if (name.startsWith('promotion.')) return PromotionData;
  return STATUS_EVENTS.includes(name) ? StatusData(kind!) : ChangeData(kind!);
}

export function eventSchema(name: EventName): TSchema {
  const type = cloudEventType(name);
  const kind = KIND_OF[name.split('.')[0]!];
  if (!kind && !['workflow.', 'audit.', 'promotion.'].some((p) => name.startsWith(p)))
    throw new Error(`event ${name} names no kind`);
  return Type.Object(
    {
      specversion: Type.Literal('1.0'),
      id: Type.String({ format: 'uuid' }),
      source: Type.String({ format: 'uri-reference', minLength: 1 }),
      type: Type.Literal(type),
      subject: Type.String({ minLength: 1 }),
      time: Type.String({ format: 'date-time' }),
      datacontenttype: Type.Literal('application/json'),
      tenantid: Type.Optional(Type.String({ format: 'uuid', description: 'absent on platform events' })),
      sequence: Type.String({
        pattern: '^[0-9]{20}$',
        description: 'gap-free position in the tenant stream (or the platform stream), zero-padded',
      }),
      correlationid: Type.String({ minLength: 1 }),
      data: dataSchema(name, kind),
    },
    {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $id: `https://tenantry.dev/schemas/events/${type}.json`,
      title: type,
      additionalProperties: false,
    },
  );
}

/** Every published schema by file name. */
export function publishedEventSchemas(): Record<string, string> {
  return Object.fromEntries(
    EVENT_NAMES.map((n) => [`${cloudEventType(n)}.json`, `${JSON.stringify(eventSchema(n), null, 2)}\n`]),
  );
}
