import type { Static, TSchema } from '@sinclair/typebox';
import type { RawBuilder } from 'kysely';
import { manifestEnvelope } from '../../domain/manifest.js';
import { cell } from './cell.js';
import { configuration } from './configuration.js';
import { customer } from './customer.js';
import { deployment } from './deployment.js';
import { integrationResource } from './integration-resource.js';
import type { KindDefinition, KindManifest, ObjectRow, ParentRef } from './kind.js';
import { pipeline } from './pipeline.js';
import { plan } from './plan.js';
import { region } from './region.js';
import { release } from './release.js';
import { scalingPolicy } from './scaling-policy.js';
import { service } from './service.js';
import { system } from './system.js';
import { tenant } from './tenant.js';
import { webhookEndpoint } from './webhook-endpoint.js';

/**
 * The kind catalogue: every kind's definition, in catalogue order (the API's and the OpenAPI's order),
 * and everything derived from them. To add a kind, see README.md beside this file.
 */
export const KIND_DEFINITIONS = [
  customer,
  system,
  tenant,
  deployment,
  integrationResource,
  region,
  cell,
  plan,
  webhookEndpoint,
  configuration,
  service,
  scalingPolicy,
  release,
  pipeline,
] as const;

type Definition = (typeof KIND_DEFINITIONS)[number];
export type Kind = Definition['kind'];
export const KINDS: readonly Kind[] = KIND_DEFINITIONS.map((d) => d.kind);
type DefinitionOf<K extends Kind> = Extract<Definition, { kind: K }>;
type SpecSchemaOf<D> = D extends { spec: infer S } ? (S extends (...a: never[]) => infer R ? R : S) : never;

export type Specs = { [K in Kind]: Static<SpecSchemaOf<DefinitionOf<K>>> };
export type Manifest<K extends Kind = Kind> = KindManifest<K, Specs[K]>;

// ---- Events -------------------------------------------------------------------------------------

type EventsOf<D> = D extends { kind: infer K extends string; events: readonly (infer E extends string)[] }
  ? `${Lowercase<K>}.${E}`
  : never;
/** Workflow progress (src/workflows), in the tenant's stream; workflows are no registry kind. */
export const WORKFLOW_EVENTS = [
  'workflow.started',
  'workflow.step_completed',
  'workflow.succeeded',
  'workflow.failed',
] as const;
/** A signed checkpoint of an audit log (src/audit/checkpoint-events.ts), in that log's tenant stream. */
export const AUDIT_EVENTS = ['audit.checkpoint'] as const;
/**
 * Promotion progress (src/releases): the promotion's own events in the platform stream, and each
 * tenant's update, skip, deferral and rollback in that tenant's stream.
 */
export const PROMOTION_EVENTS = [
  'promotion.requested',
  'promotion.approved',
  'promotion.wave_started',
  'promotion.tenant_updated',
  'promotion.tenant_skipped',
  'promotion.tenant_deferred',
  'promotion.tenant_rolled_back',
  'promotion.succeeded',
  'promotion.failed',
] as const;
/** Every event name (`{kind}.{event}`); CloudEvents `type` is `dev.tenantry.{name}.v1`. */
export type EventName =
  | EventsOf<Definition>
  | (typeof WORKFLOW_EVENTS)[number]
  | (typeof AUDIT_EVENTS)[number]
  | (typeof PROMOTION_EVENTS)[number];
export const EVENT_NAMES: readonly EventName[] = [
  ...KIND_DEFINITIONS.flatMap((d) => d.events.map((e) => `${d.kind.toLowerCase()}.${e}` as EventName)),
  ...WORKFLOW_EVENTS,
  ...AUDIT_EVENTS,
  ...PROMOTION_EVENTS,
];
export const cloudEventType = (name: EventName): string => `dev.tenantry.${name}.v1`;
/** Every published CloudEvents `type`. */
export const CLOUD_EVENT_TYPES: readonly string[] = EVENT_NAMES.map(cloudEventType);
/** Events about an object's observed state (emitted by the controller), not a desired-state change. */
export const STATUS_EVENTS: readonly EventName[] = EVENT_NAMES.filter(
  (n) => n.endsWith('.ready') || n.endsWith('.failed') || n.endsWith('.drifted'),
);

