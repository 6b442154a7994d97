import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploymentManifests, until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { finished, startWorkflowEngine } from '../../test/helpers/workflows.js';
import { ProviderError } from '../providers/provider.js';
import { lifecycleWorkflowTypes } from './lifecycle-workflows.js';
import type { WorkflowDefinition, WorkflowRegistry } from './workflow.js';

const customer = `wa${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
let s: TestServer;
let tenantAdmin: string;

beforeAll(async () => {
  s = await startTestServer();
  expect((await s.request('POST', '/v1/apply', { body: deploymentManifests(customer, 'plan') })).status).toBe(
    200,
  );
  tenantAdmin = await s.token({ subject: 'ann', tenant, roles: ['tenant-admin'] });
});
afterAll(() => s?.close());

/** The lifecycle types with step `name` replaced by `fail` (an injected fault). */
function failing(name: string, fail: () => Promise<unknown>): WorkflowRegistry {
  return new Map(
    [...lifecycleWorkflowTypes(s.t.db)].map(([type, def]) => {
      const d = def as WorkflowDefinition<unknown>;
      return [
        type,
        {
          ...d,
          steps: d.steps.map((x) => (x.name === name ? { ...x, run: fail } : x)),
        } as WorkflowDefinition<never>,
      ];
    }),
  );
}

const deployment = () => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Deployment',
  metadata: {},
  spec: { tenant, system: 'plan', qualifier: `q${randomBytes(2).toString('hex')}` },
});

async function auditActions(): Promise<string[]> {
  const r = await s.t.owner.query(
    `select action from audit_records where action like 'workflow.%' order by time, id`,
  );
  return r.rows.map((x) => x.action);
}

describe('workflows over HTTP', () => {
  it('suspend: the tenant reads but gets 423 on writes; a second request gets 409 naming the workflow; cancel undoes it', async () => {
    expect((await s.request('POST', '/v1/apply', { body: [deployment()], token: tenantAdmin })).status).toBe(
      200,
    );
    const res = await s.request('POST', `/v1/tenants/${tenant}/suspend`);
    expect(res.status).toBe(200);
    const id = res.headers.get('tenantry-workflow')!;
    expect(res.headers.get('link')).toBe(`</v1/workflows/${id}>; rel="monitor"`);

    const write = await s.request('POST', '/v1/apply', { body: [deployment()], token: tenantAdmin });
    expect(write.status).toBe(423);
    expect(write.body).toMatchObject({ code: 'tenant.suspended' });
    expect((await s.request('GET', `/v1/tenants/${tenant}`, { token: tenantAdmin })).status).toBe(200);

    const again = await s.request('POST', `/v1/tenants/${tenant}/resume`);
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ code: 'workflow.in_progress', details: { workflowId: id } });

    const list = await s.request('GET', `/v1/workflows?tenant=${tenant}&state=Pending`);
    expect(list.status).toBe(200);
    expect(list.body.items.map((w: { id: string }) => w.id)).toEqual([id]);
    const mine = await s.request('GET', '/v1/workflows', { token: tenantAdmin });
    expect(mine.body.items.map((w: { id: string }) => w.id)).toContain(id);
    expect((await s.request('GET', '/v1/workflows?state=Bogus')).status).toBe(422);

    const detail = await s.request('GET', `/v1/workflows/${id}`);
    expect(detail.body).toMatchObject({
      id,
      type: 'lifecycle.suspend',
      state: 'Pending',
      tenantSlug: tenant,
    });
    expect(detail.body.steps.map((x: { name: string; state: string }) => `${x.name}:${x.state}`)).toEqual([
      'record-access:Pending',
      'pause-webhooks:Pending',
      'revoke-database-logins:Pending',
      'deny-kafka-principals:Pending',
      'revoke-blob-access:Pending',
    ]);
    expect((await s.request('POST', `/v1/workflows/${id}/retry`)).status).toBe(409);

    const cancel = await s.request('POST', `/v1/workflows/${id}/cancel`);
    expect(cancel.status).toBe(200);
    expect(cancel.body.state).toBe('Compensating');
    const e = startWorkflowEngine(s.t);
    try {
      expect(await finished(s.t, id)).toMatchObject({
        state: 'Cancelled',
        error: expect.stringMatching(/cancelled by/),
      });
    } finally {
      await e.stop();
    }
    const t = await s.request('GET', `/v1/tenants/${tenant}`);
    expect(t.body.status.lifecycle).toBe('Active');
    expect((await s.request('POST', '/v1/apply', { body: [deployment()], token: tenantAdmin })).status).toBe(
      200,
    );
    expect(await auditActions()).toEqual(['workflow.start', 'workflow.cancel']);
    expect((await s.request('GET', '/v1/workflows/not-a-uuid')).status).toBe(404);
  });

  it('a step failing for good: the completed steps are undone, the tenant is back Active, the workflow says why', async () => {
    const res = await s.request('POST', `/v1/tenants/${tenant}/suspend`);
    const id = res.headers.get('tenantry-workflow')!;
    const e = startWorkflowEngine(s.t, {
      registry: failing('deny-kafka-principals', async () => {
        throw new ProviderError('the cluster refused the ACL', 'InvalidConfiguration', false);
      }),
    });
    try {
      const w = await finished(s.t, id);
      expect(w).toMatchObject({
        state: 'Failed',
        error: 'step deny-kafka-principals: InvalidConfiguration: the cluster refused the ACL',
      });
    } finally {
      await e.stop();
    }
    const detail = await s.request('GET', `/v1/workflows/${id}`);
    expect(detail.body.steps.map((x: { name: string; state: string }) => `${x.name}:${x.state}`)).toEqual([
      'record-access:Compensated',
      'pause-webhooks:Compensated',
      'revoke-database-logins:Compensated',
      'deny-kafka-principals:Failed',
      'revoke-blob-access:Pending',
    ]);
    expect((await s.request('GET', `/v1/tenants/${tenant}`)).body.status.lifecycle).toBe('Active');
    const held = await s.t.owner.query('select count(*)::int as n from tenant_suspensions');
    expect(held.rows[0].n).toBe(0);
    const types = await s.t.owner.query(`select type from outbox_events where subject = $1 order by seq`, [
      `workflows/${id}`,
    ]);
    expect(types.rows.map((r) => r.type)).toEqual([
      'dev.tenantry.workflow.started.v1',
      'dev.tenantry.workflow.step_completed.v1',
      'dev.tenantry.workflow.step_completed.v1',
      'dev.tenantry.workflow.step_completed.v1',
      'dev.tenantry.workflow.failed.v1',
    ]);
  });

  it('a step failing for a transient reason is retried with backoff, then waits for an operator; retry finishes it', async () => {
    let calls = 0;
    const res = await s.request('POST', `/v1/tenants/${tenant}/suspend`);
    const id = res.headers.get('tenantry-workflow')!;
    const e = startWorkflowEngine(s.t, {
      config: { maxAttempts: 3 },
      registry: failing('pause-webhooks', async () => {
        calls++;
        if (calls <= 3) throw new ProviderError('broker unreachable', 'BrokerUnavailable', true);
        return { held: true };
      }),
    });
    try {
      const waiting = await until('Waiting', async () => {
        const d = await s.request('GET', `/v1/workflows/${id}`);
        return d.body.state === 'Waiting' ? d.body : undefined;
      });
      expect(calls).toBe(3);
      expect(waiting.error).toMatch(
        /BrokerUnavailable: broker unreachable \(after 3 attempts; waiting for an operator/,
      );
      const retry = await s.request('POST', `/v1/workflows/${id}/retry`, { token: tenantAdmin });
      expect(retry.status).toBe(200);
      expect(await finished(s.t, id)).toMatchObject({ state: 'Succeeded' });
      expect(calls).toBe(4);
    } finally {
      await e.stop();
    }
    const d = await s.request('GET', `/v1/workflows/${id}`);
    expect(d.body.steps[1]).toMatchObject({ name: 'pause-webhooks', state: 'Completed', attempts: 1 });
    expect((await auditActions()).slice(-2)).toEqual(['workflow.start', 'workflow.retry']);
  });
});

describe('freezes', () => {
  it('a workflow started during a freeze is refused with its name; the types it allows pass; lifting it lets it run', async () => {
    const tenantToken = await s.token({ subject: 'ann', tenant, roles: ['tenant-admin'] });
    const bad = await s.request('PUT', '/v1/freezes/eu-maintenance', {
      body: { scope: 'region', reason: 'x' },
    });
    expect(bad.body).toMatchObject({ status: 422, code: 'freeze.target_required' });
    expect(
      (
        await s.request('PUT', '/v1/freezes/eu-maintenance', {
          body: { scope: 'platform', reason: 'x' },
          token: tenantToken,
        })
      ).status,
    ).toBe(403);
    const put = await s.request('PUT', '/v1/freezes/eu-maintenance', {
      body: { scope: 'region', target: 'eu', reason: 'database upgrade', allow: ['lifecycle.activate'] },
    });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({
      name: 'eu-maintenance',
      scope: 'region',
      target: 'eu',
      allow: ['lifecycle.activate'],
    });
    // The tenant is Suspended (the previous test); resuming it is not among the types the freeze allows.
    const refused = await s.request('POST', `/v1/tenants/${tenant}/resume`);
    expect(refused.status).toBe(423);
    expect(refused.body).toMatchObject({
      code: 'workflow.frozen',
      details: { freeze: 'eu-maintenance', reason: 'database upgrade' },
    });
    expect((await s.request('GET', `/v1/tenants/${tenant}`)).body.status.lifecycle).toBe('Suspended');
    expect((await s.request('GET', '/v1/freezes')).body.items.map((f: { name: string }) => f.name)).toEqual([
      'eu-maintenance',
    ]);
    expect((await s.request('DELETE', '/v1/freezes/eu-maintenance')).status).toBe(204);
    expect((await s.request('DELETE', '/v1/freezes/eu-maintenance')).status).toBe(404);
    const ok = await s.request('POST', `/v1/tenants/${tenant}/resume`);
    expect(ok.status).toBe(200);
    const audit = await s.t.owner.query(
      `select action, target_slug from audit_records where action like 'freeze.%' and outcome = 'success' order by time, id`,
    );
    expect(audit.rows.map((r) => `${r.action} ${r.target_slug}`)).toEqual([
      'freeze.declare eu-maintenance',
      'freeze.lift eu-maintenance',
    ]);
    const id = ok.headers.get('tenantry-workflow')!;
    const e = startWorkflowEngine(s.t);
    try {
      expect(await finished(s.t, id)).toMatchObject({ state: 'Succeeded' });
    } finally {
      await e.stop();
    }
  });
});

describe('retention over HTTP', () => {
  it('legal hold and purge: platform only, refusals are problem+json with stable codes, delete names its workflow', async () => {
    const other = `wr${randomBytes(3).toString('hex')}`;
    const t2 = `${other}-eu-dev`;
    expect((await s.request('POST', '/v1/apply', { body: deploymentManifests(other, 'plan') })).status).toBe(
      200,
    );
    const e = startWorkflowEngine(s.t);
    try {
      const archived = await s.request('POST', `/v1/tenants/${t2}/archive`);
      expect(await finished(s.t, archived.headers.get('tenantry-workflow')!)).toMatchObject({
        state: 'Succeeded',
      });
      const own = await s.token({ subject: 'bob', tenant: t2, roles: ['tenant-admin'] });
      const forbidden = await s.request('POST', `/v1/tenants/${t2}/legal-hold`, {
        body: { reason: 'mine' },
        token: own,
      });
      expect(forbidden.status).toBe(403);
      const empty = await s.request('POST', `/v1/tenants/${t2}/legal-hold`, { body: { reason: '' } });
      expect(empty.status).toBe(422);
      expect(empty.body.errors[0].pointer).toBe('/reason');
      const held = await s.request('POST', `/v1/tenants/${t2}/legal-hold`, { body: { reason: 'audit 7' } });
      expect(held.status).toBe(200);
      expect(held.body).toMatchObject({ lifecycle: 'Archived', legalHold: { reason: 'audit 7' } });

      const del = await s.request('DELETE', `/v1/tenants/${t2}`);
      expect(del.status).toBe(200);
      const deleteId = del.headers.get('tenantry-workflow')!;
      expect(del.headers.get('link')).toBe(`</v1/workflows/${deleteId}>; rel="monitor"`);
      expect(await finished(s.t, deleteId)).toMatchObject({ state: 'Succeeded' });
      const wf = await s.request('GET', `/v1/workflows/${deleteId}`);
      expect(wf.body).toMatchObject({ type: 'lifecycle.delete', state: 'Succeeded' });

      const locked = await s.request('POST', `/v1/tenants/${t2}/purge`);
      expect(locked.status).toBe(423);
      expect(locked.headers.get('content-type')).toContain('application/problem+json');
      expect(locked.body).toMatchObject({
        code: 'tenant.legal_hold',
        details: { legalHold: { reason: 'audit 7' } },
      });
      const released = await s.request('POST', `/v1/tenants/${t2}/legal-hold/release`, {
        body: { reason: 'closed' },
      });
      expect(released.status).toBe(200);
      expect(released.body.legalHold).toBeNull();
      const early = await s.request('POST', `/v1/tenants/${t2}/purge`);
      expect(early.status).toBe(409);
      expect(early.body).toMatchObject({ code: 'tenant.retention_active' });
      expect(early.body.details.purgeAfter).toBe(released.body.retention.purgeAfter);
      const r = await s.t.owner.query(`select count(*)::int as n from workflows where type = 'tenant.purge'`);
      expect(r.rows[0].n).toBe(0);
    } finally {
      await e.stop();
    }
  });
});

describe('activation issues service credentials', () => {
  it('activate: a tenant-scoped OAuth client whose client-credentials grant (openid-client) reads its tenant only; refused once deleted', async () => {
    const other = `ws${randomBytes(3).toString('hex')}`;
    const t3 = `${other}-eu-dev`;
    expect((await s.request('POST', '/v1/apply', { body: deploymentManifests(other, 'plan') })).status).toBe(
      200,
    );
    await s.t.owner.query(`update tenants set lifecycle = 'Draft' where slug = $1`, [t3]);
    expect((await s.request('GET', `/v1/tenants/${t3}/service-credentials`)).body).toMatchObject({
      code: 'service_credentials.not_found',
    });
    const e = startWorkflowEngine(s.t);
    try {
      const res = await s.request('POST', `/v1/tenants/${t3}/activate`);
      expect(res.status).toBe(200);
      const id = res.headers.get('tenantry-workflow')!;
      expect(await finished(s.t, id)).toMatchObject({ state: 'Succeeded' });
      const wf = await s.request('GET', `/v1/workflows/${id}`);
      expect(wf.body.steps.map((x: { name: string }) => x.name)).toContain('issue-service-credentials');

      // The tenant's own admin may read them; another tenant's may not.
      const own = await s.token({ subject: 'cy', tenant: t3, roles: ['tenant-admin'] });
      const creds = await s.request('GET', `/v1/tenants/${t3}/service-credentials`, { token: own });
      expect(creds.status).toBe(200);
      expect(creds.body).toMatchObject({ clientId: expect.stringMatching(/^tc_/), roles: ['service'] });
      expect(
        (await s.request('GET', `/v1/tenants/${t3}/service-credentials`, { token: tenantAdmin })).status,
      ).toBe(403);

      // The grant, by another implementation: openid-client with client_secret_basic.
      const meta = (await s.request('GET', '/.well-known/openid-configuration')).body;
      expect(meta.grant_types_supported).toEqual(['client_credentials']);
      const config = new oidc.Configuration(
        { issuer: meta.issuer, token_endpoint: `${s.url}/v1/oauth/token` },
        creds.body.clientId,
        undefined,
        oidc.ClientSecretBasic(creds.body.clientSecret),
      );
      oidc.allowInsecureRequests(config);
      const grant = await oidc.clientCredentialsGrant(config);
      expect(grant.token_type.toLowerCase()).toBe('bearer');
      expect(grant.expires_in).toBe(900);
      const mine = await s.request('GET', `/v1/tenants/${t3}`, { token: grant.access_token });
      expect(mine.status).toBe(200);
      const whoami = await s.request('GET', '/v1/whoami', { token: grant.access_token });
      expect(whoami.body).toMatchObject({ principal: { kind: 'service', subject: creds.body.clientId } });
      expect((await s.request('GET', `/v1/tenants/${tenant}`, { token: grant.access_token })).status).toBe(
        403,
      );

      // Wrong secret and unknown grant types are refused with stable codes.
      const wrong = await fetch(`${s.url}/v1/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_id: creds.body.clientId,
          client_secret: 'nope',
        }),
      });
      expect(wrong.status).toBe(401);
      expect(await wrong.json()).toMatchObject({ code: 'oauth.invalid_client' });
      const badGrant = await fetch(`${s.url}/v1/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'password' }),
      });
      expect(badGrant.status).toBe(422);
      expect(await badGrant.json()).toMatchObject({ code: 'oauth.unsupported_grant_type' });

      // Archived and deleted: the client gets no more tokens.
      const archived = await s.request('POST', `/v1/tenants/${t3}/archive`);
      await finished(s.t, archived.headers.get('tenantry-workflow')!);
      await s.request('DELETE', `/v1/tenants/${t3}`);
      await expect(oidc.clientCredentialsGrant(config)).rejects.toThrow();
    } finally {
      await e.stop();
    }
  });
});
