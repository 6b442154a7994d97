import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { configChecksum } from '../../domain/config-checksum.js';
import { Segment, Slug, strict, Text } from '../../domain/manifest.js';
import { byRef, checkName, col, defineKind, ref, slugPrefix, tooLong } from './kind.js';

/** Keys whose values are secrets: refused inline in content (give them in `secretRefs`). */
const SECRET_KEY = /(password|passwd|secret|token|api[-_]?key|private[-_]?key|credential)s?$/i;

export const ConfigurationSpec = Type.Object(
  {
    tenant: Slug,
    name: Segment,
    version: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    content: Type.Record(Type.String({ minLength: 1, maxLength: 256 }), Type.Unknown(), {
      maxProperties: 1000,
      description: 'the configuration (immutable); checksum: SHA-256 of its RFC 8785 canonical JSON',
    }),
    secretRefs: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_.-]{0,127}$' }),
        Type.String({
          pattern: '^[a-z][a-z0-9+.-]*://[^\\s]{1,1000}$',
          description: 'e.g. vault://kv/plan/db',
        }),
        { maxProperties: 100, description: 'secrets only as references, never values' },
      ),
    ),
    state: Type.Union([Type.Literal('draft'), Type.Literal('active')], {
      description: 'active: the latest active version is the one services run; older ones are superseded',
    }),
    reason: Text(2000),
    rollbackOf: Type.Optional(
      Type.Integer({ minimum: 1, description: 'the version whose content this one restores' }),
    ),
  },
  strict,
);

function secretPaths(v: unknown, at: string, out: string[]): void {
  if (Array.isArray(v)) {
    for (const [i, x] of v.entries()) secretPaths(x, `${at}/${i}`, out);
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      const p = `${at}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      if (SECRET_KEY.test(k) && (typeof x === 'string' || typeof x === 'number')) out.push(p);
      else secretPaths(x, p, out);
    }
  }
}

/**
 * A configuration version (seed 002 RuntimeConfiguration) of one tenant: immutable content with its
 * checksum; rollback is a new version with an old version's content, never a rewrite. Status
 * (draft / active / superseded) is settled by the controller (src/runtime/runtime.reconciler.ts).
 */
export const configuration = defineKind({
  kind: 'Configuration',
  table: 'configurations',
  path: 'configurations',
  spec: ConfigurationSpec,
  immutable: ['tenant', 'name', 'version', 'secretRefs', 'rollbackOf'],
  scope: 'tenant',
  parents: [{ kind: 'Tenant', column: 'tenant_id', onDelete: 'cascade' }],
  references: ['Tenant'],
  tenantMentions: [{ at: '/spec/tenant' }],
  applyTier: 1,
  async resolve(m, env) {
    const { spec } = m;
    const t = await ref(env, 'Tenant', spec.tenant, '/spec/tenant', 'tenant.not_found');
    if (!t) return undefined;
    const slug = `${t.slug}-${spec.name}-v${spec.version}`;
    if (tooLong(slug, env) || !checkName(m, slug, env)) return undefined;
    const secrets: string[] = [];
    secretPaths(spec.content, '/spec/content', secrets);
    for (const p of secrets)
      env.error(p, 'configuration.secret_inline', 'secrets only as references: move it to spec.secretRefs');
    if (secrets.length > 0) return undefined;
    const checksum = configChecksum(spec.content);
    const existing = await env.findBySlug('Configuration', slug);
    if (existing) {
      const was = existing.spec as { content: unknown; state: string };
      if (String(existing.checksum) !== checksum) {
        env.error(
          '/spec/content',
          'configuration.immutable',
          `version ${spec.version} of "${spec.name}" exists with checksum ${existing.checksum}; content never changes: apply a new version`,
        );
        return undefined;
      }
      if (was.state === 'active' && spec.state === 'draft') {
        env.error('/spec/state', 'configuration.immutable', 'an active version cannot become a draft again');
        return undefined;
      }
    }
    return {
      slug,
      tenant: t.id,
      columns: { tenant_id: t.id, config_name: spec.name, version: spec.version, checksum },
    };
  },
  filters: {
    tenant: (v) => sql`tenant_id in ${byRef('tenants', v)}`,
    name: (v) => sql`config_name = ${v}`,
    state: (v) => sql`version_state = ${v}`,
    phase: (v) => sql`phase = ${v}`,
    search: slugPrefix,
  },
  represent: {
    metadata: (row) => (row.tenant_id ? { tenantUuid: row.tenant_id } : {}),
    status: (row) => ({ checksum: String(row.checksum), state: String(row.version_state) }),
  },
  reconciler: 'runtime',
  backfill: false,
  events: ['created', 'updated', 'deleted'],
  cli: {
    name: 'config',
    aliases: ['config', 'configs', 'configuration', 'configurations'],
    columns: [
      col.name,
      col.spec('VERSION', 'version'),
      { header: 'STATE', value: (o) => String(o.status.state ?? '') },
      { header: 'CHECKSUM', value: (o) => String(o.status.checksum ?? '').slice(0, 12) },
      col.spec('REASON', 'reason'),
      col.age,
    ],
    wide: [col.uuid, { header: 'SHA-256', value: (o) => String(o.status.checksum ?? '') }, col.generation],
  },
});
