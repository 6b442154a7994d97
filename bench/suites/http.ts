/**
 * 2. HTTP: the full Tenantry against a bare Fastify route (reads) and against raw INSERTs (writes),
 * with autocannon and the same connection count. Every Tenantry request carries a bearer token of the
 * built-in issuer (ES256): the figures include token validation, the session/tenant lookup and the
 * Cedar decisions.
 */
import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compare, httpLoad, measure } from '../lib/load.js';
import { BENCH_CUSTOMER } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';
import type { ServersReady } from './http-servers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'http-servers.ts');
/** Tenants the apply load rotates over; many more than connections, so requests rarely share a row lock. */
const TENANTS = 64;

export async function startServers(
  databaseUrl: string,
  dataDir: string,
): Promise<{ child: ChildProcess } & ServersReady> {
  // Inherits the tsx loader from this process's execArgv.
  const child = fork(CHILD, [databaseUrl, dataDir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  // Interrupted: the servers go first, before PostgreSQL is stopped under them.
  const interrupted = () => child.kill('SIGTERM');
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  child.once('exit', () => {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  });
  try {
    const ready = await new Promise<ServersReady>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server process did not start in 60 s')), 60_000);
      child.once('message', (m) => {
        clearTimeout(timer);
        resolve(m as ServersReady);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the server process exited with ${code}`));
      });
    });
    return { child, ...ready };
  } catch (err) {
    await stopServers(child);
    throw err;
  }
}

export async function stopServers(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (child.connected) child.send('stop');
  else child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

const tenantDoc = (i: number, labels: Record<string, string> = {}) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Tenant',
  metadata: { labels },
  spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: `h${i}` },
});

export async function post(url: string, token: string, body: unknown): Promise<unknown> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

export async function httpBenchmark(server: BenchPostgres, rawInsert: Measurement): Promise<Row[]> {
  const { ownerUrl } = await server.createDatabase('bench_http');
  const { child, tenantryUrl, bareUrl, token } = await startServers(ownerUrl, server.dir);
  const authorization = `Bearer ${token}`;
  try {
    await post(`${tenantryUrl}/v1/apply`, token, [
      BENCH_CUSTOMER,
      ...Array.from({ length: TENANTS }, (_, i) => tenantDoc(i)),
    ]);

    const [get, bare] = await compare(
      httpLoad('GET /v1/tenants/{slug} (bearer token)', `${tenantryUrl}/v1/tenants/bench-eu-dev-h0`, {
        headers: { authorization },
      }),
      httpLoad('bare Fastify GET /hello', `${bareUrl}/hello`),
    );
    // The latency goal is at half the load just measured: the same GET at a fixed rate.
    const getHalf = await measure(
      httpLoad(
        `GET /v1/tenants/{slug} at half load (${Math.round(get.value / 2)} req/s)`,
        `${tenantryUrl}/v1/tenants/bench-eu-dev-h0`,
        { headers: { authorization }, overallRate: Math.max(1, Math.round(get.value / 2)) },
      ),
    );

    // Every request sets a new label value on the next tenant in turn: always a real change.
    let n = 0;
    let responses = 0;
    let configured = 0;
    const apply = await measure(
      httpLoad('POST /v1/apply, one tenant change (bearer token)', tenantryUrl, {
        requests: [
          {
            method: 'POST',
            path: '/v1/apply',
            headers: { 'content-type': 'application/json', authorization },
            setupRequest: (req) => {
              const i = n++;
              return { ...req, body: JSON.stringify(tenantDoc(i % TENANTS, { n: String(i) })) };
            },
            onResponse: (status, body) => {
              responses++;
              if (
                status === 200 &&
                (JSON.parse(body) as { summary: { configured: number } }).summary.configured === 1
              )
                configured++;
            },
          },
        ],
      }),
    );
    // Every response (warm-up included) must report a real change, and the generations added must
    // match: at most one request per connection per run was still in flight when autocannon stopped.
    const res = await fetch(`${tenantryUrl}/v1/tenants?limit=500`, { headers: { authorization } });
    const list = (await res.json()) as { items: { metadata: { generation: number } }[] };
    const generations = list.items.reduce((s, t) => s + t.metadata.generation - 1, 0);
    if (
      configured !== responses ||
      generations < configured ||
      generations > configured + 2 * settings.connections
    ) {
      throw new Error(
        `apply: ${responses} responses, ${configured} reported a change, ${generations} generations added`,
      );
    }

    return [
      row('HTTP GET /v1/tenants/{slug} (authenticated) vs bare Fastify', get, bare, { ratioAtLeast: 0.3 }),
      row('HTTP GET /v1/tenants/{slug} at half its throughput (latency)', getHalf, bare, { p99AtMostMs: 10 }),
      row('HTTP POST /v1/apply, 1 tenant change (authenticated) vs raw INSERT', apply, rawInsert, {
        ratioAtLeast: 0.4,
      }),
    ];
  } finally {
    await stopServers(child);
  }
}
