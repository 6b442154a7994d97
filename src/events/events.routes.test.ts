import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { EventNotifier } from './event-notifier.js';
import { EventsService } from './events.service.js';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
  s.t.config.events = { ...s.t.config.events, pollMs: 50, heartbeatMs: 100 };
});
afterAll(async () => s?.close());

async function tenant(name: string): Promise<{ slug: string; uuid: string }> {
  const res = await s.request('POST', '/v1/apply', { body: [customerDoc(name), tenantDoc(name)] });
  const t = res.body.results.find((r: { kind: string }) => r.kind === 'Tenant');
  return { slug: t.name, uuid: t.uuid };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
/** A lifecycle transition's event, then its workflow's events once it has run to the end. */
const lifecycleEvents = (event: string, steps: number) => [
  `dev.tenantry.tenant.${event}.v1`,
  'dev.tenantry.workflow.started.v1',
  ...Array.from({ length: steps }, () => 'dev.tenantry.workflow.step_completed.v1'),
  'dev.tenantry.workflow.succeeded.v1',
];

interface SseMessage {
  id?: string;
  event?: string;
  data?: string;
}

/** Reads an SSE response until `count` events arrived (heartbeat comments are counted separately). */
async function readSse(
  url: string,
  count: number,
  headers: Record<string, string> = {},
): Promise<{ events: SseMessage[]; comments: string[]; status: number }> {
  const controller = new AbortController();
  const res = await fetch(url, {
    headers: { authorization: `Bearer ${s.adminToken}`, ...headers },
    signal: controller.signal,
  });
  if (res.status !== 200) return { events: [], comments: [], status: res.status };
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const decoder = new TextDecoder();
  const reader = res.body!.getReader();
  const events: SseMessage[] = [];
  const comments: string[] = [];
  let buffer = '';
  const deadline = setTimeout(() => controller.abort(), 15_000);
  try {
    while (events.length < count) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const msg: SseMessage = {};
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) comments.push(line.slice(1).trim());
          else if (line.startsWith('id: ')) msg.id = line.slice(4);
          else if (line.startsWith('event: ')) msg.event = line.slice(7);
          else if (line.startsWith('data: ')) msg.data = line.slice(6);
        }
        if (msg.data !== undefined) events.push(msg);
        end = buffer.indexOf('\n\n');
      }
    }
  } finally {
    clearTimeout(deadline);
    controller.abort();
  }
  return { events, comments, status: 200 };
}

describe('event log API', () => {
  it('replays a tenant stream from any sequence, paginated and gap-free', async () => {
    const t = await tenant('apia');
    // Each transition's lifecycle workflow ends before the next (else 409 workflow.in_progress);
    // its events (started, a step_completed per step, succeeded) are in the tenant's stream too.
    for (let i = 0; i < 5; i++) {
      expect((await s.request('POST', `/v1/tenants/${t.slug}/${i % 2 ? 'resume' : 'suspend'}`)).status).toBe(
        200,
      );
      await settleWorkflows(s.t);
    }
    const all = await s.request('GET', `/v1/events?tenant=${t.slug}`);
    expect(all.status).toBe(200);
    // created, then 3 suspends (8 events each) and 2 resumes (7 each)
    expect(all.body.items.map((e: { sequence: string }) => Number(e.sequence))).toEqual(range(39));
    const seen: number[] = [];
    let after = '2';
    for (;;) {
      const page = await s.request('GET', `/v1/events?tenant=${t.uuid}&after=${after}&limit=2`);
      if (page.body.items.length === 0) break;
      seen.push(...page.body.items.map((e: { sequence: string }) => Number(e.sequence)));
      after = page.body.next;
    }
    expect(seen).toEqual(range(39).slice(2));
  });

  it('answers bad positions and unknown tenants with problem+json', async () => {
    const bad = await s.request('GET', '/v1/events?tenant=platform&after=x1');
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('events.cursor_invalid');
    expect(bad.body.errors[0].pointer).toBe('/after');
    const global = await s.request('GET', '/v1/events?after=12');
    expect(global.status).toBe(400);
    const unknown = await s.request('GET', '/v1/events?tenant=nope');
    expect(unknown.status).toBe(404);
    const limit = await s.request('GET', '/v1/events?limit=0');
    expect(limit.status).toBe(400);
  });

  it('streams events over SSE and resumes after Last-Event-ID', async () => {
    const t = await tenant('apib');
    const url = `${s.url}/v1/events/stream?tenant=${t.slug}`;
    // created, the suspend with its workflow's 7 events, the resume with its workflow's 6.
    const first = readSse(url, 16);
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    await settleWorkflows(s.t);
    await s.request('POST', `/v1/tenants/${t.slug}/resume`);
    await settleWorkflows(s.t);
    const got = await first;
    expect(got.events.map((e) => e.id)).toEqual(range(16).map((n) => String(n).padStart(20, '0')));
    expect(got.events.map((e) => e.event)).toEqual([
      'dev.tenantry.tenant.created.v1',
      ...lifecycleEvents('suspended', 5),
      ...lifecycleEvents('resumed', 4),
    ]);
    expect(JSON.parse(got.events[1]!.data!).tenantid).toBe(t.uuid);

    // Reconnect after event 15: exactly event 16, then the next ones written (a suspend and its
    // workflow's start, in one transaction).
    const resumed = readSse(url, 3, { 'last-event-id': got.events[14]!.id! });
    await new Promise((r) => setTimeout(r, 150));
    await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
    const again = await resumed;
    expect(again.events.map((e) => Number(e.id))).toEqual([16, 17, 18]);
    expect(again.events.map((e) => e.event)).toEqual([
      'dev.tenantry.workflow.succeeded.v1',
      'dev.tenantry.tenant.suspended.v1',
      'dev.tenantry.workflow.started.v1',
    ]);
    expect(again.comments).toContain('heartbeat');

    const bad = await readSse(url, 1, { 'last-event-id': 'garbage' });
    expect(bad.status).toBe(400);
  });

  it('is woken by NOTIFY without waiting for the poll', async () => {
    const notifier = new EventNotifier(s.t.appUrl, pino({ level: 'silent' }));
    await notifier.start();
    const second = await startTestServer({
      database: s.t,
      events: new EventsService(
        s.t.db,
        { ...s.t.config, events: { ...s.t.config.events, pollMs: 60_000 } },
        notifier,
      ),
    });
    const app: FastifyInstance = second.app;
    try {
      const addr = app.server.address();
      const base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
      const t = await tenant('apic');
      const stream = readSse(`${base}/v1/events/stream?tenant=${t.uuid}`, 3, {
        authorization: `Bearer ${second.adminToken}`,
      });
      await new Promise((r) => setTimeout(r, 200));
      const start = Date.now();
      await s.request('POST', `/v1/tenants/${t.slug}/suspend`);
      const got = await stream;
      // created, then the suspend and its workflow's start (one transaction, one NOTIFY).
      expect(got.events.map((e) => e.event)).toEqual([
        'dev.tenantry.tenant.created.v1',
        'dev.tenantry.tenant.suspended.v1',
        'dev.tenantry.workflow.started.v1',
      ]);
      expect(Date.now() - start).toBeLessThan(5_000);
    } finally {
      await second.close();
      await notifier.stop();
    }
  });
});
