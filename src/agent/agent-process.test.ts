import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentStarter } from '../../test/helpers/agent-processes.js';
import { startController, type TestController, tempDataDir, until } from '../../test/helpers/controller.js';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { LeaseMonitor } from './lease-monitor.js';

/**
 * `tenantry agent` as real processes, one per cell, each with its own data folder; the control
 * plane (API and controller in this process) has no provider configured at all. An agent killed
 * with SIGKILL leaves its cell Unknown (not Failed) after 5 missed heartbeats, and its restart
 * (saved credential, no join token) converges again.
 */
const HEARTBEAT_MS = 400;
const log = pino({ level: 'silent' });
let s: TestServer;
let controller: TestController;
let monitor: LeaseMonitor;
const children: ChildProcess[] = [];

const agentProcess = agentStarter(() => s.url, children, { TENANTRY_RESYNC_MS: '500' });

const blobs = async (cell: string) =>
  (
    await s.t.owner.query(
      `select r.id, r.phase, r.physical_name, (select c->>'status' from jsonb_array_elements(r.conditions) c
         where c->>'type' = 'Ready') as ready
       from integration_resources r join tenants t on t.id = r.tenant_id join cells c on c.id = t.cell_id
       where c.slug = $1 and r.spec->>'type' = 'blob-container'`,
      [cell],
    )
  ).rows;
const agentConnected = async (cell: string) =>
  (
    await s.t.owner.query(
      `select (select c->>'status' from jsonb_array_elements(conditions) c where c->>'type' = 'AgentConnected') as s
       from cells where slug = $1`,
      [cell],
    )
  ).rows[0]?.s;

beforeAll(async () => {
  s = await startTestServer({
    configure: (c) => {
      c.agent = { ...c.agent, heartbeatIntervalMs: HEARTBEAT_MS, feedPollMs: 100 };
    },
  });
  // The control plane has no provider at all: whatever turns Ready was done by an agent.
  const none = { missing: 'no provider in the control plane' };
  controller = await startController(s.t, {
    providers: () => ({ 'blob-container': none, 'kafka-topic': none, database: none, regions: {} }),
  });
  monitor = new LeaseMonitor(s.t.db, 100, log);
  monitor.start();
  const applied = await s.request('POST', '/v1/apply', { body: circleK() });
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await monitor?.stop();
  await controller?.stop();
  await s?.close();
});

describe('tenantry agent (processes)', () => {
  it('two agents turn their cells Ready; a killed one is Unknown, then converges after its restart', async () => {
    const dirs = { 'eu-nonprod-1': await tempDataDir(), 'eu-prod-1': await tempDataDir() };
    const token = async (cell: string) =>
      (await s.request('POST', `/v1/cells/${cell}/join-tokens`, { body: {} })).body.token;
    const [a] = await Promise.all([
      agentProcess('eu-nonprod-1', dirs['eu-nonprod-1'], await token('eu-nonprod-1')),
      agentProcess('eu-prod-1', dirs['eu-prod-1'], await token('eu-prod-1')),
    ]);
    await until(
      'both cells Ready',
      async () => {
        const all = [...(await blobs('eu-nonprod-1')), ...(await blobs('eu-prod-1'))];
        return all.length > 0 && all.every((r) => r.phase === 'Ready');
      },
      60_000,
    );
    // Each container is in its own agent's folder.
    for (const [cell, dir] of Object.entries(dirs))
      for (const r of await blobs(cell))
        expect((await fs.stat(path.join(dir, 'blobs', r.physical_name))).isDirectory()).toBe(true);

    a!.kill('SIGKILL');
    await until(
      'eu-nonprod-1 Unknown',
      async () => (await agentConnected('eu-nonprod-1')) === 'Unknown',
      15_000,
    );
    const lost = await blobs('eu-nonprod-1');
    expect(lost.every((r) => r.phase === 'Unknown' && r.ready === 'Unknown')).toBe(true);
    expect((await blobs('eu-prod-1')).every((r) => r.phase === 'Ready')).toBe(true);

    // Restarted with what it saved: no join token needed (that one is spent anyway).
    await agentProcess('eu-nonprod-1', dirs['eu-nonprod-1']);
    await until(
      'eu-nonprod-1 converged',
      async () =>
        (await agentConnected('eu-nonprod-1')) === 'True' &&
        (await blobs('eu-nonprod-1')).every((r) => r.phase === 'Ready'),
      60_000,
    );
  });
});
