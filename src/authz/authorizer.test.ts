import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config.js';
import type { RequestContext } from '../context/request-context.js';
import { createDb } from '../db/database.js';
import { BuiltinIssuer } from '../identity/builtin-issuer.js';
import { createSecurity, installSecurity } from '../identity/security.js';
import { AccessDenied, Authorizer, groupOf } from './authorizer.js';

const ctx = (roles: string[], tenant?: string, kind: 'user' | 'service' = 'user'): RequestContext => ({
  actor: { principal: 'alice', kind },
  scope: tenant ? { kind: 'tenant', tenantId: tenant } : { kind: 'platform' },
  appId: 'test',
  sessionId: null,
  requestId: 'r',
  correlationId: 'c',
  roles,
  issuer: 'urn:test',
  customerId: tenant ? 'cust-1' : null,
});

function authorizer(file?: string): Authorizer {
  const a = new Authorizer(file);
  for (const x of ['tenant.read', 'tenant.write', 'tenant.suspend', 'customer.read', 'system.read'])
    a.registerAction(x);
  a.seal();
  return a;
}

describe('default policy set', () => {
  const a = authorizer();
  const tenantT1 = { kind: 'Tenant', id: 't1', tenantId: 't1' };
  const cases: [string, RequestContext, string, object, 'allow' | 'deny', string[]][] = [
    ['platform-admin writes', ctx(['platform-admin']), 'tenant.write', tenantT1, 'allow', ['platform-admin']],
    [
      'platform-operator reads',
      ctx(['platform-operator']),
      'tenant.read',
      tenantT1,
      'allow',
      ['platform-operator'],
    ],
    [
      'platform-operator runs workflows',
      ctx(['platform-operator']),
      'tenant.suspend',
      tenantT1,
      'allow',
      ['platform-operator'],
    ],
    ['platform-operator may not write', ctx(['platform-operator']), 'tenant.write', tenantT1, 'deny', []],
    [
      'tenant-admin writes its tenant',
      ctx(['tenant-admin'], 't1'),
      'tenant.write',
      tenantT1,
      'allow',
      ['tenant-admin'],
    ],
    [
      'tenant-admin not another tenant',
      ctx(['tenant-admin'], 't2'),
      'tenant.write',
      tenantT1,
      'deny',
      ['tenant-boundary'],
    ],
    [
      'platform-admin role in a tenant token is not platform',
      ctx(['platform-admin'], 't2'),
      'tenant.read',
      tenantT1,
      'deny',
      ['tenant-boundary'],
    ],
    [
      'tenant-reader reads its tenant',
      ctx(['tenant-reader'], 't1'),
      'tenant.read',
      tenantT1,
      'allow',
      ['tenant-reader'],
    ],
    ['tenant-reader may not write', ctx(['tenant-reader'], 't1'), 'tenant.write', tenantT1, 'deny', []],
    [
      'tenant-reader reads its customer',
      ctx(['tenant-reader'], 't1'),
      'customer.read',
      { kind: 'Customer', id: 'cust-1', tenantId: null, customerId: 'cust-1' },
      'allow',
      ['tenant-reader'],
    ],
    [
      'tenant-reader not another customer',
      ctx(['tenant-reader'], 't1'),
      'customer.read',
      { kind: 'Customer', id: 'cust-2', tenantId: null, customerId: 'cust-2' },
      'deny',
      [],
    ],
    [
      'tenant-reader reads the catalogue',
      ctx(['tenant-reader'], 't1'),
      'system.read',
      { kind: 'System', id: 's', tenantId: null },
      'allow',
      ['tenant-reader'],
    ],
    [
      'service reads its tenant',
      ctx(['service'], 't1', 'service'),
      'tenant.read',
      tenantT1,
      'allow',
      ['service'],
    ],
    ['service may not write', ctx(['service'], 't1', 'service'), 'tenant.write', tenantT1, 'deny', []],
    [
      'the service role needs a Service principal',
      ctx(['service'], 't1', 'user'),
      'tenant.read',
      tenantT1,
      'deny',
      [],
    ],
    ['no roles, nothing', ctx([]), 'tenant.read', tenantT1, 'deny', []],
  ];
  for (const [name, c, action, resource, decision, policies] of cases)
    it(name, () => {
      const d = a.decide(c, action, resource as never);
      expect({ decision: d.decision, policies: d.policies }).toEqual({ decision, policies });
      // Memoised decisions are the same.
      expect(a.decide(c, action, resource as never).decision).toBe(decision);
    });

  it('denies unknown actions and throws AccessDenied from authorize', () => {
    expect(a.decide(ctx(['platform-admin']), 'nothing.write', tenantT1).decision).toBe('deny');
    expect(() => a.authorize(ctx(['tenant-reader'], 't1'), 'tenant.write', tenantT1)).toThrow(AccessDenied);
  });

  it('groups actions by verb, failing closed to write', () => {
    expect([
      groupOf('events.read'),
      groupOf('tenant.suspend'),
      groupOf('webhook.write'),
      groupOf('x.frobnicate'),
    ]).toEqual(['read', 'operate', 'write', 'write']);
    expect(groupOf('breakglass.request')).toBe('elevate');
  });
});

describe('operator policies', () => {
  const file = (text: string) => {
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cedar-')), 'policies.cedar');
    fs.writeFileSync(f, text);
    return f;
  };

  it('are added from a file and take part in decisions', () => {
    const a = authorizer(
      file(`@id("readers-may-suspend")
permit (principal, action == Action::"tenant.suspend", resource)
when { principal.roles.contains("tenant-reader") && resource.tenant == principal.tenant };`),
    );
    const d = a.decide(ctx(['tenant-reader'], 't1'), 'tenant.suspend', {
      kind: 'Tenant',
      id: 't1',
      tenantId: 't1',
    });
    expect(d).toMatchObject({ decision: 'allow', policies: ['readers-may-suspend'] });
  });

  it('are validated at load: syntax, missing @id, unknown actions and attributes', () => {
    expect(() => new Authorizer(file('permit (principal, action, resource'))).toThrow();
    expect(() => new Authorizer(file('permit (principal, action, resource);'))).toThrow(/@id/);
    expect(() =>
      authorizer(file('@id("x") permit (principal, action == Action::"tenant.explode", resource);')),
    ).toThrow(/tenant\.explode/);
    expect(() =>
      authorizer(file('@id("y") permit (principal, action, resource) when { principal.shoeSize > 3 };')),
    ).toThrow(/shoeSize/);
    expect(() => authorizer(file('@id("tenant-admin") forbid (principal, action, resource);'))).toThrow(
      /already used/,
    );
  });
});

describe('routes', () => {
  it('refuse to start when a route declares no authorization action (fail closed)', async () => {
    const config = loadConfig({}, { TENANTRY_DATA_DIR: '/tmp/unused' });
    const db = createDb('postgres://unused@127.0.0.1:1/unused', 1);
    const security = await createSecurity(config, db, {
      issuer: await BuiltinIssuer.ephemeral('urn:t', 'tenantry'),
    });
    const app = Fastify();
    installSecurity(app, security, db);
    app.get('/v1/declared', { config: { action: 'thing.read' } }, async () => 'ok');
    expect(() => app.get('/v1/undeclared', async () => 'oops')).toThrow(/declares no authorization action/);
    await app.close();
    await db.destroy();
  });
});
