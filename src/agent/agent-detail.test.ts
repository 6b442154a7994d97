import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDataDir, until } from '../../test/helpers/controller.js';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { loadConfig } from '../config/config.js';
import { createProviders } from '../controller/providers.js';
import { EventNotifier } from '../events/event-notifier.js';
import { DataplaneSecretStore } from '../providers/postgres/secret-store.js';
import { runOnAgent } from './agent-commands.js';
import { AGENT_VERSION, CellAgent } from './cell-agent.js';

/**
 * The agent's wake-ups come from NOTIFY, not from polling: the poll fallback is set to a minute, so
 * a change and a command that reach the agent within seconds were delivered by the LISTEN
 * connection. Then the operators' view of an agent (`GET /v1/cells/{ref}/agent`) and the batched
 * status write (one transaction per report request, transitions as events, stale ones skipped).
 */
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const CELL = 'eu-nonprod-1';
let s: TestServer;
let notifier: EventNotifier;
let agent: CellAgent;
let dir: string;
let cellId: string;

const objects = async () =>
  (
    await s.t.owner.query(
      `select r.id, r.tenant_id, r.phase, r.generation, r.observed_generation, r.spec->>'type' as type
       from integration_resources r join tenants t on t.id = r.tenant_id join cells c on c.id = t.cell_id
       where c.slug = $1 and r.phase <> 'Deleted' order by r.id`,
      [CELL],
    )
  ).rows;

beforeAll(async () => {
  const t = await import('../../test/helpers/test-database.js').then((m) => m.createTestDatabase());
  notifier = new EventNotifier(t.appUrl, log);
  await notifier.start();
  s = await startTestServer({
    database: t,
    notifier,
    configure: (c) => {
      c.agent = { ...c.agent, heartbeatIntervalMs: 300, feedPollMs: 60_000 };
    },
  });
  const applied = await s.request('POST', '/v1/apply', { body: circleK() });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  cellId = (await s.t.owner.query(`select id from cells where slug = $1`, [CELL])).rows[0].id;
  dir = await tempDataDir();
  const join = await s.request('POST', `/v1/cells/${CELL}/join-tokens`, { body: {} });
  expect(join.status).toBe(201);
  agent = new CellAgent({
    server: s.url,
    cell: CELL,
    joinToken: join.body.token,
    stateDir: dir,
    providers: createProviders({
      config: loadConfig({}, { TENANTRY_DATA_DIR: dir }),
      db: { secrets: new DataplaneSecretStore(`${s.t.ownerUrl}_unused`) },
      dataplaneUrl: undefined,
    }),
    logger: log,
    resyncMs: 600_000,
    waitSeconds: 50,
  });
  await agent.start();
  await until('the blob containers of the cell are Ready', async () => {
    const blobs = (await objects()).filter((r) => r.type === 'blob-container');
    return (
      blobs.length > 0 && blobs.every((r) => r.phase === 'Ready' && r.observed_generation === r.generation)
    );
  });
});
afterAll(async () => {
  await agent?.stop();
  await s?.close();
  await notifier?.stop();
  await s?.t.destroy();
});

