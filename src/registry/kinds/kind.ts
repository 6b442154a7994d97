import type { Static, TSchema } from '@sinclair/typebox';
import { type RawBuilder, sql } from 'kysely';
import type { MetadataInput } from '../../domain/manifest.js';

/**
 * What one kind is, in one place (see README.md beside this file). Everything else is derived from
 * these definitions in ./index.ts: the registry's table map, the API's paths and OpenAPI, the CLI's
 * path map, the backfill list, the event catalogue, apply order and delete cascades.
 *
 * A definition does no I/O itself: its slug rule (`resolve`) reads through the `ResolveEnv` it is
 * given, so the definitions can be imported by pure code (the manifest parser, the CLI).
 */

/** Columns every registry table shares, plus the kind's own ones. */
export interface ObjectRow {
  id: string;
  slug: string;
  spec: unknown;
  labels: Record<string, string>;
  generation: number;
  lifecycle: string;
  phase: string;
  observed_generation: number;
  conditions: unknown;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
  tenant_id?: string | null;
  [column: string]: unknown;
}

/** A manifest of one kind, with its spec typed by the kind's schema. */
export interface KindManifest<K extends string = string, S = unknown> {
  apiVersion: 'tenantry.dev/v1';
  kind: K;
  metadata: MetadataInput;
  spec: S;
}

/** What a manifest resolves to before it is written: its slug, its tenant, its own columns. */
export interface Resolution {
  slug: string;
  /** The owning tenant; `self` for a Tenant (its own id, known once its identity is settled). */
  tenant: string | null | 'self';
  columns: Record<string, unknown>;
  /** The spec as stored, when it differs from the manifest's (a WebhookEndpoint's secret becomes a ref). */
  spec?: unknown;
  /** Columns to write on update as well (a WebhookEndpoint's secrets). */
  updateColumns?: Record<string, unknown>;
  /** A secret generated for this object: returned once in the creating response, stored nowhere else. */
  generatedSecret?: string;
  /**
   * When the slug rule has read it already, the object the manifest names, locked as applyManifest
   * locks it (null: there is none): by `metadata.uuid`, deleted ones too (`findById`), else the live
   * one with this slug (`findBySlug`), each `forUpdate`.
   */
  existing?: ObjectRow | null;
}

/** The stored signing secrets of a webhook endpoint after an apply (settled by src/webhooks). */
export type WebhookSecretChange =
  | { kind: 'ok'; secrets: unknown[]; ref: string; generated?: string }
  | { kind: 'unknown_ref' };

/** The lookups and checks a slug rule may use. The registry provides them (it owns the transaction). */
export interface ResolveEnv {
  /** Adds a field error at `${at}${pointer}`. */
  error(pointer: string, code: string, message: string): void;
  /** JSON pointer of the manifest in the request body, e.g. `/3`. */
  at: string;
  findBySlug(kind: string, slug: string, opts?: { forUpdate?: boolean }): Promise<ObjectRow | undefined>;
  findById(kind: string, id: string): Promise<ObjectRow | undefined>;
  /** The live objects of `kind` whose own column `column` equals `value` (e.g. a system's releases). */
  liveWith(kind: string, column: string, value: string): Promise<ObjectRow[]>;
  /** The regions tenants and cells may name. */
  regions(): Promise<string[]>;
  /**
   * A tenant's reads in one round trip (issue 24): the regions (as `regions()`), the live customer
   * and plan with these slugs (null: no such plan), and the tenant `lock` names, locked as
   * applyManifest locks it: by UUID (`findById`, deleted ones too) or by slug (live, `findBySlug`),
   * the slug being the customer's short code, `-` and `slugRest`.
   */
  tenantContext(q: {
    customer: string;
    lock?: { id: string } | { slugRest: string };
    plan?: string;
  }): Promise<{
    regions: string[];
    customer?: { id: string; short_code: string };
    existing?: ObjectRow;
    plan?: { spec: unknown } | null;
  }>;
  environmentTypes: readonly string[];
  /** Whether the caller acts platform-wide (an operator), not for one tenant. */
  isPlatform(): Promise<boolean>;
  /** Webhook policy, provided by src/webhooks (the registry does not import it). */
  webhooks: {
    /** Why this URL is refused by address alone, or undefined. */
    urlRefusal(url: string): string | undefined;
    /**
     * The endpoint's secrets after this apply (rotation with overlap, or a generated first secret),
     * as stored: sealed and bound to the endpoint (its tenant, null for platform-wide, and slug).
     */
    settleSecret(
      existing: unknown[] | null,
      given: string | undefined,
      endpoint: { tenantId: string | null; slug: string },
    ): Promise<WebhookSecretChange>;
  };
}

