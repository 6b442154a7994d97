import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentStarter } from '../../test/helpers/agent-processes.js';
import { tempDataDir, until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { WebhookReceiver } from '../../test/helpers/webhook-receiver.js';
import { asPlatform } from '../db/database.js';
import { appendEvent } from '../events/append-event.js';
import { WebhookDispatcher } from '../webhooks/webhook-dispatcher.js';
import { AgentKey, sealForAgent } from './agent-webhook-secrets.js';

/**
 * Issue 22: webhook delivery in the data plane. The deliveries to endpoints of a tenant whose cell
 * is held by a joined agent are sent by that agent (a real `tenantry agent` process), signed with
 * the endpoint's secret that reached it sealed for its own key, verified by the `standardwebhooks`
 * package at a real receiver; the control plane keeps the record (attempts, retries) and its own
 * dispatcher sends nothing for that cell, while it goes on sending the other cells' deliveries.
 */
const log = pino({ level: 'silent' });
let s: TestServer;
let dispatcher: WebhookDispatcher;
const rxA = new WebhookReceiver();
const rxB = new WebhookReceiver();
const tenants: Record<'a' | 'b', string> = { a: '', b: '' };
const secrets: Record<'a' | 'b', string> = { a: '', b: '' };
const children: ChildProcess[] = [];
let dir = '';

const agentProcess = agentStarter(() => s.url, children, {
  // The resync interval the agent's own settings give it (the helper's is shorter).
  TENANTRY_RESYNC_MS: process.env.TENANTRY_RESYNC_MS,
  // The receivers are on loopback: the agent's side allows it (its own network policy).
  TENANTRY_WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8',
});

const cellDoc = (name: string) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Cell',
  metadata: { name },
  spec: {
    region: 'eu',
    stage: 'nonprod',
    environmentTypes: ['dev'],
    tenancy: 'shared',
    capacity: { tenants: 5 },
  },
});

async function write(which: 'a' | 'b', n: number): Promise<void> {
  await asPlatform(s.t.db, (trx) =>
    appendEvent(trx, {
      tenantId: tenants[which],
      name: 'tenant.updated',
      subject: `tenants/${which}`,
      data: { n },
      correlationId: 'agent-webhooks',
    }),
  );
}

const nOf = (body: string) => (JSON.parse(body) as { data: { n: number } }).data.n;
const pending = async (tenantId: string) =>
  Number(
    (
      await s.t.owner.query(
        `select count(*) as n from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id
         where e.tenant_id = $1 and d.status = 'pending'`,
        [tenantId],
      )
    ).rows[0].n,
  );

beforeAll(async () => {
  s = await startTestServer({
    configure: (c) => {
      c.events = {
        ...c.events,
        webhookAllowedNetworks: ['127.0.0.0/8'],
        webhookRetrySchedule: [0, 0, 0],
        webhookTimeoutMs: 2_000,
        webhookLeaseMs: 3_000,
        pollMs: 100,
      };
      c.agent = { ...c.agent, heartbeatIntervalMs: 400, feedPollMs: 100 };
    },
  });
  await rxA.start();
  await rxB.start();
  const customer = {
    apiVersion: 'tenantry.dev/v1',
    kind: 'Customer',
    metadata: { name: 'awh' },
    spec: { displayName: 'awh', shortCode: 'awh' },
  };
  const tenant = (q: string, cell: string) => ({
    apiVersion: 'tenantry.dev/v1',
    kind: 'Tenant',
    metadata: {},
    spec: { customer: 'awh', region: 'eu', environmentType: 'dev', isolation: 'pool', qualifier: q, cell },
  });
  const applied = await s.request('POST', '/v1/apply', {
    body: [cellDoc('awh-a'), cellDoc('awh-b'), customer, tenant('a', 'awh-a'), tenant('b', 'awh-b')],
  });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  const ts = applied.body.results.filter((r: { kind: string }) => r.kind === 'Tenant');
  tenants.a = ts[0].uuid;
  tenants.b = ts[1].uuid;
  for (const [which, rx] of [
    ['a', rxA],
    ['b', rxB],
  ] as const) {
    const slug = (await s.t.owner.query('select slug from tenants where id = $1', [tenants[which]])).rows[0]
      .slug;
    const ep = await s.request('POST', '/v1/webhook-endpoints', {
      body: {
        metadata: { name: `awh-${which}`, tenant: slug },
        spec: { url: rx.url, eventTypes: ['dev.tenantry.tenant.updated.v1'] },
      },
    });
    expect(ep.status, JSON.stringify(ep.body)).toBe(201);
    secrets[which] = ep.body.status.secret;
    expect(secrets[which]).toMatch(/^whsec_/);
  }
  // The control plane's own dispatcher runs throughout.
  dispatcher = new WebhookDispatcher(s.t.db, s.t.config, log);
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await dispatcher?.stop();
  await rxA.stop();
  await rxB.stop();
  await s?.close();
});

