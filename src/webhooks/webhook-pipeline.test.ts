import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { WebhookReceiver } from '../../test/helpers/webhook-receiver.js';
import { asPlatform } from '../db/database.js';
import { appendEvent } from '../events/append-event.js';
import { claimDeliveries } from './claim-deliveries.js';
import { WebhookDispatcher } from './webhook-dispatcher.js';

/**
 * Issue 24: a claim takes several deliveries of one (endpoint, tenant) queue, sent in order on one
 * connection. A failure in the middle stops the queue there: nothing behind it goes out before it
 * has been delivered, and the ones behind it are released with no attempt counted.
 */
let s: TestServer;
let rx: WebhookReceiver;
let tenantId: string;
let endpointId: string;

beforeAll(async () => {
  s = await startTestServer();
  s.t.config.events = {
    ...s.t.config.events,
    webhookRetrySchedule: [0, 0, 0],
    webhookAllowedNetworks: ['127.0.0.0/8'],
  };
  rx = await new WebhookReceiver().start();
  const res = await s.request('POST', '/v1/apply', {
    body: [
      customerDoc('pipe'),
      tenantDoc('pipe'),
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'pipe' },
        spec: { url: rx.url, eventTypes: ['dev.tenantry.tenant.updated.v1'] },
      },
    ],
  });
  expect(res.status).toBe(200);
  tenantId = res.body.results.find((r: { kind: string }) => r.kind === 'Tenant').uuid;
  endpointId = res.body.results.find((r: { kind: string }) => r.kind === 'WebhookEndpoint').uuid;
});
afterAll(async () => {
  await rx?.stop();
  await s?.close();
});

const n = (body: string) => (JSON.parse(body) as { data: { n: number } }).data.n;

describe('deliveries of one queue claimed together', () => {
  it('sends them in order, stops at a failure, and sends the rest only after it is delivered', async () => {
    for (let i = 1; i <= 5; i++)
      await asPlatform(s.t.db, (trx) =>
        appendEvent(trx, {
          tenantId,
          name: 'tenant.updated',
          subject: 'tenants/pipe',
          data: { n: i },
          correlationId: 'pipe',
        }),
      );
    // The third fails once.
    let failed = false;
    rx.behaviour = ({ body }) => {
      if (n(body) === 3 && !failed) {
        failed = true;
        return 503;
      }
      return 204;
    };
    const dispatcher = new WebhookDispatcher(s.t.db, s.t.config, pino({ level: 'silent' }));
    // One round: 1 and 2 delivered, 3 failed, 4 and 5 not sent.
    expect(await dispatcher.runOnce()).toBe(5);
    expect(rx.received.map((r) => [n(r.body), r.status])).toEqual([
      [1, 204],
      [2, 204],
      [3, 503],
    ]);
    // The next rounds: 3 again (its retry is due at once), then 4 and 5 behind it.
    for (let round = 0; round < 5 && rx.received.length < 6; round++) await dispatcher.runOnce();
    expect(rx.received.map((r) => [n(r.body), r.status])).toEqual([
      [1, 204],
      [2, 204],
      [3, 503],
      [3, 204],
      [4, 204],
      [5, 204],
    ]);
    const rows = await s.t.owner.query(
      `select status, attempts, locked_by from webhook_deliveries where endpoint_id = $1 order by seq`,
      [endpointId],
    );
    expect(rows.rows).toEqual(
      [1, 1, 2, 1, 1].map((attempts) => ({ status: 'delivered', attempts, locked_by: null })),
    );
    expect(await claimDeliveries(s.t.db, 'nobody', 10, 1000, 16)).toEqual([]);
    await dispatcher.stop();
  });
});