describe('a cell agent woken by NOTIFY (the poll fallback is a minute)', () => {
  it('gets a change within seconds and reports it', async () => {
    const blob = (await objects()).find((r) => r.type === 'blob-container');
    const pulled = agent.itemsPulled;
    // What the change path commits: the new generation and an event whose NOTIFY names the tenant.
    await s.t.owner.query(
      `with c as (update integration_resources set generation = generation + 1 where id = $1 returning tenant_id)
       select pg_notify('tenantry_events', tenant_id::text) from c`,
      [blob.id],
    );
    await until(
      'the new generation is observed',
      async () => {
        const r = (await objects()).find((x) => x.id === blob.id);
        return r.observed_generation === r.generation;
      },
      10_000,
    );
    // Only the changed object was fetched and reconciled.
    expect(agent.itemsPulled - pulled).toBe(1);
  });

  it('gets a command within seconds', async () => {
    const tenantId = (await objects())[0].tenant_id;
    const t0 = Date.now();
    const out = await runOnAgent(s.t.db, {
      cellId,
      key: 'detail-test-1',
      op: 'secrets.delete-tenant',
      input: { tenantId },
      waitMs: 10_000,
    });
    expect(out).toEqual({ deleted: 0 });
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});

describe('GET /v1/cells/{ref}/agent', () => {
  it("shows the agent's version, lease, credential, objects by phase and pending commands", async () => {
    await until('a heartbeat said the version', async () => {
      const r = await s.request('GET', `/v1/cells/${CELL}/agent`);
      return r.status === 200 && r.body.version === AGENT_VERSION;
    });
    const r = await s.request('GET', `/v1/cells/${cellId}/agent`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const all = await objects();
    expect(r.body).toMatchObject({
      cell: { id: cellId, slug: CELL },
      embedded: false,
      version: AGENT_VERSION,
      lease: { heartbeatIntervalMs: 300, connection: 'Connected' },
      credential: { state: 'Valid', revokedAt: null },
      pendingCommands: [],
      objects: { total: all.length },
    });
    expect(Date.parse(r.body.lease.expiresAt)).toBeGreaterThan(Date.parse(r.body.lastSeenAt));
    const byPhase: Record<string, number> = {};
    for (const o of all) byPhase[o.phase] = (byPhase[o.phase] ?? 0) + 1;
    expect(r.body.objects.byPhase).toEqual(byPhase);

    // A command the stopped agent has not run is open (Running if its last request took it).
    await agent.stop();
    await expect(
      runOnAgent(s.t.db, {
        cellId,
        key: 'detail-test-2',
        op: 'secrets.delete-tenant',
        input: { tenantId: all[0].tenant_id },
        waitMs: 100,
      }),
    ).rejects.toThrow(/has not done secrets.delete-tenant yet/);
    const pending = await s.request('GET', `/v1/cells/${CELL}/agent`);
    expect(pending.body.pendingCommands).toMatchObject([
      { op: 'secrets.delete-tenant', state: expect.stringMatching(/^(Pending|Running)$/), attempts: 1 },
    ]);
  });

  it('is refused to tenants and agents, 404 for a cell without agent, and shows a revocation', async () => {
    const tenant = await s.token({ subject: 'alice', tenant: 'circlek-eu-uat', roles: ['tenant-admin'] });
    expect((await s.request('GET', `/v1/cells/${CELL}/agent`, { token: tenant })).status).toBe(403);
    const state = JSON.parse(
      await import('node:fs/promises').then((fs) => fs.readFile(`${dir}/agent-state.json`, 'utf8')),
    );
    expect((await s.request('GET', `/v1/cells/${CELL}/agent`, { token: state.credential })).status).toBe(403);
    expect((await s.request('GET', `/v1/cells/${CELL}/agent`, { token: null })).status).toBe(401);
    const none = await s.request('GET', '/v1/cells/eu-prod-1/agent');
    expect(none.status).toBe(404);
    expect(none.body.code).toBe('agent.not_found');
    expect((await s.request('GET', '/v1/cells/no-such-cell/agent')).body.code).toBe('cell.not_found');
    expect((await s.request('POST', `/v1/cells/${CELL}/revoke-agent`)).status).toBe(200);
    const revoked = await s.request('GET', `/v1/cells/${CELL}/agent`);
    expect(revoked.body.credential).toMatchObject({ state: 'Revoked', revokedBy: 'test-admin' });
  });
});

describe('status reports (one transaction per request)', () => {
  it('writes the current ones, skips stale ones, and records transitions as events', async () => {
    // A fresh agent credential for the cell (the previous one was revoked above).
    const join = await s.request('POST', `/v1/cells/${CELL}/join-tokens`, { body: {} });
    const cred = await s.request('POST', '/v1/agent/join', { token: join.body.token, body: {} });
    expect(cred.status).toBe(200);
    const [a, b] = (await objects()).filter((r) => r.type === 'blob-container' && r.phase === 'Ready');
    expect(a && b).toBeTruthy();
    const report = (o: { id: string; generation: string }, gen: number, ok: boolean) => ({
      id: o.id,
      generation: gen,
      phase: ok ? 'Ready' : 'Failed',
      ready: ok
        ? { status: 'True', reason: 'Provisioned', message: 'fine' }
        : { status: 'False', reason: 'DiskGone', message: 'the disk went away' },
    });
    const r = await s.request('POST', `/v1/agent/${CELL}/status`, {
      token: cred.body.credential,
      body: { reports: [report(a, Number(a.generation), false), report(b, Number(b.generation) + 1, false)] },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ accepted: 1, stale: 1 });
    const after = new Map((await objects()).map((o) => [o.id, o]));
    expect(after.get(a.id).phase).toBe('Failed');
    expect(after.get(b.id).phase).toBe('Ready');
    const events = await s.t.owner.query(
      `select type from outbox_events where subject = $1 and type like '%integrationresource.failed%'`,
      [`integrationresources/${a.id}`],
    );
    expect(events.rows).toHaveLength(1);
    // Back to Ready: a ready event; the Ready condition's transition time moves with its status.
    const back = await s.request('POST', `/v1/agent/${CELL}/status`, {
      token: cred.body.credential,
      body: { reports: [report(a, Number(a.generation), true)] },
    });
    expect(back.body).toEqual({ accepted: 1, stale: 0 });
    const ready = await s.t.owner.query(
      `select count(*)::int as n from outbox_events where subject = $1 and type like '%integrationresource.ready%'`,
      [`integrationresources/${a.id}`],
    );
    expect(ready.rows[0].n).toBeGreaterThanOrEqual(1);
    const cond = await s.t.owner.query(
      `select (select c from jsonb_array_elements(conditions) c where c->>'type' = 'Ready') as c
       from integration_resources where id = $1`,
      [a.id],
    );
    expect(cond.rows[0].c).toMatchObject({ status: 'True', reason: 'Provisioned', message: 'fine' });
    expect(Date.now() - Date.parse(cond.rows[0].c.lastTransitionTime)).toBeLessThan(60_000);
  });
});
