import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

let s: TestServer;
let endpoint = '';
let other = '';
const N = 61;

/** Deliveries straight into the table: N for one endpoint, three at a time sharing created_at. */
beforeAll(async () => {
  s = await startTestServer();
  expect((await s.request('POST', '/v1/apply', { body: circleK() })).status).toBe(200);
  const create = async (name: string) => {
    const res = await s.request('POST', '/v1/webhook-endpoints', {
      body: { metadata: { name }, spec: { url: 'https://hooks.example.com/x', enabled: false } },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.metadata.uuid as string;
  };
  endpoint = await create('paged');
  other = await create('other');
  await s.t.owner.query(
    `insert into webhook_deliveries (endpoint_id, event_id, stream, seq, status, created_at)
     select $1, e.ids[1 + n % array_length(e.ids, 1)], 'test', n, 'delivered',
       timestamptz '2026-01-01' + (n / 3) * interval '1 second'
     from generate_series(1, $2::int) n, (select array_agg(id) as ids from outbox_events) e`,
    [endpoint, N],
  );
  await s.t.owner.query(
    `insert into webhook_deliveries (endpoint_id, event_id, stream, seq, status)
     select $1, id, 'test', 1, 'dead' from outbox_events limit 1`,
    [other],
  );
});
afterAll(() => s?.close());

describe('deliveries of an endpoint, page by page', () => {
  it('walks every delivery once, newest first, by the keyset cursor (ties included)', async () => {
    const seen: { id: string; createdAt: string; sequence: number }[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const q: string = `limit=25${cursor ? `&cursor=${cursor}` : ''}`;
      const res = await s.request('GET', `/v1/webhooks/${endpoint}/deliveries?${q}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      seen.push(...res.body.items);
      cursor = res.body.nextCursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(N);
    expect(new Set(seen.map((d) => d.id)).size).toBe(N);
    const order = seen.map((d) => [Date.parse(d.createdAt), d.sequence] as const);
    for (let i = 1; i < order.length; i++) {
      const [a, b] = [order[i - 1]!, order[i]!];
      expect(a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]), `${i}`).toBe(true);
    }
  });

  it('says there is no next page on the last one, and refuses a cursor that is no delivery id', async () => {
    const all = await s.request('GET', `/v1/webhooks/${endpoint}/deliveries?limit=${N}`);
    expect(all.body.items).toHaveLength(N);
    expect(all.body.nextCursor).toBeNull();
    const bad = await s.request('GET', `/v1/webhooks/${endpoint}/deliveries?cursor=nope`);
    expect(bad.status).toBe(400);
    // Another endpoint's delivery as the cursor gives nothing of either endpoint.
    const theirs = (await s.request('GET', `/v1/webhooks/${other}/deliveries`)).body.items[0].id;
    const crossed = await s.request('GET', `/v1/webhooks/${endpoint}/deliveries?cursor=${theirs}`);
    expect(crossed.status).toBe(200);
    expect(crossed.body.items).toEqual([]);
  });
});
