import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, until } from '../../test/helpers/controller.js';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { startTracing, type Tracing } from './tracing.js';

const EU_PROD = '6846a7a4-4e09-41a8-918c-9c8e2aa938ac';
const logLines: Record<string, unknown>[] = [];
const spans = new InMemorySpanExporter();
let tracing: Tracing;
let s: TestServer;
let tenantToken: string;

function which(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  tracing = await startTracing({ instanceId: 'test', processors: [new SimpleSpanProcessor(spans)] });
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) logLines.push(JSON.parse(line));
      done();
    },
  });
  s = await startTestServer({ tracing: true, logger: pino({ level: 'info' }, sink) });
  tenantToken = await s.token({
    subject: 'tenant-user',
    tenant: EU_PROD,
    roles: ['tenant-admin'],
    appId: 'test-app',
  });
  expect((await s.request('POST', '/v1/apply', { body: circleK() })).status).toBe(200);
});
afterAll(async () => {
  await s?.close();
  await tracing?.shutdown();
});

describe('observability', () => {
  it('exposes moving Prometheus series, none labelled by tenant, valid for promtool', async () => {
    const scrape = async () => (await s.request('GET', '/metrics')).body as string;
    const count = (text: string) =>
      Number(
        /tenantry_http_request_duration_seconds_count\{method="GET",route="\/v1\/tenants\/:ref",status_code="200"\} (\d+)/.exec(
          text,
        )?.[1] ?? 0,
      );
    const before = count(await scrape());
    for (let i = 0; i < 3; i++) await s.request('GET', '/v1/tenants/circlek-eu-prod');
    const text = await scrape();
    expect(count(text)).toBe(before + 3);
    expect(text).toMatch(
      /tenantry_http_request_duration_seconds_count\{method="POST",route="\/v1\/apply",status_code="200"\} [1-9]/,
    );
    expect(text).toMatch(/tenantry_db_pool_connections\{state="total"\} \d+/);
    expect(text).toContain('tenantry_process_cpu_seconds_total');

    const labelNames = new Set(
      [...text.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1]!.matchAll(/(\w+)="/g)].map((l) => l[1]!)),
    );
    expect([...labelNames].filter((l) => /tenant/i.test(l))).toEqual([]);
    for (const metric of (await s.metrics.registry.getMetricsAsJSON()) as {
      name: string;
      values: { labels: object }[];
    }[])
      for (const v of metric.values)
        expect(Object.keys(v.labels).join(','), metric.name).not.toMatch(/tenant/i);

    if (!which('promtool')) {
      console.warn('skipping promtool check: promtool is not installed (apt-get install prometheus)');
      return;
    }
    const file = path.join(os.tmpdir(), `tenantry-metrics-${process.pid}.txt`);
    fs.writeFileSync(file, text);
    try {
      execFileSync('sh', ['-c', `promtool check metrics < ${file} 2>&1`], { stdio: 'pipe' });
    } catch (err) {
      throw new Error(`promtool check metrics: ${(err as { stdout: Buffer }).stdout}`);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it("shares one correlation id between a request's log lines, its audit record and its span", async () => {
    const correlation = 'corr-observability-1';
    const res = await s.request('POST', '/v1/tenants/circlek-eu-prod/suspend', {
      headers: { 'x-correlation-id': correlation },
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id');

    const lines = logLines.filter((l) => l.reqId === requestId);
    const completed = lines.find((l) => l.msg === 'request completed');
    expect(completed).toMatchObject({
      correlation_id: correlation,
      request_id: requestId,
    });

    const { rows } = await s.t.owner.query(
      `select action, request_id from audit_records where correlation_id = $1 order by action`,
      [correlation],
    );
    // The change, and the start of the lifecycle workflow it asked for (in the same transaction).
    expect(rows).toEqual([
      { action: 'tenant.suspend', request_id: requestId },
      { action: 'workflow.start', request_id: requestId },
    ]);

    const ofRequest = spans
      .getFinishedSpans()
      .filter((sp) => sp.attributes['tenantry.correlation_id'] === correlation);
    expect(ofRequest.map((sp) => sp.name).sort()).toEqual([
      'POST /v1/tenants/:ref/suspend',
      'change tenant.suspend',
    ]);
    const span = ofRequest.find((sp) => sp.name.startsWith('POST'));
    expect(span?.name).toBe('POST /v1/tenants/:ref/suspend');
    expect(span?.attributes['tenantry.request_id']).toBe(requestId);
    expect(JSON.stringify(span?.attributes)).not.toMatch(/authorization|token|secret/i);
  });

  it('continues the caller’s trace from traceparent', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    await s.request('GET', '/v1/tenants/circlek-eu-prod', {
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    const span = spans.getFinishedSpans().find((sp) => sp.spanContext().traceId === traceId);
    expect(span?.name).toBe('GET /v1/tenants/:ref');
  });

  it('carries the trace into the change, its reconcile job and event, and the reconcile continues it', async () => {
    const traceId = 'aaaabbbbccccddddeeeeffff00001111';
    // The suspend's lifecycle workflow ends first (else 409 workflow.in_progress).
    await settleWorkflows(s.t);
    const res = await s.request('POST', '/v1/tenants/circlek-eu-prod/resume', {
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    expect(res.status).toBe(200);
    const job = await s.t.owner.query('select traceparent from reconcile_jobs where object_id = $1', [
      EU_PROD,
    ]);
    expect(job.rows[0].traceparent).toContain(traceId);
    const event = await s.t.owner.query(
      `select traceparent from outbox_events where type = 'dev.tenantry.tenant.resumed.v1' order by seq desc limit 1`,
    );
    expect(event.rows[0].traceparent).toContain(traceId);
    const inTrace = (name: string) =>
      spans.getFinishedSpans().some((sp) => sp.name.startsWith(name) && sp.spanContext().traceId === traceId);
    expect(inTrace('change tenant.')).toBe(true);
    const c = await startController(s.t);
    try {
      await until('reconcile span in the request trace', async () => inTrace('reconcile Tenant'));
    } finally {
      await c.stop();
    }
  });

  it("reports a tenant's activity per day from the request and audit logs", async () => {
    for (let i = 0; i < 4; i++) await s.request('GET', '/v1/tenants/circlek-eu-prod', { token: tenantToken });
    const foreign = await s.request('GET', '/v1/tenants/circlek-us-prod', { token: tenantToken });
    expect([403, 404]).toContain(foreign.status);
    await s.requestLog.flush();
    const res = await s.request('GET', '/v1/tenants/circlek-eu-prod/activity?days=7');
    expect(res.status).toBe(200);
    expect(res.body.tenant).toBe(EU_PROD);
    expect(res.body.days).toHaveLength(7);
    const today = res.body.days.at(-1);
    expect(today.day).toBe(new Date().toISOString().slice(0, 10));
    expect(today).toMatchObject({ requests: 5, clientErrors: 1, serverErrors: 0 });
    expect(today.p50Ms).toBeGreaterThan(0);
    expect(today.changes).toBeGreaterThanOrEqual(5);
    // A tenant sees its own activity only.
    const other = await s.request('GET', '/v1/tenants/circlek-us-prod/activity', { token: tenantToken });
    expect([403, 404]).toContain(other.status);
    const bad = await s.request('GET', '/v1/tenants/circlek-eu-prod/activity?days=0');
    expect(bad.status).toBe(400);
  });
});
