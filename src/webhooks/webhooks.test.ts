import { HTTP } from 'cloudevents';
import pino from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { WebhookReceiver } from '../../test/helpers/webhook-receiver.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { ValidationError } from '../errors/errors.js';
import { EventNotifier } from '../events/event-notifier.js';
import { claimDeliveries } from './claim-deliveries.js';
import { post, signedRequest, WebhookDispatcher } from './webhook-dispatcher.js';

let s: TestServer;
let notifier: EventNotifier;
let dispatcher: WebhookDispatcher;
const receivers: WebhookReceiver[] = [];

beforeAll(async () => {
  s = await startTestServer();
  // A compressed schedule: 4 attempts in all, a few tens of milliseconds apart.
  s.t.config.events = {
    ...s.t.config.events,
    pollMs: 50,
    webhookRetrySchedule: [40, 40, 40],
    webhookTimeoutMs: 2_000,
    webhookLeaseMs: 3_000,
    // The SSRF guard refuses loopback unless allowed; the receivers here are on loopback.
    webhookAllowedNetworks: ['127.0.0.0/8'],
  };
  notifier = new EventNotifier(s.t.appUrl, pino({ level: 'silent' }));
  await notifier.start();
  dispatcher = new WebhookDispatcher(s.t.db, s.t.config, pino({ level: 'silent' }), notifier);
  dispatcher.start();
});
afterAll(async () => {
  await dispatcher?.stop();
  await notifier?.stop();
  for (const r of receivers) await r.stop();
  await s?.close();
});

async function receiver(): Promise<WebhookReceiver> {
  const r = await new WebhookReceiver().start();
  receivers.push(r);
  return r;
}

/** A customer with one tenant; returns the tenant's slug and UUID. */
async function tenant(name: string): Promise<{ slug: string; uuid: string }> {
  const res = await s.request('POST', '/v1/apply', { body: [customerDoc(name), tenantDoc(name)] });
  expect(res.status).toBe(200);
  const t = res.body.results.find((r: { kind: string }) => r.kind === 'Tenant');
  return { slug: t.name, uuid: t.uuid };
}

