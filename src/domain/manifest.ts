import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { CLOUD_EVENT_TYPES } from '../events/event-types.js';
import { LABEL_PATTERN, SEGMENT_PATTERN } from './identifiers.js';

/**
 * The declarative manifest format: `apiVersion: tenantry.dev/v1`, `kind`, `metadata`, `spec`, one
 * document per object. Unknown fields anywhere are errors (additionalProperties: false).
 */
export const API_VERSION = 'tenantry.dev/v1';

export const KINDS = [
  'Customer',
  'System',
  'Tenant',
  'Deployment',
  'IntegrationResource',
  'Region',
  'Cell',
  'Plan',
  'WebhookEndpoint',
] as const;
export type Kind = (typeof KINDS)[number];
/** The order in which `apply` writes kinds, so references resolve. Deletion runs in reverse. */
export const APPLY_ORDER: readonly Kind[] = [
  'Region',
  'Cell',
  'Plan',
  ...KINDS.filter((k) => k !== 'Region' && k !== 'Cell' && k !== 'Plan'),
];

const strict = { additionalProperties: false } as const;
const Segment = Type.String({
  pattern: SEGMENT_PATTERN,
  description: 'lowercase letters, digits, inner hyphens; at most 30',
});
const Slug = Type.String({ pattern: LABEL_PATTERN, maxLength: 63, description: 'a lowercase DNS label' });
const Uuid = Type.String({ minLength: 1, maxLength: 64, description: 'RFC 9562 UUID (8-4-4-4-12 hex)' });
const Text = (max: number) => Type.String({ minLength: 1, maxLength: max });
const Labels = Type.Record(
  Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$' }),
  Type.String({ maxLength: 253 }),
  {
    maxProperties: 64,
  },
);

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

export const SystemSpec = Type.Object(
  {
    displayName: Text(200),
    serviceId: Type.String({ pattern: '^[A-Za-z0-9._-]{1,64}$' }),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

const Isolation = Type.Union([Type.Literal('shared'), Type.Literal('pool'), Type.Literal('silo')], {
  description:
    'shared: shared tables, row filter; pool: schema per tenant; silo: dedicated cell, database per tenant',
});
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
  },
  strict,
);

export const DeploymentSpec = Type.Object(
  {
    tenant: Slug,
    system: Segment,
    qualifier: Type.Optional(Segment),
    description: Type.Optional(Text(2000)),
    parameters: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z][A-Za-z0-9]{0,62}$' }), Type.String({ maxLength: 1024 }), {
        maxProperties: 64,
      }),
    ),
  },
  strict,
);

const TopicPart = Type.String({ pattern: '^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$' });
export const KafkaTopicSpec = Type.Object(
  {
    domain: TopicPart,
    subdomain: TopicPart,
    event: TopicPart,
    version: Type.String({ pattern: '^v[1-9][0-9]{0,3}$' }),
    access: Type.String({ pattern: '^[a-z]{2,10}$', description: 'e.g. pub' }),
    partitions: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    replicationFactor: Type.Optional(Type.Integer({ minimum: 1, maximum: 10 })),
    retentionMs: Type.Optional(Type.Integer({ minimum: -1, maximum: 315_360_000_000 })),
    consumers: Type.Optional(
      Type.Array(Slug, { maxItems: 100, uniqueItems: true, description: 'consumer deployments (read ACLs)' }),
    ),
  },
  strict,
);
export const BlobContainerSpec = Type.Object({ publicAccess: Type.Optional(Type.Literal('none')) }, strict);
export const DatabaseSpec = Type.Object(
  { isolation: Type.Union([Type.Literal('shared'), Type.Literal('pool'), Type.Literal('silo')]) },
  strict,
);

export const ResourceScope = Type.Union([
  Type.Object({ deployment: Slug }, strict),
  Type.Object({ tenant: Slug }, strict),
]);

export const IntegrationResourceSpec = Type.Object(
  {
    scope: ResourceScope,
    type: Type.Union([Type.Literal('kafka-topic'), Type.Literal('blob-container'), Type.Literal('database')]),
    kafkaTopic: Type.Optional(KafkaTopicSpec),
    blobContainer: Type.Optional(BlobContainerSpec),
    database: Type.Optional(DatabaseSpec),
  },
  strict,
);

