import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { isLabel } from '../../domain/identifiers.js';
import { strict, Text } from '../../domain/manifest.js';
import { byRef, col, defineKind } from './kind.js';

/** A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes. */
export const WEBHOOK_SECRET_PATTERN = '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$';
/** How a stored secret is shown after creation: a fingerprint, never the secret. */
export const WEBHOOK_SECRET_REF_PATTERN = '^ref:sha256:[0-9a-f]{16}$';

export const webhookEndpointSpec = (cloudEventTypes: readonly string[]) =>
  Type.Object(
    {
      url: Type.String({
        pattern: '^https?://[^\\s]+$',
        maxLength: 2048,
        description: 'http(s) URL the events are POSTed to',
      }),
      eventTypes: Type.Optional(
        Type.Array(Type.Union(cloudEventTypes.map((t) => Type.Literal(t))), {
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

/**
 * A webhook endpoint: where events are POSTed (Standard Webhooks). Owned by a tenant
 * (`metadata.tenant`) or platform-wide. Its URL check and secret rotation are src/webhooks' policy,
 * reached through the resolve environment.
 */
export const webhookEndpoint = defineKind({
  kind: 'WebhookEndpoint',
  table: 'webhook_endpoints',
  path: 'webhook-endpoints',
  spec: webhookEndpointSpec,
  immutable: [],
  scope: 'tenant',
  parents: [{ kind: 'Tenant', column: 'tenant_id', onDelete: 'keep' }],
  references: ['Tenant'],
  applyTier: 1,
  metadataTenant: true,
  // Checked against the caller's tenant like every manifest's (tenant.spoofing), JSON or YAML alike.
  tenantMentions: [{ at: '/metadata/tenant' }],
  async resolve(m, env) {
    const name = m.metadata.name;
    if (name === undefined || !isLabel(name)) {
      env.error(
        '/metadata/name',
        name === undefined ? 'field.required' : 'slug.invalid',
        'a webhook endpoint needs a name that is a lowercase DNS label',
      );
      return undefined;
    }
    const refused = env.webhooks.urlRefusal(m.spec.url);
    if (refused) {
      env.error('/spec/url', 'webhook.url_forbidden', refused);
      return undefined;
    }
    let tenantId: string | null = null;
    let slug = name;
    const tenantRef = m.metadata.tenant;
    if (tenantRef === undefined) {
      if (!(await env.isPlatform())) {
        env.error(
          '/metadata/tenant',
          'field.required',
          'a tenant caller must name its tenant; platform-wide endpoints are for operators',
        );
        return undefined;
      }
    } else {
      const tenant = /^[0-9a-f-]{36}$/i.test(tenantRef)
        ? await env.findById('Tenant', tenantRef.toLowerCase())
        : await env.findBySlug('Tenant', tenantRef);
      if (!tenant) {
        env.error('/metadata/tenant', 'tenant.not_found', `Tenant "${tenantRef}" does not exist`);
        return undefined;
      }
      tenantId = tenant.id;
      slug = `${tenant.slug}.${name}`;
    }
    const existing = await env.findBySlug('WebhookEndpoint', slug, { forUpdate: true });
    const change = await env.webhooks.settleSecret(
      (existing?.secrets as unknown[] | undefined) ?? null,
      m.spec.secret,
      { tenantId, slug },
    );
    if (change.kind === 'unknown_ref') {
      env.error(
        '/spec/secret',
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
  },
  filters: {
    tenant: (v) => (v === 'platform' ? sql`tenant_id is null` : sql`tenant_id in ${byRef('tenants', v)}`),
    phase: (v) => sql`phase = ${v}`,
  },
  represent: {
    name: (row) => String(row.name),
    metadata: (row) => (row.tenant_id ? { tenant: row.tenant_id } : {}),
  },
  reconciler: 'accept',
  backfill: false,
  events: ['created', 'updated', 'deleted', 'disabled'],
  cli: {
    name: 'webhook',
    aliases: [
      'webhookendpoint',
      'webhookendpoints',
      'webhook-endpoint',
      'webhook-endpoints',
      'webhook',
      'webhooks',
    ],
    columns: [
      col.name,
      col.spec('URL', 'url'),
      { header: 'ENABLED', value: (o) => String(o.spec?.enabled ?? true) },
      col.phase,
      col.age,
    ],
    wide: [
      col.uuid,
      { header: 'TENANT', value: (o) => String(o.metadata.tenant ?? 'platform') },
      {
        header: 'EVENT TYPES',
        value: (o) => ((o.spec?.eventTypes as string[] | undefined) ?? ['*']).join(','),
      },
      col.generation,
      col.reason,
    ],
  },
});
