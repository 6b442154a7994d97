import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusingProviders } from '../../test/helpers/agent-processes.js';
import {
  deploymentManifests,
  startController,
  type TestController,
  tempDataDir,
  until,
} from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { finished, startWorkflowEngine } from '../../test/helpers/workflows.js';
import { loadConfig } from '../config/config.js';
import { createProviders, defaultDataplaneUrl } from '../controller/providers.js';
import { DataplaneSecretStore } from '../providers/postgres/secret-store.js';
import { LocalFileKeyProvider } from '../secrets/index.js';
import { lifecycleWorkflowId } from '../workflows/start-lifecycle-workflow.js';
import { CellAgent } from './cell-agent.js';

/**
 * The control plane holds no data-plane credential for an agent's cell and still purges a deleted
 * tenant there: its delete workflow asks the agent (commands it pulls, results it reports), which
 * removes the blob container, the database role and schema, and the generated credentials it keeps
 * in its own data-plane PostgreSQL. The control plane's providers here record and refuse any call,
 * and its workflow engine's data-plane URL leads nowhere.
 */
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const customer = `ag${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const role = `t_${tenant.replace(/-/g, '_')}`;
let s: TestServer;
let controller: TestController;
let engine: ReturnType<typeof startWorkflowEngine>;
let agent: CellAgent;
let secrets: DataplaneSecretStore;
let agentDir: string;
let dataplaneUrl: string;
/** Every provider call of the control plane (controller and workflows). */
const controlPlaneCalls: string[] = [];

const controlPlaneProviders = () => refusingProviders(controlPlaneCalls);

async function dataplane<T>(work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: dataplaneUrl });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}
const roleExists = () =>
  dataplane(
    async (c) => (await c.query('select 1 from pg_roles where rolname = $1', [role])).rows.length > 0,
  );
const agentSecrets = (tenantId: string) =>
  dataplane(
    async (c) =>
      (
        await c.query<{ n: number }>(
          'select count(*)::int as n from tenantry_resource_secrets where tenant_id = $1',
          [tenantId],
        )
      ).rows[0]!.n,
  );
const resources = async () =>
  (
    await s.t.owner.query(
      `select r.id, r.phase, r.physical_name, r.spec->>'type' as type from integration_resources r
       join tenants t on t.id = r.tenant_id where t.slug = $1 order by r.id`,
      [tenant],
    )
  ).rows;

beforeAll(async () => {
  s = await startTestServer({
    configure: (c) => {
      c.agent = { ...c.agent, heartbeatIntervalMs: 400, feedPollMs: 50 };
    },
  });
  controller = await startController(s.t, { providers: controlPlaneProviders });
  // No data-plane URL the control plane could use: nothing listens on port 1.
  engine = startWorkflowEngine(s.t, {
    providers: controlPlaneProviders(),
    dataplaneUrl: 'postgres://tenantry@127.0.0.1:1/none',
  });
  const applied = await s.request('POST', '/v1/apply', {
    body: [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Cell',
        metadata: { name: `${customer}-cell` },
        spec: {
          region: 'eu',
          stage: 'nonprod',
          environmentTypes: ['dev'],
          tenancy: 'shared',
          capacity: { tenants: 5 },
        },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Cell',
        metadata: { name: `${customer}-silo` },
        spec: {
          region: 'eu',
          stage: 'nonprod',
          environmentTypes: ['dev'],
          tenancy: 'dedicated',
          capacity: { tenants: 5 },
        },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Cell',
        metadata: { name: `${customer}-other` },
        spec: {
          region: 'us',
          stage: 'nonprod',
          environmentTypes: ['dev'],
          tenancy: 'shared',
          capacity: { tenants: 5 },
        },
      },
    ],
  });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  const cell = `${customer}-cell`;
  // The agent's own data plane: its folder for blobs, its PostgreSQL (credentials kept there too).
  agentDir = await tempDataDir();
  dataplaneUrl = defaultDataplaneUrl(s.t.ownerUrl);
  secrets = new DataplaneSecretStore(
    dataplaneUrl,
    new LocalFileKeyProvider(path.join(agentDir, 'secrets.key')),
  );
  const token = await s.request('POST', `/v1/cells/${cell}/join-tokens`, { body: {} });
  expect(token.status).toBe(201);
  agent = new CellAgent({
    server: s.url,
    cell,
    joinToken: token.body.token,
    stateDir: agentDir,
    providers: createProviders({
      config: loadConfig({}, { TENANTRY_DATA_DIR: agentDir }),
      db: { secrets },
      dataplaneUrl,
    }),
    secrets,
    logger: log,
    resyncMs: 500,
    waitSeconds: 2,
  });
  await agent.start();
  // The tenant and its resources come after the agent joined: the control plane never had them.
  const tenancy = await s.request('POST', '/v1/apply', {
    body: [
      ...deploymentManifests(customer, 'plan'),
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Customer',
        metadata: { name: `${customer}b` },
        spec: { displayName: 'Pooled', shortCode: `${customer}b` },
      },
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Tenant',
        metadata: {},
        spec: { customer: `${customer}b`, region: 'eu', environmentType: 'dev', isolation: 'pool', cell },
      },
      ...[
        { scope: { tenant }, type: 'database', database: { isolation: 'pool' } },
        { scope: { deployment }, type: 'blob-container' },
      ].map((spec) => ({ apiVersion: 'tenantry.dev/v1', kind: 'IntegrationResource', metadata: {}, spec })),
    ],
  });
  expect(tenancy.status, JSON.stringify(tenancy.body)).toBe(200);
  const placed = await s.t.owner.query(
    'select c.slug from tenants t join cells c on c.id = t.cell_id where t.slug = $1',
    [tenant],
  );
  expect(placed.rows[0].slug).toBe(cell);
});
afterAll(async () => {
  await agent?.stop();
  await secrets?.close();
  await engine?.stop();
  await controller?.stop();
  await s?.close();
});

describe('data-plane work of an agent cell', () => {
  it('a deleted tenant is purged through its agent; the control plane touches no data plane', async () => {
    await until('the agent made every resource Ready', async () => {
      const r = await resources();
      return r.length === 2 && r.every((x) => x.phase === 'Ready');
    });
    const tenantId = (await s.t.owner.query('select id from tenants where slug = $1', [tenant])).rows[0].id;
    const blob = (await resources()).find((r) => r.type === 'blob-container');
    const folder = path.join(agentDir, 'blobs', blob.physical_name);
    expect((await fs.stat(folder)).isDirectory()).toBe(true);
    expect(await roleExists()).toBe(true);
    // The credentials are with the agent, sealed by its key file; none in the control plane's database.
    expect(await agentSecrets(tenantId)).toBe(1);
    const stored = await dataplane(
      async (c) =>
        (await c.query('select value from tenantry_resource_secrets where tenant_id = $1', [tenantId]))
          .rows[0].value,
    );
    expect(Object.keys(stored).sort()).toEqual(['keyId', 'sealed']);
    const opened = await secrets.get((await resources()).find((r) => r.type === 'database').id);
    expect(opened?.password).toEqual(expect.any(String));
    expect(JSON.stringify(stored)).not.toContain(opened?.password);
    const cp = await s.t.owner.query('select count(*)::int as n from resource_secrets where tenant_id = $1', [
      tenantId,
    ]);
    expect(cp.rows[0].n).toBe(0);

    // Archived (the agent keeps the suspended tenant's credentials revoked), its retention window
    // taken as passed, then deleted: the delete workflow purges.
    const archived = await s.request('POST', `/v1/tenants/${tenant}/archive`, { body: {} });
    expect(archived.status, JSON.stringify(archived.body)).toBeLessThan(300);
    await until('archived with a retention clock', async () => {
      const r = await s.t.owner.query('select 1 from tenant_retention where tenant_id = $1', [tenantId]);
      return r.rows.length > 0;
    });
    await s.t.owner.query(
      `update tenant_retention set resources_purge_after = now() - interval '1 day' where tenant_id = $1`,
      [tenantId],
    );
    const deleted = await s.request('DELETE', `/v1/tenants/${tenant}`);
    expect(deleted.status, JSON.stringify(deleted.body)).toBeLessThan(300);
    const generation = (await s.t.owner.query('select generation from tenants where id = $1', [tenantId]))
      .rows[0].generation;
    const workflowId = lifecycleWorkflowId(tenantId, Number(generation));
    expect(await finished(s.t, workflowId, 30_000)).toMatchObject({ state: 'Succeeded' });
    const removed = (
      await s.t.owner.query(
        `select output from workflow_steps where workflow_id = $1 and name = 'delete-resources'`,
        [workflowId],
      )
    ).rows[0];
    expect(removed.output).toMatchObject({ agentCell: expect.any(String) });
    expect(
      (removed.output as { removed: { provider: string }[] }).removed.map((r) => r.provider).sort(),
    ).toEqual(['local-disk', 'postgres'].sort());
    // The references it still held (none when the agent had already removed the deleted resources
    // its desired state listed, with their credentials, before the purge asked).
    expect((removed.output as { secrets: string[] }).secrets.length).toBeLessThanOrEqual(1);

    // Gone from the agent's data plane, done by the agent.
    expect(await fs.stat(folder).catch(() => undefined)).toBeUndefined();
    expect(await roleExists()).toBe(false);
    expect(await agentSecrets(tenantId)).toBe(0);
    expect(agent.commandsRun).toBeGreaterThanOrEqual(3);
    const commands = await s.t.owner.query(
      `select op, state from cell_agent_commands where key like $1 order by created_at`,
      [`${workflowId}:%`],
    );
    expect(commands.rows.map((r) => r.op)).toEqual([
      'resources.delete',
      'resources.observe',
      'secrets.delete-tenant',
    ]);
    expect(commands.rows.every((r) => r.state === 'Succeeded')).toBe(true);
    // The purge is on the record.
    const audit = await s.t.owner.query(
      `select after from audit_records where action = 'tenant.purge' and tenant_id = $1`,
      [tenantId],
    );
    expect(audit.rows).toHaveLength(1);
    expect(controlPlaneCalls).toEqual([]);
  });

  it("an agent gets and answers only its own cell's commands", async () => {
    const state = JSON.parse(await fs.readFile(path.join(agentDir, 'agent-state.json'), 'utf8'));
    const other = (
      await s.t.owner.query('select id from cells where id <> $1 and deleted_at is null limit 1', [
        state.cell.id,
      ])
    ).rows[0].id;
    const foreign = (
      await s.t.owner.query(
        `insert into cell_agent_commands (id, cell_id, key, op, input, state)
         values (gen_random_uuid(), $1, 'x', 'secrets.delete-tenant', '{}', 'Running') returning id`,
        [other],
      )
    ).rows[0].id;
    const token = state.credential as string;
    const attempts = [
      await s.request('GET', `/v1/agent/${other}/commands`, { token }),
      await s.request('POST', `/v1/agent/${other}/commands/${foreign}/result`, {
        token,
        body: { attempts: 1, ok: true, output: {} },
      }),
      await s.request('POST', `/v1/agent/${state.cell.id}/commands/${foreign}/result`, {
        token,
        body: { attempts: 1, ok: true, output: {} },
      }),
    ];
    expect(attempts.map((r) => r.status)).toEqual([403, 403, 403]);
    const row = await s.t.owner.query('select state from cell_agent_commands where id = $1', [foreign]);
    expect(row.rows[0].state).toBe('Running');
  });

  it('a tenancy-mode migration touching a remote agent cell is refused, and nothing is written', async () => {
    const pooled = `${customer}b-eu-dev`;
    const r = await s.request('POST', `/v1/tenants/${pooled}/migrations`, { body: { isolation: 'silo' } });
    expect(r.status, JSON.stringify(r.body)).toBe(409);
    expect(r.body.code).toBe('migration.agent_cell');
    const rows = await s.t.owner.query(
      'select count(*)::int as n from tenant_migrations m join tenants t on t.id = m.tenant_id where t.slug = $1',
      [pooled],
    );
    expect(rows.rows[0].n).toBe(0);
  });
});