/** A row of `tenantry get` (the object as the API returns it). */
export interface ObjectView {
  metadata: { name: string; uuid: string; generation: number; createdAt: string; [k: string]: unknown };
  // biome-ignore lint/suspicious/noExplicitAny: a column reads the kind's own spec fields
  spec: any;
  status: {
    phase: string;
    lifecycle: string;
    observedGeneration: number;
    conditions?: { type: string; status: string; reason: string; message: string }[];
    [k: string]: unknown;
  };
}

export interface Column {
  header: string;
  value(o: ObjectView, now: number): string;
}

/** Which controller reconciler handles the kind (src/controller/reconcilers.ts maps the names). */
export type ReconcilerName = 'accept' | 'parent' | 'resource' | 'runtime';

/** How an object refers to another kind, and what deleting that other object does to it. */
export interface ParentRef {
  kind: string;
  /** The column holding the parent's id. */
  column: string;
  /**
   * cascade: the child is deleted with its parent (one level, in catalogue order);
   * refuse: the parent cannot be deleted while a live child refers to it;
   * keep: the child outlives its parent.
   */
  onDelete: 'cascade' | 'keep' | { refuse: { code: string; message: (parentSlug: string) => string } };
}

export interface KindDefinition<
  K extends string = string,
  S extends TSchema = TSchema,
  E extends string = string,
> {
  kind: K;
  /** The registry table (one migration creates it). */
  table: string;
  /** The URL path segment: `/v1/{path}`. */
  path: string;
  /** The error-code prefix (`{code}.not_found`); default the kind in lower case. */
  code?: string;
  /** The manifest spec schema, or a function of the event catalogue (WebhookEndpoint's event filter). */
  spec: S | ((cloudEventTypes: readonly string[]) => S);
  /** Spec fields that fix an object's identity (its slug); they cannot change after creation. */
  immutable: readonly string[];
  /**
   * platform: no tenant; tenant: a `tenant_id` column (null = platform-wide where allowed);
   * self: the object is a tenant.
   */
  scope: 'platform' | 'tenant' | 'self';
  /** Objects this kind refers to by column (also gives the delete rules). */
  parents?: readonly ParentRef[];
  /** Kinds this kind's slug rule looks up: they are applied first (checked against `applyTier`). */
  references: readonly string[];
  /** Lower tiers are written first within one apply; within a tier, catalogue order. */
  applyTier: 0 | 1;
  /**
   * Where a manifest of this kind names a tenant (JSON pointers into the document), so that a
   * tenant caller naming another tenant is refused as spoofing (src/authz/tenant-spoofing.ts).
   * `via`: the pointer names an object of that kind, whose tenant counts.
   */
  tenantMentions?: readonly { at: string; via?: string }[];
  /** Whether `metadata.tenant` may name the owning tenant (else it is refused). */
  metadataTenant?: boolean;
  /** The slug rule and the kind's own columns; adds field errors through `env` and returns undefined on error. */
  resolve(m: KindManifest<K, Static<S>>, env: ResolveEnv): Promise<Resolution | undefined>;
  /** List filters: query parameter → SQL condition (a value may be a slug or a UUID where it names an object). */
  filters: Record<string, (v: string) => RawBuilder<unknown>>;
  /** The kind's own fields in its API representation. */
  represent?: {
    /** Shown as metadata.name instead of the slug. */
    name?(row: ObjectRow): string;
    metadata?(row: ObjectRow): Record<string, unknown>;
    status?(row: ObjectRow): Record<string, unknown>;
  };
  reconciler: ReconcilerName;
  /** Whether the controller's backfill gives a live object without a job one. */
  backfill: boolean;
  /** Event names, as the part after `{kind}.`: CloudEvents type `dev.tenantry.{kind}.{event}.v1`. */
  events: readonly E[];
  cli: {
    /** The short name `tenantry get` shows in its usage. */
    name: string;
    /** Every name `tenantry get NAME` accepts for the kind (besides name, path and the kind itself). */
    aliases: readonly string[];
    /** `tenantry get` table columns; `wide` adds more (`-o wide`). */
    columns: readonly Column[];
    wide: readonly Column[];
  };
}