// Placement (issue 8): regions, cells (runtime environments) and plans (quotas and rate limits).
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

const RateLimit = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'requests per window' }),
    windowSeconds: Type.Integer({ minimum: 1, maximum: 86_400 }),
  },
  strict,
);
export const PlanSpec = Type.Object(
  {
    displayName: Text(200),
    isolationModels: Type.Array(Isolation, { minItems: 1, maxItems: 3, uniqueItems: true }),
    quotas: Type.Object(
      {
        deployments: Type.Optional(Count('live deployments per tenant')),
        integrationResources: Type.Optional(Count('live integration resources per tenant')),
        storageGiB: Type.Optional(Count('storage, GiB')),
        eventsPerPeriod: Type.Optional(
          Type.Object(
            {
              limit: Count('events per period'),
              period: Type.Union([Type.Literal('hour'), Type.Literal('day'), Type.Literal('month')]),
            },
            strict,
          ),
        ),
        concurrentOperations: Type.Optional(Count('reconcile operations in flight per tenant')),
      },
      strict,
    ),
    rateLimits: Type.Optional(
      Type.Object({ read: Type.Optional(RateLimit), write: Type.Optional(RateLimit) }, strict),
    ),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

/** A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes. */
export const WEBHOOK_SECRET_PATTERN = '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$';
/** How a stored secret is shown after creation: a fingerprint, never the secret. */
export const WEBHOOK_SECRET_REF_PATTERN = '^ref:sha256:[0-9a-f]{16}$';

export const WebhookEndpointSpec = Type.Object(
  {
    url: Type.String({
      pattern: '^https?://[^\\s]+$',
      maxLength: 2048,
      description: 'http(s) URL the events are POSTed to',
    }),
    eventTypes: Type.Optional(
      Type.Array(Type.Union(CLOUD_EVENT_TYPES.map((t) => Type.Literal(t))), {
        minItems: 1,
        maxItems: 100,
        uniqueItems: true,
        description: 'only these CloudEvents types; absent = every type',
      }),
    ),
    enabled: Type.Optional(Type.Boolean({ default: true })),
    description: Type.Optional(Text(2000)),
    secret: Type.Optional(
      Type.String({
        pattern: `${WEBHOOK_SECRET_PATTERN}|${WEBHOOK_SECRET_REF_PATTERN}`,
        description:
          'a whsec_ signing secret (absent on creation: one is generated and returned once); read back as ref:sha256:…; a new value rotates it',
      }),
    ),
  },
  strict,
);

export const SPEC_SCHEMAS = {
  Customer: CustomerSpec,
  System: SystemSpec,
  Tenant: TenantSpec,
  Deployment: DeploymentSpec,
  IntegrationResource: IntegrationResourceSpec,
  Region: RegionSpec,
  Cell: CellSpec,
  Plan: PlanSpec,
  WebhookEndpoint: WebhookEndpointSpec,
} satisfies Record<Kind, TSchema>;

export type Specs = { [K in Kind]: Static<(typeof SPEC_SCHEMAS)[K]> };
export type MetadataInput = Static<typeof Metadata>;

export interface Manifest<K extends Kind = Kind> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: MetadataInput;
  spec: Specs[K];
}

export function manifestSchema<K extends Kind>(kind: K) {
  return Type.Object(
    {
      apiVersion: Type.Literal(API_VERSION),
      kind: Type.Literal(kind),
      metadata: Metadata,
      spec: SPEC_SCHEMAS[kind],
    },
    { ...strict, $id: `${kind}Manifest` },
  );
}

/** Spec fields that fix an object's identity (its slug); they cannot change after creation. */
export const IMMUTABLE_FIELDS: Record<Kind, readonly string[]> = {
  Customer: ['shortCode'],
  System: [],
  Tenant: ['customer', 'region', 'environmentType', 'qualifier'],
  Deployment: ['tenant', 'system', 'qualifier'],
  IntegrationResource: [
    'scope',
    'type',
    'kafkaTopic/domain',
    'kafkaTopic/subdomain',
    'kafkaTopic/event',
    'kafkaTopic/version',
    'kafkaTopic/access',
    'database/isolation',
  ],
  Region: [],
  Cell: ['region', 'stage', 'tenancy'],
  Plan: [],
  WebhookEndpoint: [],
};