describe('webhook delivery by a cell agent', () => {
  it('seals an endpoint secret for one agent key, bound to its cell and endpoint', async () => {
    const key = await AgentKey.generate();
    const other = await AgentKey.generate();
    const sealed = await sealForAgent(['whsec_x'], key.publicKey, { cellId: 'c1', endpointId: 'e1' });
    expect(sealed).not.toContain('whsec_x');
    expect(await key.open(sealed, { cellId: 'c1', endpointId: 'e1' })).toEqual(['whsec_x']);
    await expect(key.open(sealed, { cellId: 'c2', endpointId: 'e1' })).rejects.toThrow();
    await expect(key.open(sealed, { cellId: 'c1', endpointId: 'e2' })).rejects.toThrow();
    await expect(other.open(sealed, { cellId: 'c1', endpointId: 'e1' })).rejects.toThrow();
  });

  it('the agent sends its cell’s deliveries, signed and in order with retries; the control plane sends none of them', async () => {
    const token = (await s.request('POST', '/v1/cells/awh-a/join-tokens', { body: {} })).body.token;
    dir = await tempDataDir();
    const agent = await agentProcess('awh-a', dir, token);
    // Events of both cells. The first of cell A fails once at its receiver.
    let failed = false;
    rxA.behaviour = ({ body }) => {
      if (nOf(body) === 1 && !failed) {
        failed = true;
        return 503;
      }
      return 204;
    };
    for (let n = 1; n <= 4; n++) {
      await write('a', n);
      await write('b', n);
    }
    // The control plane's dispatcher, round after round: it delivers cell B's and none of cell A's.
    for (let round = 0; round < 20 && rxB.received.length < 4; round++) await dispatcher.runOnce();
    expect(rxB.received.map((r) => nOf(r.body))).toEqual([1, 2, 3, 4]);
    dispatcher.start();

    const got = await rxA.waitFor((r) => r.filter((x) => x.status === 204).length >= 4);
    expect(got.map((r) => [nOf(r.body), r.status])).toEqual([
      [1, 503],
      [1, 204],
      [2, 204],
      [3, 204],
      [4, 204],
    ]);
    // Signed with the endpoint's secret (sealed for the agent, opened there): standardwebhooks verifies.
    for (const r of got) expect(new Webhook(secrets.a).verify(r.body, r.headers)).toBeTruthy();
    expect(() => new Webhook(secrets.b).verify(got[0]!.body, got[0]!.headers)).toThrow();
    // The retry carries the same webhook-id.
    expect(got[1]!.headers['webhook-id']).toBe(got[0]!.headers['webhook-id']);
    // The control plane keeps the record: every attempt, the retry counted.
    await until('cell A settled', async () => (await pending(tenants.a)) === 0, 20_000);
    const attempts = await s.t.owner.query(
      `select a.attempt, a.status_code from webhook_attempts a join webhook_endpoints e on e.id = a.endpoint_id
       where e.tenant_id = $1 order by a.id`,
      [tenants.a],
    );
    expect(attempts.rows).toEqual([
      { attempt: 1, status_code: 503 },
      { attempt: 2, status_code: 204 },
      { attempt: 1, status_code: 204 },
      { attempt: 1, status_code: 204 },
      { attempt: 1, status_code: 204 },
    ]);

    // The agent is killed: cell A's new deliveries wait for it; the control plane, running all
    // along, sends none of them (and goes on with cell B's).
    agent.kill('SIGKILL');
    await new Promise((r) => agent.once('exit', r));
    const before = rxA.received.length;
    await write('a', 5);
    await write('b', 5);
    await rxB.waitFor((r) => r.length >= 5);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(rxA.received.length).toBe(before);
    expect(await pending(tenants.a)).toBe(1);
    // Restarted with its saved credential: it delivers what waited.
    await agentProcess('awh-a', dir);
    const after = await rxA.waitFor((r) => r.length > before);
    expect(nOf(after[before]!.body)).toBe(5);
    new Webhook(secrets.a).verify(after[before]!.body, after[before]!.headers);
  });

  it("an agent's credential claims and settles only its own cell's deliveries", async () => {
    const state = JSON.parse(await fs.readFile(path.join(dir, 'agent-state.json'), 'utf8'));
    const token = state.credential as string;
    const publicKey = (await AgentKey.generate()).publicKey;
    // Cell B, by slug or by id: refused, nothing claimed.
    await write('b', 6);
    for (const ref of [
      'awh-b',
      (await s.t.owner.query("select id from cells where slug = 'awh-b'")).rows[0].id,
    ])
      expect(
        (await s.request('POST', `/v1/agent/${ref}/webhooks/claim`, { token, body: { publicKey } })).status,
      ).toBe(403);
    // The control plane's dispatcher delivers cell B's deliveries meanwhile: the one looked at below
    // is taken once it has settled, so that only the agent's report could change it afterwards.
    await until('cell B delivered', async () => (await pending(tenants.b)) === 0, 20_000);
    const b = await s.t.owner.query(
      `select d.id, d.status, d.attempts from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id
       where e.tenant_id = $1 order by d.seq desc limit 1`,
      [tenants.b],
    );
    // Reported through its own cell's route, another cell's delivery is stale and stays as it was.
    const report = await s.request('POST', `/v1/agent/${state.cell.id}/webhooks/attempts`, {
      token,
      body: {
        attempts: [
          {
            id: b.rows[0].id,
            attempt: 1,
            startedAt: new Date().toISOString(),
            latencyMs: 1,
            statusCode: 500,
            responseExcerpt: null,
            error: 'HTTP 500',
            retryAfterMs: null,
          },
        ],
        released: [b.rows[0].id],
      },
    });
    expect(report.status, JSON.stringify(report.body)).toBe(200);
    expect(report.body).toEqual({ accepted: 0, stale: 1 });
    const after = await s.t.owner.query('select status, attempts from webhook_deliveries where id = $1', [
      b.rows[0].id,
    ]);
    expect(after.rows[0]).toEqual({ status: b.rows[0].status, attempts: b.rows[0].attempts });
    const recorded = await s.t.owner.query(
      'select count(*)::int as n from webhook_attempts where delivery_id = $1 and status_code = 500',
      [b.rows[0].id],
    );
    expect(recorded.rows[0].n).toBe(0);
    // A malformed key is refused (422) and changes nothing.
    const bad = await s.request('POST', `/v1/agent/${state.cell.id}/webhooks/claim`, {
      token,
      body: { publicKey: { kty: 'OKP', crv: 'X25519', x: 'short' } },
    });
    expect(bad.status).toBe(422);
    const none = await s.request('POST', `/v1/agent/${state.cell.id}/webhooks/claim`, { token, body: {} });
    expect(none.status).toBe(422);
    expect(none.body.code).toBe('agent.public_key_required');
  });
});