export type ChangeAction =
  | 'create'
  | 'update'
  | 'delete'
  | 'activate'
  | 'suspend'
  | 'resume'
  | 'archive'
  | 'disable'
  | 'migrate'
  | 'migrate_region'
  | 'fail_over'
  | 'revert_migration';
const PAST: Record<ChangeAction, string> = {
  create: 'created',
  update: 'updated',
  delete: 'deleted',
  activate: 'activated',
  suspend: 'suspended',
  resume: 'resumed',
  archive: 'archived',
  disable: 'disabled',
  migrate: 'migrated',
  migrate_region: 'region_migrated',
  fail_over: 'failed_over',
  revert_migration: 'migration_rolled_back',
};
export function eventName(kind: Kind, action: ChangeAction): EventName {
  const name = `${kind.toLowerCase()}.${PAST[action]}`;
  if (!(EVENT_NAMES as readonly string[]).includes(name))
    throw new Error(`no event type for ${kind} ${action}`);
  return name as EventName;
}

// ---- Schemas ------------------------------------------------------------------------------------

function specSchema(d: KindDefinition): TSchema {
  return typeof d.spec === 'function' ? d.spec(CLOUD_EVENT_TYPES) : d.spec;
}
export const SPEC_SCHEMAS = Object.fromEntries(
  KIND_DEFINITIONS.map((d) => [d.kind, specSchema(d as unknown as KindDefinition)]),
) as { [K in Kind]: SpecSchemaOf<DefinitionOf<K>> };

/** The full manifest schema of a kind (`$id: {Kind}Manifest`). */
export function manifestSchema<K extends Kind>(kind: K) {
  return manifestEnvelope(kind, SPEC_SCHEMAS[kind] as TSchema);
}

// ---- Lookups ------------------------------------------------------------------------------------

const BY_KIND = new Map<string, KindDefinition>(
  KIND_DEFINITIONS.map((d) => [d.kind, d as unknown as KindDefinition]),
);
export function definitionOf(kind: Kind): KindDefinition {
  const d = BY_KIND.get(kind);
  if (!d) throw new Error(`unknown kind ${kind}`);
  return d;
}
export const isKind = (k: string): k is Kind => BY_KIND.has(k);

const derive = <T>(f: (d: KindDefinition) => T) =>
  Object.fromEntries(KIND_DEFINITIONS.map((d) => [d.kind, f(d as unknown as KindDefinition)])) as Record<
    Kind,
    T
  >;
/** The registry table of each kind. */
export const TABLES: Record<Kind, string> = derive((d) => d.table);
/** The URL path segment of each kind: `/v1/{path}`. */
export const KIND_PATHS: Record<Kind, string> = derive((d) => d.path);
/** Spec fields that fix an object's identity (its slug); they cannot change after creation. */
export const IMMUTABLE_FIELDS: Record<Kind, readonly string[]> = derive((d) => d.immutable);
/** Query filters per kind: name → SQL condition. */
export const LIST_FILTERS: Record<Kind, Record<string, (v: string) => RawBuilder<unknown>>> = derive(
  (d) => d.filters,
);
/** The kinds whose live objects the controller's backfill gives a job. */
export const BACKFILL_KINDS: readonly Kind[] = KINDS.filter((k) => definitionOf(k).backfill);
/** The order in which `apply` writes kinds, so references resolve. Deletion runs in reverse. */
export const APPLY_ORDER: readonly Kind[] = [...KINDS].sort(
  (a, b) => definitionOf(a).applyTier - definitionOf(b).applyTier,
);

/** Every name the CLI accepts for a kind → its URL path. */
export const CLI_PATHS: Record<string, string> = Object.fromEntries(
  KIND_DEFINITIONS.flatMap((d) =>
    [d.cli.name, ...d.cli.aliases, d.kind.toLowerCase(), d.path].map((n) => [n.toLowerCase(), d.path]),
  ),
);
/** The short names the CLI shows in its usage. */
export const CLI_NAMES: readonly string[] = KIND_DEFINITIONS.map((d) => d.cli.name);

/** The error-code prefix of a kind (`tenant.not_found`, `integration_resource.exists`). */
export const kindCode = (kind: Kind): string => definitionOf(kind).code ?? kind.toLowerCase();

