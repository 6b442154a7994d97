import { type RawBuilder, sql } from 'kysely';
import type { Config } from '../config/config.js';
import type { Trx } from '../db/database.js';
import { deploymentSlug, isLabel, kafkaTopicName, LABEL_PATTERN, tenantSlug } from '../domain/identifiers.js';
import type { Kind, Manifest } from '../domain/manifest.js';
import type { FieldErrors } from '../errors/errors.js';
import { knownRegions } from '../placement/regions.js';
import { literalAddressRefusal } from '../webhooks/url-guard.js';
import { applySecret, type StoredSecret } from '../webhooks/webhook-secrets.js';
import { findById, findBySlug } from './object.repository.js';

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
}

export interface ResolveEnv {
  trx: Trx;
  config: Config;
  errors: FieldErrors;
  /** JSON pointer of the manifest in the request body, e.g. `/3`. */
  at: string;
}

type Resolver<K extends Kind> = (m: Manifest<K>, env: ResolveEnv) => Promise<Resolution | undefined>;

const MAX_SLUG = 63;

function checkName(m: Manifest, derived: string, env: ResolveEnv): boolean {
  if (m.metadata.name !== undefined && m.metadata.name !== derived) {
    env.errors.add(
      `${env.at}/metadata/name`,
      'slug.mismatch',
      `must be "${derived}" (derived from the spec) or absent`,
    );
    return false;
  }
  return true;
}

async function ref(env: ResolveEnv, kind: Kind, slug: string, pointer: string, code: string) {
  const row = await findBySlug(env.trx, kind, slug);
  if (!row) env.errors.add(`${env.at}${pointer}`, code, `${kind} "${slug}" does not exist`);
  return row;
}

