import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import pino from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { WebhookReceiver } from '../../test/helpers/webhook-receiver.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { WebhookDispatcher } from './webhook-dispatcher.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
let s: TestServer;
let rx: WebhookReceiver;
let child: ChildProcess | undefined;

beforeAll(async () => {
  s = await startTestServer();
  s.t.config.events = { ...s.t.config.events, pollMs: 50, webhookAllowedNetworks: ['127.0.0.0/8'] };
  rx = await new WebhookReceiver().start();
});
afterAll(async () => {
  child?.kill('SIGKILL');
  await rx?.stop();
  await s?.close();
});

describe('crash mid-delivery', () => {
  it('a dispatcher process killed while its request is in flight loses nothing: redelivered with the same webhook-id', async () => {
    const settings = {
      TENANTRY_WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8',
      TENANTRY_WEBHOOK_TIMEOUT_MS: '1000',
      TENANTRY_WEBHOOK_LEASE_MS: '1500',
      TENANTRY_EVENT_POLL_MS: '50',
      TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS: '50,50,50',
    };
    const res = await s.request('POST', '/v1/apply', {
      body: [
        customerDoc('crash'),
        tenantDoc('crash'),
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'WebhookEndpoint',
          metadata: { name: 'crash' },
          spec: {
            url: rx.url,
            eventTypes: ['dev.tenantry.tenant.suspended.v1', 'dev.tenantry.tenant.resumed.v1'],
          },
        },
      ],
    });
    expect(res.status).toBe(200);
    const tenant = res.body.results.find((r: { kind: string }) => r.kind === 'Tenant').name;
    const secret = res.body.results.find((r: { kind: string }) => r.kind === 'WebhookEndpoint').secret;

    // The first request is held open until the dispatcher that sent it is dead.
    rx.behaviour = ({ n }) => (n === 0 ? { status: 200, delayMs: 60_000 } : 200);
    const firstArrived = new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (rx.inFlight > 0) {
          clearInterval(poll);
          resolve();
        }
      }, 10);
    });

    child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/dispatcher-process.ts'], {
      cwd: ROOT,
      env: { ...process.env, ...settings, APP_URL: s.t.appUrl, PLATFORM_URL: s.t.platformUrl },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    expect((await s.request('POST', `/v1/tenants/${tenant}/suspend`)).status).toBe(200);
    // The suspend's lifecycle workflow ends first (else the resume is 409 workflow.in_progress).
    await settleWorkflows(s.t);
    expect((await s.request('POST', `/v1/tenants/${tenant}/resume`)).status).toBe(200);
    await firstArrived;
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));

    // Another dispatcher takes over once the dead one's lease has expired.
    const survivor = new WebhookDispatcher(s.t.db, s.t.config, pino({ level: 'silent' }));
    survivor.start();
    try {
      const got = await rx.waitFor((r) => r.length >= 2, 30_000);
      const [suspended, resumed] = got.map(
        (g) => new Webhook(secret).verify(g.body, g.headers) as { type: string; id: string },
      );
      expect(suspended!.type).toBe('dev.tenantry.tenant.suspended.v1');
      expect(resumed!.type).toBe('dev.tenantry.tenant.resumed.v1');
      // The held (never answered) first request: its webhook-id was redelivered first, then the next event.
      expect(rx.started[0]).toBe(suspended!.id);
      expect(got[0]!.headers['webhook-id']).toBe(suspended!.id);
    } finally {
      await survivor.stop();
    }
    const deliveries = await s.t.owner.query(`select status, attempts from webhook_deliveries order by seq`);
    expect(deliveries.rows).toEqual([
      { status: 'delivered', attempts: 2 },
      { status: 'delivered', attempts: 1 },
    ]);
  }, 90_000);
});
