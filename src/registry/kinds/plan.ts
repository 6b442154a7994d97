import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { Isolation, strict, Text } from '../../domain/manifest.js';
import { col, defineKind, named } from './kind.js';
import { SEGMENT } from './region.js';

const Count = (description: string) => Type.Integer({ minimum: 0, maximum: 1_000_000_000, description });
const Days = (description: string) => Type.Integer({ minimum: 0, maximum: 36_500, description });
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
        computeUnits: Type.Optional(
          Count('compute per tenant: the sum of max replicas × unit cost of its services (issue 20)'),
        ),
      },
      strict,
    ),
    rateLimits: Type.Optional(
      Type.Object({ read: Type.Optional(RateLimit), write: Type.Optional(RateLimit) }, strict),
    ),
    retention: Type.Optional(
      Type.Object(
        {
          retiredServicesDays: Type.Optional(Days('retired services: provider resources and secrets (90)')),
          deploymentHistoryDays: Type.Optional(Days('deployment history (365)')),
          configurationVersionsDays: Type.Optional(Days('configuration versions (365)')),
          driftFindingsDays: Type.Optional(Days('drift findings, once resolved (365)')),
        },
        { ...strict, description: 'retention windows after archival, per data class (seed 002)' },
      ),
    ),
    description: Type.Optional(Text(2000)),
  },
  strict,
);

/** A plan (placement, issue 8): the isolation models, quotas and rate limits a tenant gets. */
export const plan = defineKind({
  kind: 'Plan',
  table: 'plans',
  path: 'plans',
  spec: PlanSpec,
  immutable: [],
  scope: 'platform',
  references: [],
  applyTier: 0,
  async resolve(m, env) {
    const slug = named(
      m,
      env,
      SEGMENT,
      'a plan code: lowercase letters, digits and inner hyphens (at most 30)',
    );
    return slug === undefined ? undefined : { slug, tenant: null, columns: {} };
  },
  filters: { phase: (v) => sql`phase = ${v}` },
  reconciler: 'accept',
  backfill: false,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'plan',
    aliases: ['plan', 'plans'],
    columns: [col.name, col.spec('DISPLAY NAME', 'displayName'), col.phase, col.age],
    wide: [
      col.uuid,
      {
        header: 'ISOLATION',
        value: (o) => ((o.spec?.isolationModels as string[] | undefined) ?? []).join(','),
      },
      col.generation,
      col.reason,
    ],
  },
});