const resolvers: { [K in Exclude<Kind, 'Region' | 'Cell' | 'Plan'>]: Resolver<K> } = {
  WebhookEndpoint: resolveWebhookEndpoint,

  async Customer(m, env) {
    const slug = m.metadata.name;
    if (slug === undefined || !isLabel(slug)) {
      env.errors.add(
        `${env.at}/metadata/name`,
        slug === undefined ? 'field.required' : 'slug.invalid',
        'a customer needs a name that is a lowercase DNS label',
      );
      return undefined;
    }
    return { slug, tenant: null, columns: { short_code: m.spec.shortCode } };
  },

  async System(m, env) {
    const slug = m.metadata.name;
    if (slug === undefined || !/^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$/.test(slug)) {
      env.errors.add(
        `${env.at}/metadata/name`,
        slug === undefined ? 'field.required' : 'slug.invalid',
        'a system needs a name of lowercase letters, digits and inner hyphens (at most 30)',
      );
      return undefined;
    }
    return { slug, tenant: null, columns: { service_id: m.spec.serviceId } };
  },

  async Tenant(m, env) {
    const { spec } = m;
    let ok = true;
    const regions = await knownRegions(env.trx, env.config);
    for (const [pointer, region] of [
      ['/spec/region', spec.region],
      ['/spec/residency/preferredRegion', spec.residency?.preferredRegion],
      ...(spec.residency?.allowedRegions ?? []).map((r, i) => [`/spec/residency/allowedRegions/${i}`, r]),
    ] as const) {
      if (region !== undefined && !regions.includes(region)) {
        env.errors.add(
          `${env.at}${pointer}`,
          'region.unknown',
          `unknown region; regions: ${regions.join(', ')}`,
        );
        ok = false;
      }
    }
    if (spec.plan !== undefined && !(await ref(env, 'Plan', spec.plan, '/spec/plan', 'plan.not_found')))
      ok = false;
    if (spec.cell !== undefined && !(await ref(env, 'Cell', spec.cell, '/spec/cell', 'cell.not_found')))
      ok = false;
    if (!env.config.environmentTypes.includes(spec.environmentType)) {
      env.errors.add(
        `${env.at}/spec/environmentType`,
        'environment_type.unknown',
        `unknown environment type; one of ${env.config.environmentTypes.join(', ')}`,
      );
      ok = false;
    }
    const customer = await ref(env, 'Customer', spec.customer, '/spec/customer', 'customer.not_found');
    if (!customer || !ok) return undefined;
    const slug = tenantSlug({
      prefix: String(customer.short_code),
      region: spec.region,
      environmentType: spec.environmentType,
      qualifier: spec.qualifier,
    });
    if (slug.length > MAX_SLUG) {
      env.errors.add(
        `${env.at}/spec`,
        'slug.too_long',
        `the derived slug "${slug}" is longer than ${MAX_SLUG}`,
      );
      return undefined;
    }
    if (!checkName(m, slug, env)) return undefined;
    return {
      slug,
      tenant: 'self',
      columns: {
        customer_id: customer.id,
        region: spec.region,
        environment_type: spec.environmentType,
        qualifier: spec.qualifier ?? null,
      },
    };
  },

  async Deployment(m, env) {
    const { spec } = m;
    const tenant = await ref(env, 'Tenant', spec.tenant, '/spec/tenant', 'tenant.not_found');
    const system = await ref(env, 'System', spec.system, '/spec/system', 'system.not_found');
    if (!tenant || !system) return undefined;
    if (tenant.lifecycle === 'Archived') {
      env.errors.add(`${env.at}/spec/tenant`, 'tenant.archived', `tenant "${spec.tenant}" is archived`);
      return undefined;
    }
    const slug = deploymentSlug(tenant.slug, system.slug, spec.qualifier);
    if (slug.length > MAX_SLUG) {
      env.errors.add(
        `${env.at}/spec`,
        'slug.too_long',
        `the derived slug "${slug}" is longer than ${MAX_SLUG}`,
      );
      return undefined;
    }
    if (!checkName(m, slug, env)) return undefined;
    return {
      slug,
      tenant: tenant.id,
      columns: { tenant_id: tenant.id, system_id: system.id, qualifier: spec.qualifier ?? null },
    };
  },

  async IntegrationResource(m, env) {
    const { spec } = m;
    const blocks = {
      'kafka-topic': 'kafkaTopic',
      'blob-container': 'blobContainer',
      database: 'database',
    } as const;
    const own = blocks[spec.type];
    let ok = true;
    for (const block of Object.values(blocks)) {
      if (block !== own && spec[block] !== undefined) {
        env.errors.add(`${env.at}/spec/${block}`, 'field.not_allowed', `not allowed for type ${spec.type}`);
        ok = false;
      }
    }
    if (spec.type !== 'blob-container' && spec[own] === undefined) {
      env.errors.add(`${env.at}/spec/${own}`, 'field.required', `required for type ${spec.type}`);
      ok = false;
    }
    const byDeployment = 'deployment' in spec.scope;
    const scopeSlug = 'deployment' in spec.scope ? spec.scope.deployment : spec.scope.tenant;
    const scope = byDeployment
      ? await ref(env, 'Deployment', scopeSlug, '/spec/scope/deployment', 'deployment.not_found')
      : await ref(env, 'Tenant', scopeSlug, '/spec/scope/tenant', 'tenant.not_found');
    if (!scope || !ok) return undefined;
    const tenantId = byDeployment ? String(scope.tenant_id) : scope.id;

    let slug: string;
    let physical: string;
    if (spec.type === 'kafka-topic') {
      const t = spec.kafkaTopic!;
      slug = [scope.slug, t.domain, t.subdomain, t.event, t.version, t.access].join('.');
      physical = kafkaTopicName(scope.id, t);
      for (const [i, consumer] of (t.consumers ?? []).entries()) {
        const d = await ref(
          env,
          'Deployment',
          consumer,
          `/spec/kafkaTopic/consumers/${i}`,
          'consumer.not_found',
        );
        if (d && d.tenant_id !== tenantId) {
          env.errors.add(
            `${env.at}/spec/kafkaTopic/consumers/${i}`,
            'consumer.cross_tenant',
            'a consumer must be a deployment of the same tenant',
          );
          ok = false;
        }
        if (!d) ok = false;
      }
    } else if (spec.type === 'blob-container') {
      slug = `${scope.slug}.blob`;
      physical = scope.slug;
    } else {
      const isolation = spec.database!.isolation;
      slug = `${scope.slug}.database`;
      const base = scope.slug.replace(/-/g, '_');
      physical =
        isolation === 'silo'
          ? `tenantry_${base}`
          : isolation === 'pool'
            ? `t_${base}`
            : `shared/${scope.slug}`;
    }
    if (!ok || !checkName(m, slug, env)) return undefined;
    return {
      slug,
      tenant: tenantId,
      columns: {
        tenant_id: tenantId,
        deployment_id: byDeployment ? scope.id : null,
        scope: byDeployment ? 'deployment' : 'tenant',
        resource_type: spec.type,
        physical_name: physical,
      },
    };
  },
};