async function endpoint(
  name: string,
  tenantSlug: string | undefined,
  spec: Record<string, unknown>,
): Promise<{ uuid: string; secret: string }> {
  const res = await s.request('POST', '/v1/webhook-endpoints', {
    body: { metadata: { name, ...(tenantSlug ? { tenant: tenantSlug } : {}) }, spec },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { uuid: res.body.metadata.uuid, secret: res.body.status.secret ?? spec.secret };
}

const parse = (r: { body: string }) => JSON.parse(r.body);

/** The endpoint's newest delivery, once the dispatcher has settled it as `status`. */
async function settled(endpointId: string, status: string) {
  for (let i = 0; i < 200; i++) {
    const d = (await s.request('GET', `/v1/webhooks/${endpointId}/deliveries`)).body.items[0];
    if (d?.status === status) return d;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no ${status} delivery`);
}

describe('signed webhooks', () => {
  it('delivers a signed CloudEvent on suspend, verified by standardwebhooks; the secret is shown once', async () => {
    const rx = await receiver();
    const t = await tenant('hooka');
    const ep = await endpoint('ops', t.slug, { url: `${rx.url}/hook` });
    expect(ep.secret).toMatch(/^whsec_/);

    const res = await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    expect(res.status).toBe(200);
    const [got] = await rx.waitFor((r) => r.length >= 1);
    // Other people's code is the judge: the signature and the CloudEvent.
    const payload = new Webhook(ep.secret).verify(got!.body, got!.headers) as Record<string, unknown>;
    expect(payload.type).toBe('dev.tenantry.tenant.suspended.v1');
    expect(payload.tenantid).toBe(t.uuid);
    // 1 tenant created, 2 endpoint created (not sent to the endpoint itself), 3 suspended.
    expect(payload.sequence).toBe('00000000000000000003');
    expect(got!.headers['webhook-id']).toBe(payload.id);
    expect(got!.headers['user-agent']).toMatch(/^Tenantry-Webhooks/);
    expect(got!.headers.authorization).toBeUndefined();
    const ce = HTTP.toEvent({ headers: got!.headers, body: got!.body });
    expect(Array.isArray(ce)).toBe(false);
    expect((ce as { correlationid?: string }).correlationid).toBeTruthy();
    expect(() =>
      new Webhook(`whsec_${Buffer.alloc(32, 1).toString('base64')}`).verify(got!.body, got!.headers),
    ).toThrow();

    // Afterwards the secret is only a reference, and it is nowhere in lineage, audit or events.
    const again = await s.request('GET', `/v1/webhook-endpoints/${ep.uuid}`);
    expect(again.body.spec.secret).toMatch(/^ref:sha256:[0-9a-f]{16}$/);
    expect(JSON.stringify(again.body)).not.toContain('whsec_');
    const leaks = await s.t.owner.query(
      `select (select count(*) from audit_records where concat(before, after, decision)::text like '%whsec_%')
            + (select count(*) from object_versions where concat(state, changes)::text like '%whsec_%')
            + (select count(*) from outbox_events where data::text like '%whsec_%') as n`,
    );
    expect(Number(leaks.rows[0].n)).toBe(0);

    // Every attempt is recorded and readable.
    const d = await settled(ep.uuid, 'delivered');
    expect(d.eventId).toBe(payload.id);
    expect(d.history[0]).toMatchObject({ attempt: 1, trigger: 'scheduled', statusCode: 204 });
    expect(d.history[0].latencyMs).toBeGreaterThanOrEqual(0);
  });

  it('filters by event type', async () => {
    const rx = await receiver();
    const t = await tenant('hookb');
    const ep = await endpoint('only-resumes', t.slug, {
      url: rx.url,
      eventTypes: ['dev.tenantry.tenant.resumed.v1'],
    });
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    await settleWorkflows(s.t);
    await s.request('POST', `/v1/tenants/${t.slug}/resume`);
    const got = await rx.waitFor((r) => r.length >= 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(got.map((g) => parse(g).type)).toEqual(['dev.tenantry.tenant.resumed.v1']);
    new Webhook(ep.secret).verify(got[0]!.body, got[0]!.headers);
  });

  it('keeps per-tenant order under retries: event 2 waits for event 1', async () => {
    const rx = await receiver();
    const t = await tenant('hookc');
    await endpoint('ordered', t.slug, { url: rx.url });
    rx.behaviour = ({ n }) => (n === 0 ? { status: 503, headers: { 'retry-after': '0' } } : 200);
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    await settleWorkflows(s.t);
    await s.request('POST', `/v1/tenants/${t.slug}/resume`);
    await settleWorkflows(s.t);
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    const got = await rx.waitFor((r) => r.filter((x) => x.status === 200).length >= 3);
    const seqs = got.map((g) => [Number(parse(g).sequence), g.status]);
    expect(seqs).toEqual([
      [3, 503],
      [3, 200],
      // Between them, each lifecycle workflow's own events (started, a step_completed per step,
      // succeeded) take their places in the tenant's sequence; this endpoint is not sent them.
      [11, 200],
      [18, 200],
    ]);
    // The retry carries the same webhook-id and a fresh signature.
    expect(got[1]!.headers['webhook-id']).toBe(got[0]!.headers['webhook-id']);
  });

  it('disables the endpoint on 410 Gone, with an event and an audit record', async () => {
    const rx = await receiver();
    rx.behaviour = () => 410;
    const t = await tenant('hookd');
    const ep = await endpoint('gone', t.slug, { url: rx.url });
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    await rx.waitFor((r) => r.length >= 1);
    let body: { spec: { enabled?: boolean }; status: { conditions: { reason: string }[] } } | undefined;
    for (let i = 0; i < 100; i++) {
      body = (await s.request('GET', `/v1/webhook-endpoints/${ep.uuid}`)).body;
      if (body?.spec.enabled === false) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(body!.spec.enabled).toBe(false);
    expect(body!.status.conditions[0]!.reason).toBe('EndpointGone');
    const events = await s.request('GET', `/v1/events?tenant=${t.slug}`);
    expect(events.body.items.map((e: { type: string }) => e.type)).toContain(
      'dev.tenantry.webhookendpoint.disabled.v1',
    );
    const audit = await s.t.owner.query(
      `select count(*)::int as n from audit_records where action = 'webhookendpoint.disable' and target_id = $1`,
      [ep.uuid],
    );
    expect(audit.rows[0].n).toBe(1);
    // No further attempts while disabled.
    await settleWorkflows(s.t);
    await s.request('POST', `/v1/tenants/${t.slug}/resume`);
    await new Promise((r) => setTimeout(r, 300));
    expect(rx.received).toHaveLength(1);
  });

  it('dead-letters after the last attempt and requeue delivers once the receiver is fixed', async () => {
    const rx = await receiver();
    rx.behaviour = () => 500;
    const t = await tenant('hooke');
    const ep = await endpoint('flaky', t.slug, { url: rx.url });
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    await rx.waitFor((r) => r.length >= 4);
    let dead: { id: string; history: { attempt: number; statusCode: number }[]; lastError: string }[] = [];
    for (let i = 0; i < 100 && dead.length === 0; i++) {
      dead = (await s.request('GET', `/v1/webhooks/${ep.uuid}/deliveries?status=dead`)).body.items;
      await new Promise((r) => setTimeout(r, 30));
    }
    expect(dead).toHaveLength(1);
    expect(dead[0]!.history.map((h) => [h.attempt, h.statusCode])).toEqual([
      [1, 500],
      [2, 500],
      [3, 500],
      [4, 500],
    ]);
    expect(dead[0]!.lastError).toMatch(/gave up after 4 attempts/);
    await new Promise((r) => setTimeout(r, 200));
    expect(rx.received).toHaveLength(4);

    rx.behaviour = () => 200;
    const bad = await s.request('POST', `/v1/webhooks/${ep.uuid}/requeue`, {
      body: { deliveryIds: ['nope'] },
    });
    expect(bad.status).toBe(422);
    expect(bad.body.errors[0].pointer).toBe('/deliveryIds');
    const requeue = await s.request('POST', `/v1/webhooks/${ep.uuid}/requeue`, { body: {} });
    expect(requeue.body.requeued).toEqual([dead[0]!.id]);
    const got = await rx.waitFor((r) => r.length >= 5);
    expect(got[4]!.status).toBe(200);
    expect(got[4]!.headers['webhook-id']).toBe(got[0]!.headers['webhook-id']);
    const after = await settled(ep.uuid, 'delivered');
    expect(after.history.at(-1)).toMatchObject({ trigger: 'manual', statusCode: 200 });
  });

  it('signs with both the old and the new secret during a rotation', async () => {
    const rx = await receiver();
    const t = await tenant('hookf');
    const ep = await endpoint('rotating', t.slug, { url: rx.url });
    const next = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    const apply = await s.request('POST', '/v1/apply', {
      body: {
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'rotating', tenant: t.slug },
        spec: { url: rx.url, secret: next },
      },
    });
    expect(apply.body.results[0].action).toBe('configured');
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    const [got] = await rx.waitFor((r) => r.length >= 1);
    expect(got!.headers['webhook-signature']!.split(' ')).toHaveLength(2);
    new Webhook(ep.secret).verify(got!.body, got!.headers);
    new Webhook(next).verify(got!.body, got!.headers);
    // Re-applying with the reference (what `get` shows) changes nothing.
    const ref = (await s.request('GET', `/v1/webhook-endpoints/${ep.uuid}`)).body.spec.secret;
    const same = await s.request('POST', '/v1/apply', {
      body: {
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'rotating', tenant: t.slug },
        spec: { url: rx.url, secret: ref },
      },
    });
    expect(same.body.results[0].action).toBe('unchanged');
  });

  it('redelivers with the same webhook-id after a dispatcher dies mid-delivery', async () => {
    const rx = await receiver();
    const t = await tenant('hookg');
    const ep = await endpoint('crash', t.slug, { url: rx.url });
    await dispatcher.stop();
    try {
      await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
      // A dispatcher claims the delivery, sends it, and dies before recording the outcome.
      const [claimed] = await claimDeliveries(s.t.db, 'doomed', 10, 300);
      expect(claimed?.endpoint_id).toBe(ep.uuid);
      await post(claimed!.url, signedRequest(claimed!, s.t.config.source, [ep.secret]), 2_000);
    } finally {
      dispatcher.start();
    }
    const got = await rx.waitFor((r) => r.length >= 2);
    expect(got[1]!.headers['webhook-id']).toBe(got[0]!.headers['webhook-id']);
    new Webhook(ep.secret).verify(got[1]!.body, got[1]!.headers);
    const d = await settled(ep.uuid, 'delivered');
    expect(d.attempts).toBe(2);
  });

  it('refuses private and loopback URLs unless allowed (SSRF), at apply and before every attempt', async () => {
    const rx = await receiver();
    const t = await tenant('hookh');
    const events = s.t.config.events;
    const ep = await endpoint('guarded', t.slug, { url: rx.url });
    try {
      s.t.config.events = { ...events, webhookAllowedNetworks: [] };
      for (const url of [
        'http://169.254.169.254/latest/meta-data',
        'http://10.1.2.3/x',
        'http://[::1]:80/',
        'http://localhost:1/',
      ]) {
        const res = await s.request('POST', '/v1/webhook-endpoints', {
          body: { metadata: { name: 'nope', tenant: t.slug }, spec: { url } },
        });
        expect(res.status, url).toBe(422);
        expect(res.body.errors[0]).toMatchObject({ pointer: '/spec/url', code: 'webhook.url_forbidden' });
      }
      // The dispatcher checks again before sending: nothing reaches the receiver.
      const guarded = new WebhookDispatcher(s.t.db, s.t.config, pino({ level: 'silent' }));
      await dispatcher.stop();
      try {
        await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
        expect(await guarded.runOnce()).toBe(1);
        const d = (await s.request('GET', `/v1/webhooks/${ep.uuid}/deliveries`)).body.items[0];
        expect(d.history[0].error).toBe('refused (private address)');
        expect(d.status).toBe('pending');
        expect(rx.received).toHaveLength(0);
      } finally {
        dispatcher.start();
      }
    } finally {
      s.t.config.events = events;
    }
  });

  it('disables an endpoint that has failed for longer than the configured period', async () => {
    const rx = await receiver();
    rx.behaviour = () => 500;
    const t = await tenant('hooki');
    const events = s.t.config.events;
    const ep = await endpoint('failing', t.slug, { url: rx.url });
    s.t.config.events = { ...events, webhookDisableAfterMs: 0 };
    try {
      await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
      let body: { spec: { enabled?: boolean }; status: { conditions: { reason: string }[] } } | undefined;
      for (let i = 0; i < 100; i++) {
        body = (await s.request('GET', `/v1/webhook-endpoints/${ep.uuid}`)).body;
        if (body?.spec.enabled === false) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(body!.spec.enabled).toBe(false);
      expect(body!.status.conditions[0]!.reason).toBe('EndpointFailing');
    } finally {
      s.t.config.events = events;
    }
  });

  it('lets a tenant manage only its own endpoints, never a platform-wide one', async () => {
    const t = await tenant('hookj');
    const registry = createRegistry(s.t.db, s.t.config);
    const asTenantCtx = {
      ...systemContext('tenant-admin'),
      scope: { kind: 'tenant' as const, tenantId: t.uuid },
    };
    const doc = (metadata: Record<string, unknown>) => ({
      apiVersion: 'tenantry.dev/v1',
      kind: 'WebhookEndpoint',
      metadata,
      spec: { url: 'http://127.0.0.1:9/x' },
    });
    const err = await registry.apply(asTenantCtx, [doc({ name: 'mine' })]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).errors[0]).toMatchObject({
      pointer: '/0/metadata/tenant',
      code: 'field.required',
    });
    const [own] = await registry.apply(asTenantCtx, [doc({ name: 'mine', tenant: t.slug })]);
    expect(own?.action).toBe('created');
    const list = await registry.list(asTenantCtx, 'WebhookEndpoint', { filters: {}, limit: 100 });
    expect(list.items.map((i) => i.metadata.tenant)).toEqual([t.uuid]);
  });
});
