import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BlobServiceClient, ContainerSASPermissions } from '@azure/storage-blob';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusingProviders, startAgentProcess } from '../../test/helpers/agent-processes.js';
import { startController, type TestController, tempDataDir, until } from '../../test/helpers/controller.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { finished, startWorkflowEngine, stepsOf } from '../../test/helpers/workflows.js';
import { type Azurite, azuriteUnavailableReason, startAzurite } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { EmbeddedDatabase } from '../db/embedded-postgres.js';
import { REGION_STEPS } from '../tenant-migrations/migrations.service.js';

/**
 * A region migration eu → us between two cells held by `tenantry agent` processes, each region's
 * data plane its own (an embedded PostgreSQL server and an Azurite account per agent): every
 * data-plane step runs as a command of the agent holding the cell it acts on (the eu agent for the
 * source side, the us agent for the target side); the us PostgreSQL subscribes to the eu one with
 * the reader the eu agent handed out, and the us agent copies the blobs with the eu agent's SAS
 * URL. The control plane's providers record and refuse any call and its workflow engine's
 * data-plane URL leads nowhere (port 1). Checked on the us engines; then retired on eu.
 */
const unavailable = skipReason('region migration through two agents on Azurite', azuriteUnavailableReason());

const customer = `ar${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const euCell = `${customer}-eu`;
const usCell = `${customer}-us`;
const doc = (kind: string, name: string | undefined, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata: name ? { name } : {},
  spec,
});

describe.skipIf(unavailable)('a region migration through agents', () => {
  let s: TestServer;
  let controller: TestController;
  let engine: ReturnType<typeof startWorkflowEngine>;
  let dir: string;
  const servers: Record<'eu' | 'us', EmbeddedDatabase | undefined> = { eu: undefined, us: undefined };
  const blobs: Partial<Record<'eu' | 'us', Azurite>> = {};
  const dataplanes: Partial<Record<'eu' | 'us', string>> = {};
  const children: ChildProcess[] = [];
  const controlPlaneCalls: string[] = [];
  let agentLogs = '';

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-agent-region-'));
    for (const r of ['eu', 'us'] as const)
      servers[r] = new EmbeddedDatabase({
        clusterDir: path.join(dir, `pg-${r}`),
        credentialsFile: path.join(dir, `pg-${r}.password`),
        ephemeral: true,
      });
    const [azEu, azUs] = await Promise.all([
      startAzurite(),
      startAzurite(),
      servers.eu!.start(),
      servers.us!.start(),
    ]);
    blobs.eu = azEu as Azurite;
    blobs.us = azUs as Azurite;
    for (const r of ['eu', 'us'] as const)
      dataplanes[r] = servers[r]!.url.replace(/\/postgres$/, `/tenantry_dataplane_${r}`);

    s = await startTestServer({
      configure: (c) => {
        c.agent = { ...c.agent, heartbeatIntervalMs: 400, feedPollMs: 100 };
      },
    });
    controller = await startController(s.t, { providers: () => refusingProviders(controlPlaneCalls) });
    engine = startWorkflowEngine(s.t, {
      providers: refusingProviders(controlPlaneCalls),
      dataplaneUrl: 'postgres://tenantry@127.0.0.1:1/none',
    });
    const cell = (name: string, region: string) =>
      doc('Cell', name, {
        region,
        stage: 'nonprod',
        environmentTypes: ['dev'],
        tenancy: 'shared',
        capacity: { tenants: 5 },
      });
    const applied = await s.request('POST', '/v1/apply', { body: [cell(euCell, 'eu'), cell(usCell, 'us')] });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    for (const [c, r] of [
      [euCell, 'eu'],
      [usCell, 'us'],
    ] as const) {
      const token = await s.request('POST', `/v1/cells/${c}/join-tokens`, { body: {} });
      expect(token.status).toBe(201);
      const agent = await startAgentProcess({
        server: s.url,
        cell: c,
        dataDir: await tempDataDir(),
        joinToken: token.body.token,
        children,
        // Each region's data plane, known to its agent only; the key its credentials are sealed with.
        env: {
          TENANTRY_DATAPLANE_DATABASE_URL: dataplanes[r]!,
          TENANTRY_AZURE_STORAGE_CONNECTION_STRING: blobs[r]!.connectionString,
          TENANTRY_SECRETS_KEY_FILE: path.join(dir, `kek-${r}.json`),
        },
      });
      agent.stdout?.on('data', (d) => (agentLogs += d));
      agent.stderr?.on('data', (d) => (agentLogs += d));
    }
    const tenancy = await s.request('POST', '/v1/apply', {
      body: [
        doc('Customer', customer, { displayName: 'Moving through agents', shortCode: customer }),
        doc('Tenant', undefined, {
          customer,
          region: 'eu',
          environmentType: 'dev',
          isolation: 'pool',
          cell: euCell,
          residency: { allowedRegions: ['eu', 'us'] },
        }),
        doc('System', 'plan', { displayName: 'Plan', serviceId: 'plan' }),
        doc('Deployment', undefined, { tenant, system: 'plan' }),
        doc('IntegrationResource', undefined, {
          scope: { tenant },
          type: 'database',
          database: { isolation: 'pool' },
        }),
        doc('IntegrationResource', undefined, { scope: { deployment }, type: 'blob-container' }),
      ],
    });
    expect(tenancy.status, JSON.stringify(tenancy.body)).toBe(200);
  }, 300_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await engine?.stop();
    await controller?.stop();
    await s?.close();
    await Promise.all([blobs.eu?.stop(), blobs.us?.stop(), servers.eu?.stop(), servers.us?.stop()]);
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

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
  async function onServer<T>(region: 'eu' | 'us', work: (c: pg.Client) => Promise<T>): Promise<T> {
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
  const container = (region: 'eu' | 'us', name: string) =>
    BlobServiceClient.fromConnectionString(blobs[region]!.connectionString).getContainerClient(name);

  /**
   * The credentials a region migration hands from one agent to the other: a reader's connection
   * string with its password, a SAS URL's signature, or either still sealed (ciphertext not yet
   * cleared). None may be found in the control plane's rows, its API's answers or the agents' logs.
   */
  const CREDENTIAL = /tenantry_r_[0-9a-f]+_\d+(_b)?:[^@"\s]+@|[?&]sig=|sealed:ey/;
  /** Every row of every table of the control plane's database (commands, audit, events, workflow steps, …) that holds one. */
  const leaks = async (): Promise<string[]> => {
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
        [CREDENTIAL.source],
      );
      found.push(...r.rows.map((x) => `${name}: ${x.row.slice(0, 300)}`));
    }
    return found;
  };
  /** No credential in the rows, the migration's API answers (the source of truth and its list) or the agents' logs. */
  const noCredentialLeft = async (migrationId: string) => {
    expect(await leaks()).toEqual([]);
    for (const path of [
      `/v1/tenants/${tenant}/migrations/${migrationId}`,
      `/v1/tenants/${tenant}/migrations`,
    ]) {
      const r = await s.request('GET', path);
      expect(r.status).toBe(200);
      expect(JSON.stringify(r.body)).not.toMatch(CREDENTIAL);
    }
    expect(agentLogs).not.toMatch(CREDENTIAL);
  };

  it('moves the database rows and blobs from the eu agent to the us agent, checked on the us engines; rolls back to eu with what was written in us; moves again and retires eu', {
    timeout: 300_000,
  }, async () => {
    await until(
      'the pool schema and container Ready in eu (by its agent)',
      async () => {
        const r = await resources();
        return r.length === 2 && r.every((x) => x.phase === 'Ready');
      },
      120_000,
    );
    const byType = Object.fromEntries((await resources()).map((r) => [r.type, r]));
    const schema = byType.database!.physical_name;
    const bucket = byType['blob-container']!.physical_name;
    await onServer('eu', (c) =>
      c.query(`create table ${schema}.orders (id bigserial primary key, n integer not null, note text);
               insert into ${schema}.orders (n, note) select g, md5(g::text) from generate_series(1, 2000) g;`),
    );
    const payloads: Record<string, Buffer> = {};
    for (let i = 0; i < 3; i++) {
      payloads[`docs/${i}.bin`] = randomBytes(5_000 + i * 1_000);
      await container('eu', bucket)
        .getBlockBlobClient(`docs/${i}.bin`)
        .uploadData(payloads[`docs/${i}.bin`]!);
    }

    const started = await s.request('POST', `/v1/tenants/${tenant}/migrations`, { body: { region: 'us' } });
    expect(started.status, JSON.stringify(started.body)).toBeLessThan(300);
    const id = started.body.id as string;
    expect(await finished(s.t, id, 180_000).catch(explain(id))).toMatchObject({ state: 'Succeeded' });
    expect((await stepsOf(s.t, id)).map((x) => `${x.name}:${x.state}`)).toEqual(
      REGION_STEPS.map((x) => `${x}:Completed`),
    );
    const m = await s.t.owner.query(
      'select state, mode, plan, verification from tenant_migrations where id = $1',
      [id],
    );
    expect(m.rows[0]).toMatchObject({ state: 'CutOver', mode: 'logical-replication' });
    expect(m.rows[0].plan.sourceAgent).toEqual(expect.any(String));
    expect(m.rows[0].plan.targetAgent).toEqual(expect.any(String));
    expect(Object.values(m.rows[0].verification.databases)).toEqual([
      expect.objectContaining({ equal: true }),
    ]);
    expect(Object.values(m.rows[0].verification.blobs)).toEqual([
      expect.objectContaining({ equal: true, blobs: 3 }),
    ]);

    // On the us engines: the rows and sequence, the blobs byte for byte; nothing left replicating.
    const moved = await onServer('us', async (c) => ({
      rows: (await c.query(`select count(*)::int as n, sum(n)::int as s from ${schema}.orders`)).rows[0],
      next: (await c.query(`select nextval('${schema}.orders_id_seq')::int as v`)).rows[0].v,
      subscriptions: (await c.query('select count(*)::int as n from pg_subscription')).rows[0].n,
    }));
    expect(moved).toEqual({ rows: { n: 2000, s: 2_001_000 }, next: 2001, subscriptions: 0 });
    for (const [name, body] of Object.entries(payloads))
      expect((await container('us', bucket).getBlobClient(name).downloadToBuffer()).equals(body)).toBe(true);
    // The eu reader (its role, publication and slot) is gone; the eu source is kept, NOLOGIN.
    const eu = await onServer('eu', async (c) => ({
      readers: (await c.query(`select count(*)::int as n from pg_roles where rolname like 'tenantry_r_%'`))
        .rows[0].n,
      slots: (await c.query('select count(*)::int as n from pg_replication_slots')).rows[0].n,
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        ?.rolcanlogin,
    }));
    expect(eu).toEqual({ readers: 0, slots: 0, login: false });

    // Each side's steps were commands of the agent holding that side's cell.
    const commands = await s.t.owner.query<{ op: string; state: string; cell: string }>(
      `select k.op, k.state, c.slug as cell from cell_agent_commands k join cells c on c.id = k.cell_id
       where k.key like $1 order by k.created_at`,
      [`${id}:%`],
    );
    const by = (cell: string) => new Set(commands.rows.filter((r) => r.cell === cell).map((r) => r.op));
    for (const op of ['inspect', 'schemaDdl', 'openReader', 'walPosition', 'trackBaseline', 'blobReader'])
      expect(by(euCell)).toContain(`region.${op}`);
    for (const op of ['createResources', 'createSchema', 'subscribe', 'verifyAgainst', 'pullBlobs'])
      expect(by(usCell)).toContain(`region.${op}`);
    expect(commands.rows.every((r) => r.state === 'Succeeded')).toBe(true);

    // The reader and the SAS URL went sealed for the us agent, and are cleared from the rows since.
    const handedOver = await s.t.owner.query<{ op: string; input: unknown; result: unknown }>(
      `select op, input, result from cell_agent_commands
       where key like $1 and op in ('region.openReader', 'region.subscribe', 'region.blobReader', 'region.pullBlobs')`,
      [`${id}:%`],
    );
    for (const c of handedOver.rows) {
      const sealed = c.op === 'region.openReader' || c.op === 'region.blobReader' ? c.result : c.input;
      expect(JSON.stringify(sealed), c.op).toContain('"sealed:cleared"');
    }
    // The pattern finds what it looks for (a reader's URL and a SAS URL as they are made).
    expect(
      `postgres://tenantry_r_0123456789ab_0:${randomBytes(24).toString('base64url')}@127.0.0.1/x`,
    ).toMatch(CREDENTIAL);
    expect(
      await container('eu', bucket).generateSasUrl({
        permissions: ContainerSASPermissions.parse('rl'),
        expiresOn: new Date(Date.now() + 60_000),
      }),
    ).toMatch(CREDENTIAL);
    await noCredentialLeft(id);

    // The tenant is in the us cell; the us agent keeps its resources Ready there.
    const t = await s.t.owner.query(
      'select t.region, c.slug as cell from tenants t join cells c on c.id = t.cell_id where t.slug = $1',
      [tenant],
    );
    expect(t.rows[0]).toEqual({ region: 'us', cell: usCell });
    await until(
      'the resources Ready in us (by its agent)',
      async () => (await resources()).every((r) => r.phase === 'Ready' && r.current),
      60_000,
    );
    const login = await onServer('us', (c) =>
      c.query('select rolcanlogin from pg_roles where rolname = $1', [schema]),
    );
    expect(login.rows[0].rolcanlogin).toBe(true);

    // A row and a blob written in us, then the rollback: the us agent hands the eu agent a reader
    // and the eu agent pulls; both are in eu afterwards, the us copies are gone.
    await onServer('us', (c) => c.query(`insert into ${schema}.orders (n, note) values (2001, 'in us')`));
    const late = randomBytes(3_000);
    await container('us', bucket).getBlockBlobClient('docs/late.bin').uploadData(late);
    const rb = await s.request('POST', `/v1/tenants/${tenant}/migrations/${id}/rollback`, { body: {} });
    expect(rb.status, JSON.stringify(rb.body)).toBeLessThan(300);
    expect(
      await finished(s.t, rb.body.rollbackWorkflowId, 120_000).catch(explain(rb.body.rollbackWorkflowId)),
    ).toMatchObject({ state: 'Succeeded' });
    const back = await onServer('eu', async (c) => ({
      rows: (await c.query(`select count(*)::int as n from ${schema}.orders`)).rows[0].n,
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        .rolcanlogin,
    }));
    expect(back).toEqual({ rows: 2001, login: true });
    // The rolled-back migration: the us agent's reader and SAS went sealed for the eu agent, cleared since.
    await noCredentialLeft(id);
    expect(
      (await container('eu', bucket).getBlobClient('docs/late.bin').downloadToBuffer()).equals(late),
    ).toBe(true);
    expect(
      (await onServer('us', (c) => c.query('select 1 from pg_namespace where nspname = $1', [schema])))
        .rowCount,
    ).toBe(0);
    expect(await container('us', bucket).exists()).toBe(false);
    await until(
      'the resources Ready in eu again (by its agent)',
      async () => (await resources()).every((r) => r.phase === 'Ready' && r.current),
      60_000,
    );

    // Again to us, then retired: the eu agent drops the kept schema, its role and the container.
    const again = await s.request('POST', `/v1/tenants/${tenant}/migrations`, { body: { region: 'us' } });
    expect(again.status, JSON.stringify(again.body)).toBeLessThan(300);
    expect(await finished(s.t, again.body.id, 180_000).catch(explain(again.body.id))).toMatchObject({
      state: 'Succeeded',
    });
    const retiring = await s.request('POST', `/v1/tenants/${tenant}/migrations/${again.body.id}/retire`, {
      body: {},
    });
    expect(retiring.status, JSON.stringify(retiring.body)).toBeLessThan(300);
    expect(await finished(s.t, retiring.body.retireWorkflowId, 60_000)).toMatchObject({ state: 'Succeeded' });
    const left = await onServer('eu', (c) =>
      c.query(
        `select (select count(*) from pg_namespace where nspname = $1)::int as schemas,
                (select count(*) from pg_roles where rolname = $1)::int as roles`,
        [schema],
      ),
    );
    expect(left.rows[0]).toEqual({ schemas: 0, roles: 0 });
    expect(await container('eu', bucket).exists()).toBe(false);
    expect(await container('us', bucket).exists()).toBe(true);
    const kept = await onServer('us', (c) => c.query(`select count(*)::int as n from ${schema}.orders`));
    expect(kept.rows[0].n).toBe(2001);
    expect(controlPlaneCalls).toEqual([]);
    await noCredentialLeft(again.body.id);
  });
});