// Placement kinds (issue 8): platform objects named by their manifest.
function named(m: Manifest, env: ResolveEnv, pattern: RegExp, what: string): string | undefined {
  const slug = m.metadata.name;
  if (slug === undefined || !pattern.test(slug)) {
    env.errors.add(
      `${env.at}/metadata/name`,
      slug === undefined ? 'field.required' : 'slug.invalid',
      `a ${m.kind.toLowerCase()} needs a name of ${what}`,
    );
    return undefined;
  }
  return slug;
}
const SEGMENT = /^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$/;

const placementResolvers: { [K in 'Region' | 'Cell' | 'Plan']: Resolver<K> } = {
  async Region(m, env) {
    const slug = named(m, env, SEGMENT, 'lowercase letters, digits and inner hyphens (at most 30)');
    return slug === undefined ? undefined : { slug, tenant: null, columns: {} };
  },

  async Cell(m, env) {
    const slug = named(m, env, new RegExp(LABEL_PATTERN), 'a lowercase DNS label');
    const { spec } = m;
    let ok = slug !== undefined;
    const regions = await knownRegions(env.trx, env.config);
    if (!regions.includes(spec.region)) {
      env.errors.add(
        `${env.at}/spec/region`,
        'region.unknown',
        `unknown region; regions: ${regions.join(', ')}`,
      );
      ok = false;
    }
    for (const [i, t] of spec.environmentTypes.entries()) {
      if (!env.config.environmentTypes.includes(t)) {
        env.errors.add(
          `${env.at}/spec/environmentTypes/${i}`,
          'environment_type.unknown',
          `unknown environment type; one of ${env.config.environmentTypes.join(', ')}`,
        );
        ok = false;
      }
    }
    if (!ok || slug === undefined) return undefined;
    return { slug, tenant: null, columns: { region: spec.region, stage: spec.stage, tenancy: spec.tenancy } };
  },

  async Plan(m, env) {
    const slug = named(
      m,
      env,
      SEGMENT,
      'a plan code: lowercase letters, digits and inner hyphens (at most 30)',
    );
    return slug === undefined ? undefined : { slug, tenant: null, columns: {} };
  },
};

const allResolvers: { [K in Kind]: Resolver<K> } = { ...resolvers, ...placementResolvers };

/** The resolver of WebhookEndpoint, which also settles its signing secret (see webhook-secrets.ts). */
async function resolveWebhookEndpoint(
  m: Manifest<'WebhookEndpoint'>,
  env: ResolveEnv,
): Promise<Resolution | undefined> {
  const name = m.metadata.name;
  if (name === undefined || !isLabel(name)) {
    env.errors.add(
      `${env.at}/metadata/name`,
      name === undefined ? 'field.required' : 'slug.invalid',
      'a webhook endpoint needs a name that is a lowercase DNS label',
    );
    return undefined;
  }
  const refused = literalAddressRefusal(m.spec.url, env.config.events.webhookAllowedNetworks);
  if (refused) {
    env.errors.add(`${env.at}/spec/url`, 'webhook.url_forbidden', refused);
    return undefined;
  }
  let tenantId: string | null = null;
  let slug = name;
  const tenantRef = m.metadata.tenant;
  if (tenantRef === undefined) {
    const r = await sql<{ platform: boolean }>`select tenantry_is_platform() as platform`.execute(env.trx);
    if (!r.rows[0]?.platform) {
      env.errors.add(
        `${env.at}/metadata/tenant`,
        'field.required',
        'a tenant caller must name its tenant; platform-wide endpoints are for operators',
      );
      return undefined;
    }
  } else {
    const tenant = /^[0-9a-f-]{36}$/i.test(tenantRef)
      ? await findById(env.trx, 'Tenant', tenantRef.toLowerCase())
      : await findBySlug(env.trx, 'Tenant', tenantRef);
    if (!tenant) {
      env.errors.add(`${env.at}/metadata/tenant`, 'tenant.not_found', `Tenant "${tenantRef}" does not exist`);
      return undefined;
    }
    tenantId = tenant.id;
    slug = `${tenant.slug}.${name}`;
  }
  const existing = await findBySlug(env.trx, 'WebhookEndpoint', slug, { forUpdate: true });
  const change = applySecret(
    (existing?.secrets as StoredSecret[] | undefined) ?? null,
    m.spec.secret,
    new Date(),
    env.config.events.webhookSecretOverlapMs,
  );
  if (change.kind === 'unknown_ref') {
    env.errors.add(
      `${env.at}/spec/secret`,
      'webhook.secret_ref_unknown',
      "not the reference of this endpoint's current secret; give a whsec_ value to rotate",
    );
    return undefined;
  }
  const secrets = JSON.stringify(change.secrets);
  return {
    slug,
    tenant: tenantId,
    columns: { tenant_id: tenantId, name, secrets },
    spec: { ...m.spec, secret: change.ref },
    updateColumns: { secrets },
    ...(change.generated ? { generatedSecret: change.generated } : {}),
  };
}

