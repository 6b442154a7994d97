import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';
import pg from 'pg';
import { expect } from 'vitest';
import { EmbeddedDatabase } from '../../src/db/embedded-postgres.js';
import { type Azurite, startAzurite } from '../infra/azurite.js';
import { refusingProviders, startAgentProcess } from './agent-processes.js';
import { startController, type TestController, tempDataDir, until } from './controller.js';
import { startTestServer, type TestServer } from './test-server.js';
import { databaseAndContainer, doc, regionCell } from './two-regions.js';
import { startWorkflowEngine } from './workflows.js';

export type Region = 'eu' | 'us';

/**
 * Two regions whose cells (`<customer>-eu`, `<customer>-us`) are held by `tenantry agent` processes,
 * each region's data plane its own (an embedded PostgreSQL server and an Azurite account per agent),
 * and a control plane whose providers record and refuse any call (`controlPlaneCalls`) and whose
 * workflow engine's data-plane URL leads nowhere (port 1): whatever touches a data plane is an
 * agent's command. The tenant `<customer>-eu-dev` (pool, in the eu cell, allowed in eu and us, with
 * `tenantSpec` added) has a pool database and a blob container.
 */
export async function startAgentRegions(customer: string, tenantSpec: Record<string, unknown> = {}) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-agent-regions-'));
  const servers = {} as Record<Region, EmbeddedDatabase>;
  for (const r of ['eu', 'us'] as const)
    servers[r] = new EmbeddedDatabase({
      clusterDir: path.join(dir, `pg-${r}`),
      credentialsFile: path.join(dir, `pg-${r}.password`),
      ephemeral: true,
    });
  const [azEu, azUs] = await Promise.all([
    startAzurite(),
    startAzurite(),
    servers.eu.start(),
    servers.us.start(),
  ]);
  const blobs = { eu: azEu as Azurite, us: azUs as Azurite };
  const dataplanes = {} as Record<Region, string>;
  for (const r of ['eu', 'us'] as const)
    dataplanes[r] = servers[r].url.replace(/\/postgres$/, `/tenantry_dataplane_${r}`);
  const children: ChildProcess[] = [];
  const controlPlaneCalls: string[] = [];
  const logs = { agents: '' };
  const s: TestServer = await startTestServer({
    configure: (c) => {
      c.agent = { ...c.agent, heartbeatIntervalMs: 400, feedPollMs: 100 };
    },
  });
  const controller: TestController = await startController(s.t, {
    providers: () => refusingProviders(controlPlaneCalls),
  });
  const engine = startWorkflowEngine(s.t, {
    providers: refusingProviders(controlPlaneCalls),
    dataplaneUrl: 'postgres://tenantry@127.0.0.1:1/none',
  });
  const cells = { eu: `${customer}-eu`, us: `${customer}-us` };
  const applied = await s.request('POST', '/v1/apply', {
    body: [regionCell(cells.eu, 'eu'), regionCell(cells.us, 'us')],
  });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  const agentDirs = {} as Record<Region, string>;
  const agents = {} as Record<Region, ChildProcess>;
  /** The agent of `r`'s cell, joined with `joinToken` (none: restarted with the credential it saved). */
  const startAgent = async (r: Region, joinToken?: string) => {
    agents[r] = await startAgentProcess({
      server: s.url,
      cell: cells[r],
      dataDir: agentDirs[r],
      ...(joinToken ? { joinToken } : {}),
      children,
      // Each region's data plane, known to its agent only; the key its credentials are sealed with.
      env: {
        TENANTRY_DATAPLANE_DATABASE_URL: dataplanes[r],
        TENANTRY_AZURE_STORAGE_CONNECTION_STRING: blobs[r].connectionString,
        TENANTRY_SECRETS_KEY_FILE: path.join(dir, `kek-${r}.json`),
      },
    });
    agents[r].stdout?.on('data', (d) => (logs.agents += d));
    agents[r].stderr?.on('data', (d) => (logs.agents += d));
  };
  for (const r of ['eu', 'us'] as const) {
    const token = await s.request('POST', `/v1/cells/${cells[r]}/join-tokens`, { body: {} });
    expect(token.status).toBe(201);
    agentDirs[r] = await tempDataDir();
    await startAgent(r, token.body.token);
  }
  /** The agent of `r`'s cell killed (SIGKILL), once it has exited. */
  const killAgent = async (r: Region) => {
    const a = agents[r];
    if (a.exitCode !== null || a.signalCode !== null) return;
    const exited = new Promise((res) => a.once('exit', res));
    a.kill('SIGKILL');
    await exited;
  };
  const tenant = `${customer}-eu-dev`;
  const tenancy = await s.request('POST', '/v1/apply', {
    body: [
      doc('Customer', customer, { displayName: 'Moving through agents', shortCode: customer }),
      doc('Tenant', undefined, {
        customer,
        region: 'eu',
        environmentType: 'dev',
        isolation: 'pool',
        cell: cells.eu,
        residency: { allowedRegions: ['eu', 'us'] },
        ...tenantSpec,
      }),
      ...databaseAndContainer(tenant),
    ],
  });
  expect(tenancy.status, JSON.stringify(tenancy.body)).toBe(200);

  /** The tenant's resources: type, physical name, phase, and whether observed at their generation. */
  const resources = async () =>
    (
      await s.t.owner.query<{ type: string; physical_name: string; phase: string; current: boolean }>(
        `select r.spec->>'type' as type, r.physical_name, r.phase,
                r.observed_generation = r.generation as current
         from integration_resources r join tenants t on t.id = r.tenant_id
         where t.slug = $1 and r.deleted_at is null order by r.spec->>'type'`,
        [tenant],
      )
    ).rows;
  /** Waits until the agent of eu has the pool schema and the container Ready; their physical names. */
  const readyInEu = async () => {
    await until(
      'the pool schema and container Ready in eu (by its agent)',
      async () => {
        const r = await resources();
        return r.length === 2 && r.every((x) => x.phase === 'Ready');
      },
      120_000,
    );
    const byType = Object.fromEntries((await resources()).map((r) => [r.type, r]));
    return { schema: byType.database!.physical_name, bucket: byType['blob-container']!.physical_name };
  };
  /** `work` on a region's data-plane database, connected as its superuser (the test looking behind the agents). */
  async function onServer<T>(region: Region, work: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client({ connectionString: dataplanes[region] });
    c.on('error', () => undefined);
    await c.connect();
    try {
      return await work(c);
    } finally {
      await c.end();
    }
  }
  /** On a timeout: the workflow's steps and the agents' commands, with their errors. */
  const explain = (id: string) => async (err: Error) => {
    const steps = await s.t.owner.query(
      'select name, state, attempts, error from workflow_steps where workflow_id = $1 order by position',
      [id],
    );
    const commands = await s.t.owner.query(
      'select key, op, state, attempts, error from cell_agent_commands where key like $1 order by created_at',
      [`${id}:%`],
    );
    const wf = await s.t.owner.query('select state, error, attempts from workflows where id = $1', [id]);
    throw new Error(
      `${err.message}\n${JSON.stringify({ workflow: wf.rows[0], steps: steps.rows, commands: commands.rows }, null, 1)}`,
    );
  };
  const container = (region: Region, name: string) =>
    BlobServiceClient.fromConnectionString(blobs[region].connectionString).getContainerClient(name);
  /** Every row of every table of the control plane's database that matches `credential`. */
  const leaks = async (credential: RegExp): Promise<string[]> => {
    const tables = await s.t.owner.query<{ name: string }>(
      `select format('%I.%I', n.nspname, c.relname) as name from pg_class c
       join pg_namespace n on n.oid = c.relnamespace
       where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
         and n.nspname not like 'pg_toast%'`,
    );
    const found: string[] = [];
    for (const { name } of tables.rows) {
      const r = await s.t.owner.query<{ row: string }>(
        `select t::text as row from ${name} t where t::text ~ $1`,
        [credential.source],
      );
      found.push(...r.rows.map((x) => `${name}: ${x.row.slice(0, 300)}`));
    }
    return found;
  };
  /** No `credential` in the control plane's rows, the API's answers at `paths` or the agents' logs. */
  const noCredentialLeft = async (credential: RegExp, paths: string[]) => {
    expect(await leaks(credential)).toEqual([]);
    for (const p of paths) {
      const r = await s.request('GET', p);
      expect(r.status, p).toBe(200);
      expect(JSON.stringify(r.body)).not.toMatch(credential);
    }
    expect(logs.agents).not.toMatch(credential);
  };

  return {
    s,
    controller,
    engine,
    servers,
    blobs,
    dataplanes,
    cells,
    tenant,
    controlPlaneCalls,
    logs,
    startAgent,
    killAgent,
    resources,
    readyInEu,
    onServer,
    explain,
    container,
    noCredentialLeft,
    async stop() {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      await engine.stop();
      await controller.stop();
      await s.close();
      await Promise.all([blobs.eu.stop(), blobs.us.stop(), servers.eu.stop(), servers.us.stop()]);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
export type AgentRegions = Awaited<ReturnType<typeof startAgentRegions>>;
