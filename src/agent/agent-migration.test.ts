import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentStarter, refusingProviders } from '../../test/helpers/agent-processes.js';
import {
  cellManifest,
  startController,
  type TestController,
  tempDataDir,
  until,
} from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { finished, startWorkflowEngine, stepsOf } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { ISOLATION_STEPS } from '../tenant-migrations/migrations.service.js';
import { databaseUrl } from '../tenant-migrations/pg-copy.js';

/**
 * A tenancy-mode migration (pool → silo) between two cells held by `tenantry agent` processes of one
 * data plane: every data-plane step runs in the source cell's agent as its commands; the control
 * plane's providers record and refuse any call and its workflow engine's data-plane URL leads
 * nowhere (nothing listens on port 1), so it connects to no data-plane engine. The data is in the
 * silo afterwards, the silo database turns Ready by the target cell's agent with the credentials
 * the source's agent made (and switched at the cut-over), a rollback brings the tenant back, and a
 * retirement drops the kept pool schema there.
 */
const customer = `am${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const shared = `${customer}-pool`;
const dedicated = `${customer}-silo`;
let s: TestServer;
let controller: TestController;
let engine: ReturnType<typeof startWorkflowEngine>;
let dataplaneUrl: string;
const children: ChildProcess[] = [];
const controlPlaneCalls: string[] = [];

const controlPlaneProviders = () => refusingProviders(controlPlaneCalls);

async function dataplane<T>(database: string | undefined, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({
    connectionString: database ? databaseUrl(dataplaneUrl, database) : dataplaneUrl,
  });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}
const resource = async () =>
  (
    await s.t.owner.query(
      `select r.id, r.phase, r.physical_name, r.spec->'database'->>'isolation' as isolation,
              r.observed_generation = r.generation as current, c.slug as cell
       from integration_resources r join tenants t on t.id = r.tenant_id join cells c on c.id = t.cell_id
       where t.slug = $1 and r.spec->>'type' = 'database'`,
      [tenant],
    )
  ).rows[0];

beforeAll(async () => {
  s = await startTestServer({
    configure: (c) => {
      c.agent = { ...c.agent, heartbeatIntervalMs: 400, feedPollMs: 100 };
    },
  });
  dataplaneUrl = defaultDataplaneUrl(s.t.ownerUrl);
  controller = await startController(s.t, { providers: controlPlaneProviders });
  engine = startWorkflowEngine(s.t, {
    providers: controlPlaneProviders(),
    dataplaneUrl: 'postgres://tenantry@127.0.0.1:1/none',
  });
  const applied = await s.request('POST', '/v1/apply', {
    body: [cellManifest(shared, 'shared'), cellManifest(dedicated, 'dedicated')],
  });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  // One data plane: its PostgreSQL, and the key its generated credentials are sealed with.
  const agentProcess = agentStarter(() => s.url, children, {
    TENANTRY_DATAPLANE_DATABASE_URL: dataplaneUrl,
    TENANTRY_SECRETS_KEY_FILE: path.join(await tempDataDir(), 'kek.json'),
  });
  for (const c of [shared, dedicated]) {
    const token = await s.request('POST', `/v1/cells/${c}/join-tokens`, { body: {} });
    expect(token.status).toBe(201);
    await agentProcess(c, await tempDataDir(), token.body.token);
  }
  const tenancy = await s.request('POST', '/v1/apply', {
    body: [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Customer',
        metadata: { name: customer },
        spec: { displayName: 'Agent-held', shortCode: customer },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: {},
        spec: { customer, region: 'eu', environmentType: 'dev', isolation: 'pool', cell: shared },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'IntegrationResource',
        metadata: {},
        spec: { scope: { tenant }, type: 'database', database: { isolation: 'pool' } },
      },
    ],
  });
  expect(tenancy.status, JSON.stringify(tenancy.body)).toBe(200);
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await engine?.stop();
  await controller?.stop();
  await s?.close();
});

describe('a migration through agents', () => {
  it('moves a pooled tenant to a silo with the agents doing the data-plane work, rolls it back, and retires a second one', async () => {
    await until(
      'the pool schema Ready (by the agent)',
      async () => (await resource())?.phase === 'Ready',
      60_000,
    );
    const schema = (await resource()).physical_name as string;
    await dataplane(undefined, (c) =>
      c.query(`create table ${schema}.orders (id bigserial primary key, n integer not null, note text);
               insert into ${schema}.orders (n, note) select g, md5(g::text) from generate_series(1, 500) g;`),
    );

    const started = await s.request('POST', `/v1/tenants/${tenant}/migrations`, {
      body: { isolation: 'silo' },
    });
    expect(started.status, JSON.stringify(started.body)).toBeLessThan(300);
    const id = started.body.id as string;
    expect(await finished(s.t, id, 120_000)).toMatchObject({ state: 'Succeeded' });
    expect((await stepsOf(s.t, id)).map((x) => `${x.name}:${x.state}`)).toEqual(
      ISOLATION_STEPS.map((x) => `${x}:Completed`),
    );

    // The tenant is in the silo cell; the target cell's agent turns the silo database Ready.
    await until(
      'the silo database Ready',
      async () => {
        const r = await resource();
        return r.cell === dedicated && r.isolation === 'silo' && r.phase === 'Ready' && r.current;
      },
      60_000,
    );
    const silo = (await resource()).physical_name as string;
    expect(silo).toMatch(/^tenantry_/);
    const copied = await dataplane(silo, (c) =>
      c.query('select count(*)::int as n, sum(n)::int as s from orders'),
    );
    expect(copied.rows[0]).toEqual({ n: 500, s: 125_250 });
    // The silo's role logs in with the credentials the agents keep (switched at the cut-over).
    const login = await dataplane(undefined, (c) =>
      c.query('select rolcanlogin from pg_roles where rolname = $1', [silo]),
    );
    expect(login.rows[0].rolcanlogin).toBe(true);

    // Every data-plane step was a command of the source cell's agent, done there.
    const commands = await s.t.owner.query(
      `select op, state from cell_agent_commands where key like $1 order by created_at`,
      [`${id}:%`],
    );
    const ops = commands.rows.map((r) => r.op);
    for (const op of [
      'migration.inspect',
      'migration.createTarget',
      'migration.copySchema',
      'migration.setLogin',
      'migration.syncAndVerify',
      'migration.detachTarget',
      'migration.switchSecrets',
    ])
      expect(ops).toContain(op);
    expect(commands.rows.every((r) => r.state === 'Succeeded')).toBe(true);
    const m = await s.t.owner.query('select state, plan from tenant_migrations where id = $1', [id]);
    expect(m.rows[0].state).toBe('CutOver');
    expect(m.rows[0].plan.agentCell).toEqual(expect.any(String));

    // A row written on the silo, then the rollback: it is in the pool afterwards.
    await dataplane(silo, (c) => c.query(`insert into orders (n, note) values (501, 'after the cut-over')`));
    const rb = await s.request('POST', `/v1/tenants/${tenant}/migrations/${id}/rollback`, { body: {} });
    expect(rb.status, JSON.stringify(rb.body)).toBeLessThan(300);
    expect(await finished(s.t, rb.body.rollbackWorkflowId, 120_000)).toMatchObject({ state: 'Succeeded' });
    await until(
      'the pool schema Ready again',
      async () => {
        const r = await resource();
        return r.cell === shared && r.isolation === 'pool' && r.phase === 'Ready' && r.current;
      },
      60_000,
    );
    const back = await dataplane(undefined, (c) =>
      c.query(`select count(*)::int as n from ${schema}.orders`),
    );
    expect(back.rows[0].n).toBe(501);

    // Again, then retired: the agent drops the kept pool schema and its role.
    const again = await s.request('POST', `/v1/tenants/${tenant}/migrations`, {
      body: { isolation: 'silo' },
    });
    expect(again.status, JSON.stringify(again.body)).toBeLessThan(300);
    expect(await finished(s.t, again.body.id, 120_000)).toMatchObject({ state: 'Succeeded' });
    const retiring = await s.request('POST', `/v1/tenants/${tenant}/migrations/${again.body.id}/retire`, {
      body: {},
    });
    expect(retiring.status, JSON.stringify(retiring.body)).toBeLessThan(300);
    expect(await finished(s.t, retiring.body.retireWorkflowId, 60_000)).toMatchObject({ state: 'Succeeded' });
    const left = await dataplane(undefined, (c) =>
      c.query(
        `select (select count(*) from pg_namespace where nspname = $1)::int as schemas,
                (select count(*) from pg_roles where rolname = $1)::int as roles`,
        [schema],
      ),
    );
    expect(left.rows[0]).toEqual({ schemas: 0, roles: 0 });
    const kept = await dataplane(silo, (c) => c.query('select count(*)::int as n from orders'));
    expect(kept.rows[0].n).toBe(501);
    expect(controlPlaneCalls).toEqual([]);
  });
});