/** The tenant an existing row belongs to. */
export function tenantOf(kind: Kind, row: { id: string; tenant_id?: string | null }): string | null {
  const scope = definitionOf(kind).scope;
  if (scope === 'self') return row.id;
  if (scope === 'tenant') return row.tenant_id ?? null;
  return null;
}

/** The kinds that refer to `kind` by a column, with the rule for deleting `kind`; catalogue order. */
export function childrenOf(kind: Kind): { kind: Kind; ref: ParentRef }[] {
  return KINDS.flatMap((k) =>
    (definitionOf(k).parents ?? []).filter((p) => p.kind === kind).map((ref) => ({ kind: k, ref })),
  );
}

export type { ObjectRow };

// ---- The catalogue's own check ------------------------------------------------------------------

/**
 * Throws when a definition lacks what everything else derives from it: a table, a path, a spec
 * schema, event names (at least created/updated/deleted), CLI names and columns; or when names
 * collide, or a reference or parent names an unknown kind or one applied later.
 */
export function checkDefinitions(defs: readonly KindDefinition[]): void {
  const problems: string[] = [];
  const kinds = new Set(defs.map((d) => d.kind));
  const seen = {
    table: new Map<string, string>(),
    path: new Map<string, string>(),
    cli: new Map<string, string>(),
  };
  const order = [...defs].sort((a, b) => a.applyTier - b.applyTier).map((d) => d.kind);
  for (const d of defs) {
    const where = `kind ${d.kind || '(unnamed)'}`;
    if (!/^[A-Z][A-Za-z]+$/.test(d.kind ?? '')) problems.push(`${where}: kind must be a PascalCase name`);
    if (!/^[a-z][a-z0-9_]*$/.test(d.table ?? '')) problems.push(`${where}: no table`);
    if (!/^[a-z][a-z0-9-]*$/.test(d.path ?? '')) problems.push(`${where}: no URL path`);
    const spec = d.spec === undefined ? undefined : typeof d.spec === 'function' ? d.spec([]) : d.spec;
    if (!spec || typeof spec !== 'object' || (spec as { type?: unknown }).type !== 'object')
      problems.push(`${where}: no spec schema (a TypeBox object)`);
    if (typeof d.resolve !== 'function') problems.push(`${where}: no slug rule (resolve)`);
    const events = d.events ?? [];
    for (const e of ['created', 'updated', 'deleted'])
      if (!events.includes(e)) problems.push(`${where}: no "${e}" event`);
    if (new Set(events).size !== events.length) problems.push(`${where}: an event is named twice`);
    for (const e of events) if (!/^[a-z][a-z_]*$/.test(e)) problems.push(`${where}: bad event name "${e}"`);
    if (!d.cli?.name || (d.cli.columns ?? []).length === 0) problems.push(`${where}: no CLI name or columns`);
    if (!d.filters) problems.push(`${where}: no list filters`);
    for (const [what, value] of [
      ['table', d.table],
      ['path', d.path],
    ] as const) {
      const other = seen[what].get(value);
      if (other) problems.push(`${where}: ${what} "${value}" is also ${other}'s`);
      seen[what].set(value, d.kind);
    }
    for (const n of new Set([d.cli?.name, ...(d.cli?.aliases ?? [])].filter(Boolean) as string[])) {
      const other = seen.cli.get(n);
      if (other && other !== d.kind) problems.push(`${where}: CLI name "${n}" is also ${other}'s`);
      seen.cli.set(n, d.kind);
    }
    for (const m of d.tenantMentions ?? [])
      if (!m.at.startsWith('/') || (m.via !== undefined && !kinds.has(m.via)))
        problems.push(`${where}: tenant mention ${m.at} is not a pointer or names an unknown kind`);
    for (const r of [...(d.references ?? []), ...(d.parents ?? []).map((p) => p.kind)]) {
      if (!kinds.has(r)) problems.push(`${where}: refers to unknown kind ${r}`);
      else if (order.indexOf(r) >= order.indexOf(d.kind))
        problems.push(
          `${where}: refers to ${r}, which is not applied before it (applyTier, catalogue order)`,
        );
    }
  }
  if (problems.length > 0) throw new Error(`kind definitions are incomplete:\n  ${problems.join('\n  ')}`);
}

checkDefinitions(KIND_DEFINITIONS as unknown as readonly KindDefinition[]);
