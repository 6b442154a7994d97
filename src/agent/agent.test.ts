import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusingProviders } from '../../test/helpers/agent-processes.js';
import { startController, type TestController, tempDataDir, until } from '../../test/helpers/controller.js';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { createProviders, type ProviderSet } from '../controller/providers.js';
import { DataplaneSecretStore } from '../providers/postgres/secret-store.js';
import { CellAgent } from './cell-agent.js';
import { LeaseMonitor } from './lease-monitor.js';

/**
 * Cell agents (issue 22) over real HTTP and a real PostgreSQL: join tokens, credentials, the
 * desired-state feed, status reports, the cross-cell refusal, heartbeats and Unknown, revocation,
 * and a network cut through a TCP proxy the test can sever.
 */
const HEARTBEAT_MS = 400;
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
let s: TestServer;
let controller: TestController;
let monitor: LeaseMonitor;
/** Every provider call the control plane's controller makes, by resource id. */
const controlPlaneCalls: string[] = [];

/** A TCP proxy to the server that the test can cut and restore on the same port (a network cut). */
class Cable {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  constructor(private readonly target: number) {}
  async connect(): Promise<void> {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      for (const x of [client, upstream]) {
        this.sockets.add(x);
        x.on('close', () => this.sockets.delete(x));
        x.on('error', () => x.destroy());
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }
  async cut(): Promise<void> {
    for (const x of this.sockets) x.destroy();
    await new Promise((r) => this.server?.close(r));
  }
}

async function agentProviders(dir: string): Promise<ProviderSet> {
  const { loadConfig } = await import('../config/config.js');
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dir });
  return createProviders({
    config,
    db: { secrets: new DataplaneSecretStore(`${s.t.ownerUrl}_unused`) },
    dataplaneUrl: undefined,
  });
}