/** Keeps a definition's literal types (its kind name and spec) for the derived types in ./index.ts. */
export function defineKind<const K extends string, S extends TSchema, const E extends string>(
  def: KindDefinition<K, S, E>,
) {
  return def;
}

export const MAX_SLUG = 63;

/** A derived slug: `metadata.name` may be absent or equal to it. */
export function checkName(m: KindManifest, derived: string, env: ResolveEnv): boolean {
  if (m.metadata.name !== undefined && m.metadata.name !== derived) {
    env.error('/metadata/name', 'slug.mismatch', `must be "${derived}" (derived from the spec) or absent`);
    return false;
  }
  return true;
}

/** A slug taken from `metadata.name`, checked against a pattern. */
export function named(m: KindManifest, env: ResolveEnv, pattern: RegExp, what: string): string | undefined {
  const slug = m.metadata.name;
  if (slug === undefined || !pattern.test(slug)) {
    env.error(
      '/metadata/name',
      slug === undefined ? 'field.required' : 'slug.invalid',
      `a ${m.kind.toLowerCase()} needs a name of ${what}`,
    );
    return undefined;
  }
  return slug;
}

/** A reference to another object by slug; a field error if it does not exist. */
export async function ref(env: ResolveEnv, kind: string, slug: string, pointer: string, code: string) {
  return found(env, await env.findBySlug(kind, slug), kind, slug, pointer, code);
}

/** `row`, the object a reference names, as read; a field error (as `ref` adds) if there is none. */
export function found<R>(
  env: ResolveEnv,
  row: R | undefined,
  kind: string,
  slug: string,
  pointer: string,
  code: string,
): R | undefined {
  if (!row) env.error(pointer, code, `${kind} "${slug}" does not exist`);
  return row;
}

export function tooLong(slug: string, env: ResolveEnv): boolean {
  if (slug.length <= MAX_SLUG) return false;
  env.error('/spec', 'slug.too_long', `the derived slug "${slug}" is longer than ${MAX_SLUG}`);
  return true;
}

function age(iso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

const ready = (o: ObjectView) => o.status.conditions?.find((c) => c.type === 'Ready');

/** Columns most kinds show. */
export const col = {
  name: { header: 'NAME', value: (o) => o.metadata.name },
  uuid: { header: 'UUID', value: (o) => o.metadata.uuid },
  lifecycle: { header: 'LIFECYCLE', value: (o) => o.status.lifecycle },
  phase: { header: 'PHASE', value: (o) => o.status.phase },
  generation: {
    header: 'GEN',
    value: (o) => `${o.status.observedGeneration}/${o.metadata.generation}`,
  },
  reason: { header: 'REASON', value: (o) => ready(o)?.reason ?? '' },
  age: { header: 'AGE', value: (o, now) => age(o.metadata.createdAt, now) },
  spec: (header: string, field: string): Column => ({
    header,
    value: (o) => {
      const v = (o.spec as Record<string, unknown> | undefined)?.[field];
      return v === undefined || v === null ? '' : String(v);
    },
  }),
} satisfies Record<string, Column | ((...a: string[]) => Column)>;

/**
 * The `search` list filter: slugs that start with the text, taken literally. starts_with, not LIKE:
 * it is leakproof, so under row-level security it may run inside an index scan (the tenants' slug
 * index in byte order, migration 0047) rather than after the policy on every row.
 */
export const slugPrefix = (v: string) => sql`starts_with(slug, ${v})`;

/** A subquery for the ids of the objects in `table` named by slug or UUID (for list filters). */
export const byRef = (table: string, v: string) =>
  sql`(select id from ${sql.table(table)} where slug = ${v} or id::text = ${v})`;
