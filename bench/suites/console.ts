/**
 * 10. Console pages (issue 23): the time one Tenantry process takes to render the console's
 * hierarchy (the customer's tenants, a page of 25 of BENCH_CONSOLE_TENANTS, default 10,000), a slug
 * search over them, a tenant's page (with its lineage) and the audit log, one request at a time
 * (one connection, so the latency is the server's time plus loopback, not queueing), beside a bare
 * Fastify HTML route in the same process and run. Goal: p99 <= 100 ms.
 *
 * The tenants are cloned in SQL from one applied through the API (like the memory benchmark);
 * 200 lifecycle changes through the API give the audit log records of every kind of change, and
 * their lifecycle workflows the workflows pages. A platform-wide webhook endpoint gets
 * BENCH_CONSOLE_DELIVERIES (default 20,000) delivered deliveries in SQL, so its deliveries pages
 * (the first, and one 10,000 deep by its keyset cursor) are measured at a size an operator meets.
 */
import pg from 'pg';
import { httpLoad, measure } from '../lib/load.js';
import { BENCH_CUSTOMER, benchTenant } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Row, row } from '../lib/results.js';
import { post, startServers, stopServers } from './http.js';
import { cloneTenants } from './memory.js';

const TENANTS = Number(process.env.BENCH_CONSOLE_TENANTS ?? 10_000);
const DELIVERIES = Number(process.env.BENCH_CONSOLE_DELIVERIES ?? 20_000);
/** Seconds per page: one connection at a few ms a page, 4 s is still several hundred requests behind each p99. */
const SECONDS = Number(process.env.BENCH_CONSOLE_SECONDS ?? 4);

export async function consoleBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { ownerUrl } = await server.createDatabase('bench_console');
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  const { child, tenantryUrl, bareUrl, token } = await startServers(ownerUrl, server.dir);
  try {
    await post(`${tenantryUrl}/v1/apply`, token, [BENCH_CUSTOMER, benchTenant('m0')]);
    await cloneTenants(owner, 'bench-eu-dev-m0', TENANTS - 1);
    // A resume waits for the suspend's lifecycle workflow to end (409 workflow.in_progress before).
    const settled = async () => {
      for (;;) {
        const r = await owner.query<{ n: number }>(
          `select count(*)::int as n from workflows where state in ('Pending', 'Running', 'Compensating')`,
        );
        if (r.rows[0]?.n === 0) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    for (const action of ['suspend', 'resume']) {
      for (let i = 1; i <= 100; i++)
        await post(`${tenantryUrl}/v1/tenants/bench-eu-dev-m${i}/${action}`, token, {});
      await settled();
    }
    const endpoint = (await post(`${tenantryUrl}/v1/webhook-endpoints`, token, {
      metadata: { name: 'bench-hook' },
      spec: { url: 'https://hooks.example.com/bench', enabled: false },
    })) as { metadata: { uuid: string } };
    const ep = endpoint.metadata.uuid;
    await owner.query(
      `insert into webhook_deliveries (endpoint_id, event_id, stream, seq, status, attempts, created_at)
       select $1, e.ids[1 + n % array_length(e.ids, 1)], 'bench', n, 'delivered', 1, now() - n * interval '1 second'
       from generate_series(1, $2::int) n, (select array_agg(id) as ids from outbox_events) e`,
      [ep, DELIVERIES],
    );
    await owner.query('analyze webhook_deliveries');
    const deep = (
      await owner.query<{ id: string }>(
        `select id from webhook_deliveries where endpoint_id = $1
         order by created_at desc, seq desc, id desc offset $2 limit 1`,
        [ep, Math.floor(DELIVERIES / 2)],
      )
    ).rows[0]?.id;
    if (!deep) throw new Error('no deliveries to page through');
    const login = await fetch(`${tenantryUrl}/console/login`, {
      method: 'POST',
      body: new URLSearchParams({ token }),
      redirect: 'manual',
    });
    const cookie = login.headers.get('set-cookie')?.split(';')[0];
    if (login.status !== 303 || !cookie) throw new Error(`console sign-in: ${login.status}`);

    const one = { connections: 1 };
    const page = (label: string, path: string) =>
      measure(
        httpLoad(label, tenantryUrl, { ...one, requests: [{ method: 'GET', path, headers: { cookie } }] }),
        SECONDS,
      );
    const baseline = await measure(
      httpLoad('bare Fastify HTML route', `${bareUrl}/hello.html`, one),
      SECONDS,
    );
    const n = TENANTS.toLocaleString('en-US');
    const pages = [
      [`hierarchy: a customer's tenants (25 of ${n})`, '/console/customers/bench/children'],
      [
        `hierarchy: slug search over ${n} tenants`,
        `/console/tree?q=bench-eu-dev-m${Math.floor(TENANTS / 2)}`,
      ],
      [
        'tenant page (spec, status, placement, lineage)',
        `/console/tenants/bench-eu-dev-m${Math.floor(TENANTS / 3)}`,
      ],
      ['audit log (newest 25)', '/console/audit'],
      ['workflows (newest 25)', '/console/workflows'],
      [
        "a tenant's workflows with the newest one's steps",
        `/console/tenants/bench-eu-dev-m${Math.floor(TENANTS / 200)}/workflows`,
      ],
      [`deliveries: first page of ${DELIVERIES.toLocaleString('en-US')}`, `/console/webhooks/${ep}`],
      [
        `deliveries: a page ${Math.floor(DELIVERIES / 2).toLocaleString('en-US')} deep (cursor)`,
        `/console/webhooks/${ep}?cursor=${deep}`,
      ],
      [
        `services (25, tenant filter over ${n} tenants)`,
        `/console/services?tenant=bench-eu-dev-m${Math.floor(TENANTS / 4)}`,
      ],
    ] as const;
    const rows: Row[] = [];
    for (const [label, path] of pages)
      rows.push(
        row(`Console ${label} vs bare HTML`, await page(label, path), baseline, { p99AtMostMs: 100 }),
      );
    return rows;
  } finally {
    await stopServers(child);
    await owner.end();
  }
}
