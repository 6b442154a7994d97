import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import type { RequestContext } from '../context/request-context.js';

/**
 * Seed 004: "CI/release metadata is not runtime tenant auth input". Every Cedar decision the server
 * makes is recorded with its whole input (principal, roles, scope, action, resource) while tenants
 * of several roles make the same requests twice: before, and after releases and a pipeline were
 * written whose labels, provenance and stage fields name those principals, roles and tenants. The
 * inputs and decisions must be identical, and no release or pipeline value may appear in any input.
 */
const doc = (kind: string, metadata: Record<string, unknown>, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});
const DIGEST = `sha256:${'e'.repeat(64)}`;
const MARK = 'zz-release-metadata';

describe('release and CI metadata never reach runtime authorisation (Cedar)', () => {
  let s: TestServer;
  const seen: string[] = [];
  let tokens: Record<string, string>;

  beforeAll(async () => {
    s = await startTestServer();
    const authorizer = s.security.authorizer;
    const decide = authorizer.decide.bind(authorizer);
    // Records through the real authorizer: the decision is Cedar's, the record is its whole input.
    authorizer.decide = (ctx: RequestContext, action, resource) => {
      const d = decide(ctx, action, resource);
      seen.push(
        JSON.stringify({
          actor: ctx.actor,
          issuer: ctx.issuer,
          roles: ctx.roles,
          scope: ctx.scope,
          customer: ctx.customerId ?? null,
          elevation: ctx.elevation?.id ?? null,
          action,
          resource,
          decision: d.decision,
          policies: d.policies,
        }),
      );
      return d;
    };
    const res = await s.request('POST', '/v1/apply', {
      body: [
        doc('Customer', { name: 'relauth' }, { displayName: 'Relauth', shortCode: 'relauth' }),
        doc('System', { name: 'shop' }, { displayName: 'Shop', serviceId: 'shop' }),
        doc('Tenant', {}, { customer: 'relauth', region: 'eu', environmentType: 'prod' }),
        doc('Tenant', {}, { customer: 'relauth', region: 'eu', environmentType: 'dev' }),
        doc('Deployment', {}, { tenant: 'relauth-eu-prod', system: 'shop' }),
        doc('Deployment', {}, { tenant: 'relauth-eu-dev', system: 'shop' }),
      ],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    tokens = {
      admin: await s.token({ subject: 'ada', tenant: 'relauth-eu-prod', roles: ['tenant-admin'] }),
      reader: await s.token({ subject: 'rex', tenant: 'relauth-eu-prod', roles: ['tenant-reader'] }),
      other: await s.token({ subject: 'otto', tenant: 'relauth-eu-dev', roles: ['tenant-admin'] }),
      none: await s.token({ subject: 'nora', tenant: 'relauth-eu-prod', roles: [] }),
    };
  }, 120_000);
  afterAll(async () => {
    await s?.close();
  });

  /** The same requests, by every principal: reads and writes of the tenant's own and another's objects. */
  async function round(): Promise<{ inputs: string[]; statuses: number[] }> {
    seen.length = 0;
    const statuses: number[] = [];
    for (const token of Object.values(tokens))
      for (const [method, path, body] of [
        ['GET', '/v1/tenants/relauth-eu-prod'],
        ['GET', '/v1/tenants/relauth-eu-prod/releases'],
        ['GET', '/v1/deployments/relauth-eu-prod-shop'],
        ['GET', '/v1/deployments/relauth-eu-dev-shop'],
        ['GET', '/v1/releases'],
        ['GET', '/v1/promotions'],
        ['POST', '/v1/promotions', { system: 'shop', version: '1.0.0', stage: 'prod' }],
        [
          'POST',
          '/v1/deployments/relauth-eu-prod-shop/health',
          { version: '1.0.0', readyReplicas: 1, desiredReplicas: 1, errorRate: 0 },
        ],
      ] as [string, string, unknown?][]) {
        const r = await s.request(method, path, { token, ...(body ? { body } : {}) });
        // Promotions and health only differ by what exists, never by who may: compared as allowed or not.
        statuses.push(r.status === 403 || r.status === 401 ? r.status : 0);
      }
    return { inputs: [...seen], statuses };
  }

  it('the same requests get the same Cedar inputs and decisions after releases and a pipeline say otherwise', async () => {
    const before = await round();
    expect(before.inputs.length).toBeGreaterThan(20);
    expect(before.statuses).toContain(403);
    // Release and CI metadata that names the principals, their roles and the tenants everywhere it can.
    const res = await s.request('POST', '/v1/apply', {
      body: [
        doc(
          'Pipeline',
          { name: 'shop-pipeline', labels: { role: 'platform-admin', tenant: 'relauth-eu-dev', mark: MARK } },
          {
            systems: ['shop'],
            stages: [
              { name: 'dev', environmentTypes: ['dev'] },
              { name: 'prod', environmentTypes: ['prod'], protected: true, approvals: 1 },
            ],
          },
        ),
        ...['1.0.0', '1.1.0'].map((version) =>
          doc(
            'Release',
            {
              labels: {
                'tenantry.dev/roles': 'platform-admin',
                'tenantry.dev/tenant': 'relauth-eu-dev',
                owner: 'rex',
                mark: MARK,
              },
            },
            {
              system: 'shop',
              version,
              artifacts: [{ service: 'api', image: 'registry.example.com/shop/api', digest: DIGEST }],
              configuration: [],
              produces: { events: [], apis: [] },
              provenance: {
                commit: 'a'.repeat(40),
                repository: `https://git.example.com/${MARK}`,
                pipelineRunId: `${MARK}-platform-admin-rex`,
                builder: 'rex',
                lineage: ['b'.repeat(40)],
              },
              validations: [{ name: `${MARK}-tenant-admin`, passed: true }],
            },
          ),
        ),
      ],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const after = await round();
    expect(after.statuses).toEqual(before.statuses);
    expect(after.inputs).toEqual(before.inputs);
    for (const input of after.inputs) {
      expect(input).not.toContain(MARK);
      expect(input).not.toContain('git.example.com');
    }
  }, 120_000);
});
