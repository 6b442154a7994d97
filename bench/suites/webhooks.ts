/**
 * 4. Signed webhook deliveries per second to a loopback receiver (durable dispatcher: claim with
 * lease, sign, POST, settle) against a bare HTTP POST loop to the same receiver with the same
 * concurrency; and event → first-attempt latency p50/p99 while events are written at a steady rate.
 * Issue 7 goals: >= 2,000 deliveries/s, p99 < 250 ms.
 */
import http from 'node:http';
import pino from 'pino';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { asPlatform, createDb } from '../../src/db/database.js';
import { appendEvent } from '../../src/events/append-event.js';
import { EventNotifier } from '../../src/events/event-notifier.js';
import { WebhookDispatcher } from '../../src/webhooks/webhook-dispatcher.js';
import { BENCH_CUSTOMER } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

const TENANTS = 64;

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0
    ? 0
    : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function webhookBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { appUrl } = await server.createDatabase('bench_webhooks');
  const arrivals = new Map<string, number>();
  let received = 0;
  const receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const id = req.headers['webhook-id'];
      if (typeof id === 'string' && !arrivals.has(id)) {
        const time = JSON.parse(Buffer.concat(chunks).toString('utf8')).time as string;
        arrivals.set(id, Date.now() - Date.parse(time));
      }
      received++;
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const addr = receiver.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/hook`;

  const config = loadConfig(
    {},
    {
      TENANTRY_WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8',
      TENANTRY_WEBHOOK_CONCURRENCY: String(Math.max(32, settings.connections * 4)),
    },
  );
  const db = createDb(appUrl, settings.connections + 4);
  const registry = createRegistry(db, config);
  const ctx = systemContext('bench');
  const log = pino({ level: 'silent' });
  try {
    const out = await registry.apply(ctx, [
      BENCH_CUSTOMER,
      ...Array.from({ length: TENANTS }, (_, i) => ({
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: {},
        spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `t${i}` },
      })),
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'bench' },
        spec: { url, eventTypes: ['dev.tenantry.tenant.updated.v1'] },
      },
    ]);
    const tenants = out.filter((o) => o.kind === 'Tenant').map((o) => o.uuid);
    let n = 0;
    const write = (w: number) =>
      asPlatform(db, (trx) =>
        appendEvent(trx, {
          tenantId: tenants[(w + n++ * settings.connections) % tenants.length]!,
          name: 'tenant.updated',
          subject: 'tenants/bench',
          data: { n },
          correlationId: 'bench',
        }),
      );

    // (a) Baseline: bare signed-size POSTs to the same receiver, same concurrency as the dispatcher.
    const body = JSON.stringify({ pad: 'x'.repeat(900) });
    const bare = async (seconds: number): Promise<Measurement> => {
      const until = Date.now() + seconds * 1000;
      const lat: number[] = [];
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: config.events.webhookConcurrency }, async () => {
          while (Date.now() < until) {
            const s = performance.now();
            const res = await fetch(url, {
              method: 'POST',
              body,
              headers: { 'content-type': 'application/json' },
            });
            await res.arrayBuffer();
            lat.push(performance.now() - s);
          }
        }),
      );
      lat.sort((a, b) => a - b);
      return {
        label: 'bare fetch POST loop',
        value: lat.length / ((performance.now() - t0) / 1000),
        unit: 'req/s',
        latencyMs: { p50: Math.round(percentile(lat, 50)), p99: Math.round(percentile(lat, 99)) },
      };
    };
    await bare(settings.warmupSeconds);
    const baseline = await bare(settings.seconds);
    console.log(`  ${baseline.label}: ${baseline.value.toFixed(0)} req/s`);

    // (b) Throughput: a backlog written with no dispatcher running, then drained by one dispatcher.
    // Fixed, so the suite's length does not grow with the receiver's speed: >= 10 s of draining so far.
    const backlog = 2_000;
    for (let i = 0; i < backlog; i += settings.connections)
      await Promise.all(Array.from({ length: settings.connections }, (_, w) => write(w)));
    const written = Math.ceil(backlog / settings.connections) * settings.connections;
    // Woken by NOTIFY as in `tenantry serve` (src/app.ts), the poll only a fallback.
    const notifier = new EventNotifier(appUrl, log);
    await notifier.start();
    const dispatcher = new WebhookDispatcher(db, config, log, notifier);
    const before = received;
    const t0 = performance.now();
    dispatcher.start();
    while (received - before < written) await new Promise((r) => setTimeout(r, 10));
    const drainSeconds = (performance.now() - t0) / 1000;
    const throughput: Measurement = {
      label: 'signed webhook deliveries (backlog drain)',
      value: written / drainSeconds,
      unit: 'deliveries/s',
    };
    console.log(
      `  ${throughput.label}: ${throughput.value.toFixed(0)} deliveries/s (${written} in ${drainSeconds.toFixed(1)}s)`,
    );

    // (c) Latency: events written by `settings.connections` writers while the dispatcher runs.
    arrivals.clear();
    const until = Date.now() + settings.seconds * 1000;
    let produced = 0;
    await Promise.all(
      Array.from({ length: settings.connections }, async (_, w) => {
        while (Date.now() < until) {
          await write(w);
          produced++;
          await new Promise((r) => setTimeout(r, 5));
        }
      }),
    );
    const deadline = Date.now() + 60_000;
    while (arrivals.size < produced && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await dispatcher.stop();
    await notifier.stop();
    const lat = [...arrivals.values()].sort((a, b) => a - b);
    const latency: Measurement = {
      label: 'event -> first attempt (steady writes)',
      value: lat.length / settings.seconds,
      unit: 'events/s',
      latencyMs: { p50: Math.round(percentile(lat, 50)), p99: Math.round(percentile(lat, 99)) },
    };
    console.log(
      `  ${latency.label}: ${produced} events, p50 ${latency.latencyMs!.p50} ms, p99 ${latency.latencyMs!.p99} ms`,
    );
    return [
      row(
        'Signed webhook deliveries vs bare POST loop',
        throughput,
        baseline,
        { valueAtLeast: 2000 },
        // Order allows one request in flight per (endpoint, tenant) queue: the figure is bounded by
        // queues / loopback round trip, as the baseline is by its connections / round trip.
        `${TENANTS} queues, one request in flight each`,
      ),
      row('Event -> first webhook attempt (latency)', latency, baseline, { p99AtMostMs: 250 }),
    ];
  } finally {
    await db.destroy();
    receiver.closeAllConnections();
    await new Promise<void>((r) => receiver.close(() => r()));
  }
}
