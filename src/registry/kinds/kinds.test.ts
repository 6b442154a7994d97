import { describe, expect, it } from 'vitest';
import { parseDocuments, validateManifests } from '../../domain/manifest-parser.js';
import {
  APPLY_ORDER,
  BACKFILL_KINDS,
  CLI_PATHS,
  CLOUD_EVENT_TYPES,
  checkDefinitions,
  childrenOf,
  EVENT_NAMES,
  KIND_DEFINITIONS,
  KIND_PATHS,
  KINDS,
  TABLES,
} from './index.js';
import type { KindDefinition } from './kind.js';

const defs = KIND_DEFINITIONS as unknown as readonly KindDefinition[];
const tenant = defs.find((d) => d.kind === 'Tenant')!;

describe('the kind catalogue', () => {
  it('passes its own check', () => {
    expect(() => checkDefinitions(defs)).not.toThrow();
  });

  it.each([
    ['table', { table: undefined }, /Tenant: no table/],
    ['path', { path: '' }, /Tenant: no URL path/],
    ['schema', { spec: undefined }, /Tenant: no spec schema/],
    ['event names', { events: ['created', 'updated'] }, /Tenant: no "deleted" event/],
    ['CLI columns', { cli: { ...tenant.cli, columns: [] } }, /Tenant: no CLI name or columns/],
    ['a reference applied later', { references: ['Deployment'] }, /Tenant: refers to Deployment/],
    [
      'an unknown parent',
      { parents: [{ kind: 'Nope', column: 'x', onDelete: 'keep' }] },
      /unknown kind Nope/,
    ],
  ] as const)('fails when a definition lacks its %s', (_what, change, message) => {
    const broken = defs.map((d) => (d === tenant ? ({ ...d, ...change } as unknown as KindDefinition) : d));
    expect(() => checkDefinitions(broken)).toThrow(message);
  });

  it('fails when two kinds share a table or path', () => {
    const copy = { ...tenant, kind: 'Tenant2', cli: { ...tenant.cli, name: 't2', aliases: [] } };
    expect(() => checkDefinitions([...defs, copy])).toThrow(/table "tenants" is also Tenant's/);
  });

  it('derives the maps the registry, API, CLI and controller use', () => {
    expect(KINDS).toEqual([
      'Customer',
      'System',
      'Tenant',
      'Deployment',
      'IntegrationResource',
      'Region',
      'Cell',
      'Plan',
      'WebhookEndpoint',
      'Configuration',
      'Service',
      'ScalingPolicy',
      'Release',
      'Pipeline',
    ]);
    expect(TABLES.IntegrationResource).toBe('integration_resources');
    expect(KIND_PATHS.WebhookEndpoint).toBe('webhook-endpoints');
    expect(CLI_PATHS.ir).toBe('integration-resources');
    expect(CLI_PATHS.deploy).toBe('deployments');
    expect(APPLY_ORDER.slice(0, 3)).toEqual(['Region', 'Cell', 'Plan']);
    expect(BACKFILL_KINDS).toEqual([
      'Customer',
      'System',
      'Tenant',
      'Deployment',
      'IntegrationResource',
      'Service',
    ]);
    expect(childrenOf('Tenant').map((c) => `${c.kind}:${JSON.stringify(c.ref.onDelete)}`)).toEqual([
      'Deployment:"cascade"',
      'IntegrationResource:"cascade"',
      'WebhookEndpoint:"keep"',
      'Configuration:"cascade"',
      'Service:"cascade"',
      'ScalingPolicy:"cascade"',
    ]);
    expect(childrenOf('Service').map((c) => c.kind)).toEqual(['ScalingPolicy']);
    expect(CLI_PATHS.svc).toBe('services');
    expect(CLI_PATHS.config).toBe('configurations');
    expect(EVENT_NAMES).toHaveLength(76);
    expect(CLOUD_EVENT_TYPES).toContain('dev.tenantry.tenant.failed_over.v1');
    expect(CLOUD_EVENT_TYPES).toContain('dev.tenantry.integrationresource.drifted.v1');
  });

  it('gives the WebhookEndpoint schema the event catalogue as its filter', () => {
    const [doc] = parseDocuments(
      'apiVersion: tenantry.dev/v1\nkind: WebhookEndpoint\nmetadata: {name: h}\nspec: {url: "https://x.example", eventTypes: [dev.tenantry.tenant.nope.v1]}',
    );
    const { errors } = validateManifests([doc]);
    expect(errors.map((e) => e.pointer)).toContain('/0/spec/eventTypes/0');
  });

  it('renders the CLI columns of a kind', () => {
    const o = {
      metadata: { name: 'ck-eu-prod', uuid: 'u', generation: 2, createdAt: new Date(0).toISOString() },
      spec: { customer: 'circle-k', region: 'eu', environmentType: 'prod', plan: 'gold' },
      status: { phase: 'Ready', lifecycle: 'Active', observedGeneration: 2, placement: { cell: 'c1' } },
    };
    const row = [...tenant.cli.columns, ...tenant.cli.wide].map((c) => c.value(o, 1000));
    expect(row).toEqual([
      'ck-eu-prod',
      'circle-k',
      'eu',
      'prod',
      'Active',
      'Ready',
      '1s',
      'u',
      'gold',
      'c1',
      '',
      '2/2',
      '',
    ]);
  });
});
