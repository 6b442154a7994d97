/**
 * 10. Console pages (issue 23): the time one Tenantry process takes to render the console's
 * hierarchy (the customer's tenants, a page of 25 of BENCH_CONSOLE_TENANTS, default 10,000), a slug
 * search over them, a tenant's page (with its lineage) and the audit log, one request at a time
 * (one connection, so the latency is the server's time plus loopback, not queueing), beside a bare
 * Fastify HTML route in the same process and run. Goal: p99 <= 100 ms.
 *
 * The tenants are cloned in SQL from one applied through the API (like the memory benchmark);
 * 200 lifecycle changes through the API give the audit log records of every kind of change.
 */
import pg from 'pg';
import { httpLoad, measure } from '../lib/load.js';
import { BENCH_CUSTOMER, benchTenant } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Row, row } from '../lib/results.js';
import { post, startServers, stopServers } from './http.js';
import { cloneTenants } from './memory.js';

const TENANTS = Number(process.env.BENCH_CONSOLE_TENANTS ?? 10_000);

export async function consoleBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { ownerUrl } = await server.createDatabase('bench_console');
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  const { child, tenantryUrl, bareUrl, token } = await startServers(ownerUrl, server.dir);
  try {
    await post(`${tenantryUrl}/v1/apply`, token, [BENCH_CUSTOMER, benchTenant('m0')]);
    await cloneTenants(owner, 'bench-eu-dev-m0', TENANTS - 1);
    for (let i = 1; i <= 100; i++) {
      await post(`${tenantryUrl}/v1/tenants/bench-eu-dev-m${i}/suspend`, token, {});
      await post(`${tenantryUrl}/v1/tenants/bench-eu-dev-m${i}/resume`, token, {});
    }
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
      );
    const baseline = await measure(httpLoad('bare Fastify HTML route', `${bareUrl}/hello.html`, one));
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