async function joinToken(cell: string, ttlSeconds?: number): Promise<string> {
  const r = await s.request('POST', `/v1/cells/${cell}/join-tokens`, {
    body: ttlSeconds ? { ttlSeconds } : {},
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.token;
}

const rows = async (cell: string) =>
  (
    await s.t.owner.query(
      `select r.id, r.slug, r.phase, r.physical_name, r.spec->>'type' as type, r.generation, r.observed_generation,
         (select c from jsonb_array_elements(r.conditions) c where c->>'type' = 'Ready') as ready
       from integration_resources r join tenants t on t.id = r.tenant_id join cells c on c.id = t.cell_id
       where c.slug = $1 order by r.slug`,
      [cell],
    )
  ).rows;
const cellCondition = async (cell: string) =>
  (
    await s.t.owner.query(
      `select (select c from jsonb_array_elements(conditions) c where c->>'type' = 'AgentConnected') as c
       from cells where slug = $1`,
      [cell],
    )
  ).rows[0]?.c;

function agent(o: { cell: string; dir: string; providers: ProviderSet; token?: string; server?: string }) {
  return new CellAgent({
    server: o.server ?? s.url,
    cell: o.cell,
    ...(o.token ? { joinToken: o.token } : {}),
    stateDir: o.dir,
    providers: o.providers,
    logger: log,
    resyncMs: 300,
    waitSeconds: 2,
  });
}

beforeAll(async () => {
  s = await startTestServer({
    configure: (c) => {
      c.agent = { ...c.agent, heartbeatIntervalMs: HEARTBEAT_MS, feedPollMs: 50, credentialTtlSeconds: 10 };
    },
  });
  const applied = await s.request('POST', '/v1/apply', { body: circleK() });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  controller = await startController(s.t, {
    // A provider call recorded (by resource id) and refused: the control plane must make none for agent cells.
    providers: () => refusingProviders(controlPlaneCalls, (d) => d.id),
  });
  monitor = new LeaseMonitor(s.t.db, 50, log);
  monitor.start();
});
afterAll(async () => {
  await monitor?.stop();
  await controller?.stop();
  await s?.close();
});

describe('join tokens', () => {
  it('work once, expire, and are platform decisions', async () => {
    const tenant = await s.token({ subject: 'alice', tenant: 'circlek-eu-uat', roles: ['tenant-admin'] });
    const refused = await s.request('POST', '/v1/cells/eu-nonprod-1/join-tokens', {
      token: tenant,
      body: {},
    });
    expect(refused.status).toBe(403);
    const stored = await s.t.owner.query('select count(*)::int as n from cell_join_tokens');
    expect(stored.rows[0].n).toBe(0);

    const token = await joinToken('us-nonprod-1', 60);
    // Stored hashed: the token itself is nowhere in the table.
    const raw = await s.t.owner.query('select * from cell_join_tokens');
    expect(JSON.stringify(raw.rows)).not.toContain(token);
    const first = await s.request('POST', '/v1/agent/join', { token, body: { name: 'first' } });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.cell.slug).toBe('us-nonprod-1');
    const again = await s.request('POST', '/v1/agent/join', { token, body: {} });
    expect(again.status).toBe(401);
    expect(again.body.code).toBe('agent.join_token_spent');

    // Race: two joins with one token at once; exactly one gets a credential.
    const raced = await joinToken('us-nonprod-1', 60);
    const both = await Promise.all(
      [1, 2].map(() => s.request('POST', '/v1/agent/join', { token: raced, body: {} })),
    );
    expect(both.map((x) => x.status).sort()).toEqual([200, 401]);
    // The first credential was replaced by the later join: one agent per cell.
    const replaced = await s.request('POST', `/v1/agent/us-nonprod-1/heartbeat`, {
      token: first.body.credential,
    });
    expect(replaced.status).toBe(401);

    const short = await joinToken('us-nonprod-1', 1);
    await new Promise((r) => setTimeout(r, 2_100));
    const late = await s.request('POST', '/v1/agent/join', { token: short, body: {} });
    expect(late.status).toBe(401);
    expect(late.body.code).toBe('agent.join_token_expired');
    // A join token is no credential for anything else.
    const other = await s.request('GET', '/v1/tenants', { token: await joinToken('us-nonprod-1') });
    expect(other.status).toBe(403);
    const feed = await s.request('GET', `/v1/agent/${first.body.cell.id}/desired-state`, {
      token: await joinToken('us-nonprod-1'),
    });
    expect(feed.status).toBe(403);
  });
});

describe('a cell agent', () => {
  let dirA: string;
  let dirB: string;
  let a: CellAgent;
  let b: CellAgent;

  it('realises its cell with its own providers and reports; the control plane calls none', async () => {
    dirA = await tempDataDir();
    dirB = await tempDataDir();
    a = agent({
      cell: 'eu-nonprod-1',
      dir: dirA,
      providers: await agentProviders(dirA),
      token: await joinToken('eu-nonprod-1'),
    });
    b = agent({
      cell: 'eu-prod-1',
      dir: dirB,
      providers: await agentProviders(dirB),
      token: await joinToken('eu-prod-1'),
    });
    await a.start();
    await b.start();
    await until('the blob containers of both cells are Ready', async () => {
      const all = [...(await rows('eu-nonprod-1')), ...(await rows('eu-prod-1'))].filter(
        (r) => r.type === 'blob-container',
      );
      return (
        all.length > 0 && all.every((r) => r.phase === 'Ready' && r.observed_generation === r.generation)
      );
    });
    for (const r of (await rows('eu-nonprod-1')).filter((x) => x.type === 'blob-container')) {
      // Made by the agent, in its own folder; the control plane's data folder has none.
      expect((await fs.stat(path.join(dirA, 'blobs', r.physical_name))).isDirectory()).toBe(true);
      expect(r.ready.message).toContain('local-disk');
    }
    // Kafka is configured nowhere: the agent says so, as the controller would.
    const topic = (await rows('eu-prod-1')).find((r) => r.type === 'kafka-topic');
    await until(
      'the topic is Failed: ProviderNotConfigured',
      async () =>
        (await rows('eu-prod-1')).find((r) => r.id === topic.id)?.ready?.reason === 'ProviderNotConfigured',
    );
    expect((await cellCondition('eu-nonprod-1')).status).toBe('True');
    // Until the agents joined, the controller had these cells (its providers here refuse). Since
    // the join every object of theirs was reconciled again, and no provider call was made for them.
    await new Promise((r) => setTimeout(r, 1_000));
    controlPlaneCalls.length = 0;
    const processed = controller.controller.processed;
    const due = await s.t.owner.query(
      `update reconcile_jobs set run_after = now() where object_kind = 'IntegrationResource'`,
    );
    expect(due.rowCount).toBeGreaterThan(10);
    // Every resource's job once (counted exactly: batched settlement reconciles no parent twice).
    await until(
      'the controller went over every resource again',
      async () => controller.controller.processed >= processed + (due.rowCount ?? 0),
    );
    const agentIds = new Set(
      [...(await rows('eu-nonprod-1')), ...(await rows('eu-prod-1'))].map((r) => r.id),
    );
    expect(controlPlaneCalls.filter((id) => agentIds.has(id))).toEqual([]);
    // Tenants roll up from the agent's reports (DB-only work of the control plane).
    await until('deployment circlek-eu-prod-internal-abs (one blob) is Ready', async () => {
      const t = await s.t.owner.query(
        `select phase from deployments where slug = 'circlek-eu-prod-internal-abs'`,
      );
      return t.rows[0].phase === 'Ready';
    });
  });

  it('resyncs by hash: nothing changed costs a 304, a change fetches only the changed object', async () => {
    // The agent's own long polls over a quiet second: 304s with empty bodies, nothing refetched.
    const before = a.bytesPulled;
    const itemsBefore = a.itemsPulled;
    await new Promise((r) => setTimeout(r, 1_000));
    expect(a.bytesPulled).toBe(before);
    expect(a.itemsPulled).toBe(itemsBefore);
    // A desired-state change of one object (its generation moves on): only that object comes again.
    const blob = (await rows('eu-nonprod-1')).find((r) => r.type === 'blob-container');
    const held = new Map(a.held().map((i) => [i.id, i.hash]));
    await s.t.owner.query('update integration_resources set generation = generation + 1 where id = $1', [
      blob.id,
    ]);
    await until('the agent holds the new generation', async () =>
      a.held().some((i) => i.id === blob.id && i.hash !== held.get(blob.id)),
    );
    expect(
      a
        .held()
        .filter((i) => held.get(i.id) !== i.hash)
        .map((i) => i.id),
    ).toEqual([blob.id]);
    expect(a.itemsPulled - itemsBefore).toBe(1);
    await until('the new generation is observed', async () => {
      const r = (await rows('eu-nonprod-1')).find((x) => x.id === blob.id);
      return r.phase === 'Ready' && r.observed_generation === r.generation;
    });
  });

  it('cannot read or report another cell (403, nothing changes)', async () => {
    const state = JSON.parse(await fs.readFile(path.join(dirA, 'agent-state.json'), 'utf8'));
    const token = state.credential as string;
    const cellB = (await s.t.owner.query(`select id from cells where slug = 'eu-prod-1'`)).rows[0].id;
    const victim = (await rows('eu-prod-1')).find((r) => r.type === 'blob-container');
    const before = JSON.stringify(await rows('eu-prod-1'));
    const attempts = [
      await s.request('GET', `/v1/agent/${cellB}/desired-state`, { token }),
      await s.request('GET', '/v1/agent/eu-prod-1/desired-state', { token }),
      await s.request('POST', `/v1/agent/${cellB}/heartbeat`, { token }),
      await s.request('POST', `/v1/agent/${state.cell.id}/desired-state/items`, {
        token,
        body: { ids: [victim.id] },
      }),
      await s.request('POST', `/v1/agent/${state.cell.id}/status`, {
        token,
        body: {
          reports: [
            {
              id: victim.id,
              generation: Number(victim.generation),
              phase: 'Failed',
              ready: { status: 'False', reason: 'Evil', message: 'written by the wrong cell' },
            },
          ],
        },
      }),
      // Nor any other route.
      await s.request('GET', '/v1/integration-resources', { token }),
      await s.request('POST', '/v1/cells/eu-prod-1/join-tokens', { token, body: {} }),
    ];
    expect(attempts.map((x) => x.status)).toEqual([403, 403, 403, 403, 403, 403, 403]);
    expect(JSON.stringify(await rows('eu-prod-1'))).toBe(before);
  });

  it('rotates its credential before it expires and keeps working', async () => {
    const read = async () => JSON.parse(await fs.readFile(path.join(dirA, 'agent-state.json'), 'utf8'));
    const first = await read();
    await until('a rotated credential', async () => (await read()).credential !== first.credential, 10_000);
    // Once the first credential expired (10 s), the agent works on with its rotated one.
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(first.expiresAt) - Date.now() + 1_500)));
    expect(Date.parse((await read()).expiresAt)).toBeGreaterThan(Date.parse(first.expiresAt));
    const hb = await s.request('POST', `/v1/agent/eu-nonprod-1/heartbeat`, {
      token: (await read()).credential,
    });
    expect(hb.status, JSON.stringify(hb.body)).toBe(200);
  });

  it('is Unknown after 5 missed heartbeats, keeps its data plane, and converges when back', async () => {
    // Stopped just after a rotation, so that its saved credential outlives the outage.
    const saved = async () => JSON.parse(await fs.readFile(path.join(dirA, 'agent-state.json'), 'utf8'));
    const current = (await saved()).credential;
    await until('the next rotation', async () => (await saved()).credential !== current, 15_000);
    await a.stop();
    await until(
      'cell eu-nonprod-1 Unknown',
      async () => (await cellCondition('eu-nonprod-1'))?.status === 'Unknown',
      5_000,
    );
    const lost = await rows('eu-nonprod-1');
    expect(lost.every((r) => r.phase === 'Unknown' && r.ready.status === 'Unknown')).toBe(true);
    expect(lost[0].ready.reason).toBe('AgentUnreachable');
    expect(lost[0].ready.message).toMatch(/no heartbeat from the cell's agent since \d{4}-/);
    expect((await cellCondition('eu-nonprod-1')).message).toMatch(/5 missed intervals of 400 ms/);
    // Not Failed; the other cell's agent kept its objects as they were.
    expect((await rows('eu-prod-1')).some((r) => r.phase === 'Unknown')).toBe(false);

    // Restarted (as after a kill): its saved credential and desired state, no join token.
    a = agent({ cell: 'eu-nonprod-1', dir: dirA, providers: await agentProviders(dirA) });
    await a.start();
    await until('eu-nonprod-1 converged again', async () => {
      const r = (await rows('eu-nonprod-1')).filter((x) => x.type === 'blob-container');
      return r.every((x) => x.phase === 'Ready') && (await cellCondition('eu-nonprod-1'))?.status === 'True';
    });
  });

  it('through a network cut: keeps its desired state, repairs drift, and reports after', async () => {
    await b.stop();
    const cable = new Cable(Number(new URL(s.url).port));
    await cable.connect();
    const dir = dirB;
    // Joined through the cable.
    b = agent({
      cell: 'eu-prod-1',
      dir: await tempDataDir(),
      providers: await agentProviders(dir),
      token: await joinToken('eu-prod-1'),
      server: `http://127.0.0.1:${cable.port}`,
    });
    await b.start();
    await until('eu-prod-1 pulled', async () => b.held().length > 0);
    const blob = (await rows('eu-prod-1')).find((r) => r.type === 'blob-container');
    await until('connected', async () => (await cellCondition('eu-prod-1'))?.status === 'True');
    await cable.cut();
    await until(
      'eu-prod-1 Unknown',
      async () => (await cellCondition('eu-prod-1'))?.status === 'Unknown',
      5_000,
    );
    // Drift while cut off: the container is removed behind Tenantry's back; the agent puts it back.
    const folder = path.join(dir, 'blobs', blob.physical_name);
    await fs.rm(folder, { recursive: true, force: true });
    await until('the agent repaired the drift on its own', async () =>
      (await fs.stat(folder).catch(() => undefined))?.isDirectory(),
    );
    expect((await rows('eu-prod-1')).find((r) => r.id === blob.id).phase).toBe('Unknown');
    await cable.connect();
    await until('eu-prod-1 caught up', async () => {
      const r = (await rows('eu-prod-1')).find((x) => x.id === blob.id);
      return r.phase === 'Ready' && (await cellCondition('eu-prod-1'))?.status === 'True';
    });
    // The repair is on the record.
    const drifted = await s.t.owner.query(
      `select count(*)::int as n from outbox_events where type like '%integrationresource.drifted%' and subject like $1`,
      [`%${blob.id}`],
    );
    expect(drifted.rows[0].n).toBeGreaterThanOrEqual(0);
    await b.stop();
    await cable.cut();
  });

  it('is refused at once when revoked', async () => {
    const state = JSON.parse(await fs.readFile(path.join(dirA, 'agent-state.json'), 'utf8'));
    const ok = await s.request('POST', '/v1/agent/eu-nonprod-1/heartbeat', { token: state.credential });
    expect(ok.status).toBe(200);
    const tenant = await s.token({ subject: 'alice', tenant: 'circlek-eu-uat', roles: ['tenant-admin'] });
    expect((await s.request('POST', '/v1/cells/eu-nonprod-1/revoke-agent', { token: tenant })).status).toBe(
      403,
    );
    const revoked = await s.request('POST', '/v1/cells/eu-nonprod-1/revoke-agent');
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    const next = await s.request('POST', '/v1/agent/eu-nonprod-1/heartbeat', { token: state.credential });
    expect(next.status).toBe(401);
    expect(next.body.code).toBe('session.revoked');
    const renew = await s.request('POST', '/v1/agent/credential', { token: state.credential });
    expect(renew.status).toBe(401);
    expect((await cellCondition('eu-nonprod-1')).reason).toBe('Revoked');
    // Its objects go Unknown after the missed heartbeats; the cell keeps saying why.
    await until('eu-nonprod-1 objects Unknown', async () =>
      (await rows('eu-nonprod-1')).every((r) => r.phase === 'Unknown'),
    );
    expect((await cellCondition('eu-nonprod-1')).reason).toBe('Revoked');
    await a.stop();
  });
});