export function resolve(m: Manifest, env: ResolveEnv): Promise<Resolution | undefined> {
  if (m.metadata.tenant !== undefined && m.kind !== 'WebhookEndpoint') {
    env.errors.add(`${env.at}/metadata/tenant`, 'field.not_allowed', `not allowed for ${m.kind}`);
    return Promise.resolve(undefined);
  }
  return (allResolvers[m.kind] as Resolver<Kind>)(m, env);
}

/** The tenant an existing row belongs to. */
export function tenantOf(kind: Kind, row: { id: string; tenant_id?: string | null }): string | null {
  if (kind === 'Tenant') return row.id;
  if (kind === 'Deployment' || kind === 'IntegrationResource' || kind === 'WebhookEndpoint')
    return row.tenant_id ?? null;
  return null;
}

/** Query filters per kind: name → SQL condition. A value may be a slug or a UUID where it names an object. */
const byRef = (t: string, v: string) =>
  sql`(select id from ${sql.table(t)} where slug = ${v} or id::text = ${v})`;
/** `search`: slugs that start with the text (LIKE wildcards in it are taken literally). */
const slugPrefix = (v: string) => sql`slug like ${`${v.replace(/[\\%_]/g, (c) => `\\${c}`)}%`}`;
export const LIST_FILTERS: Record<Kind, Record<string, (v: string) => RawBuilder<unknown>>> = {
  Customer: { phase: (v) => sql`phase = ${v}`, search: slugPrefix },
  System: { phase: (v) => sql`phase = ${v}` },
  Tenant: {
    cell: (v) => sql`cell_id in ${byRef('cells', v)}`,
    plan: (v) => sql`spec->>'plan' = ${v}`,
    customer: (v) => sql`customer_id in ${byRef('customers', v)}`,
    region: (v) => sql`region = ${v}`,
    environmentType: (v) => sql`environment_type = ${v}`,
    phase: (v) => sql`phase = ${v}`,
    lifecycle: (v) => sql`lifecycle = ${v}`,
    search: slugPrefix,
  },
  Deployment: {
    tenant: (v) => sql`tenant_id in ${byRef('tenants', v)}`,
    system: (v) => sql`system_id in ${byRef('systems', v)}`,
    customer: (v) => sql`tenant_id in (select id from tenants where customer_id in ${byRef('customers', v)})`,
    region: (v) => sql`tenant_id in (select id from tenants where region = ${v})`,
    environmentType: (v) => sql`tenant_id in (select id from tenants where environment_type = ${v})`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
  },
  IntegrationResource: {
    tenant: (v) => sql`tenant_id in ${byRef('tenants', v)}`,
    deployment: (v) => sql`deployment_id in ${byRef('deployments', v)}`,
    type: (v) => sql`resource_type = ${v}`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
  },
  Region: { phase: (v) => sql`phase = ${v}` },
  Cell: {
    region: (v) => sql`region = ${v}`,
    stage: (v) => sql`stage = ${v}`,
    tenancy: (v) => sql`tenancy = ${v}`,
    phase: (v) => sql`phase = ${v}`,
  },
  Plan: { phase: (v) => sql`phase = ${v}` },
  WebhookEndpoint: {
    tenant: (v) => (v === 'platform' ? sql`tenant_id is null` : sql`tenant_id in ${byRef('tenants', v)}`),
    phase: (v) => sql`phase = ${v}`,
  },
};
