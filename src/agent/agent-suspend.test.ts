import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cellManifest,
  deploymentManifests,
  startController,
  type TestController,
  tempDataDir,
} from '../../test/helpers/controller.js';
import {
  expectRefused,
  expectWorking,
  kafkaAndAzuriteUnavailable,
  startTenantEngines,
  type TenantEngines,
  topicAndContainer,
} from '../../test/helpers/tenant-access.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { finishedOnEngine } from '../../test/helpers/workflows.js';

/**
 * Suspend and resume (issue 18) in a cell held by a joined agent: the control plane has no provider
 * (its suspend workflow leaves agent-managed resources alone); the `tenantry agent` process, with the
 * Kafka broker and the Azurite account, takes the tenant's access away when its desired state says
 * `suspended` (DENY ACLs; the container's stored access policies kept in its metadata and removed)
 * and gives exactly that back after resume.
 */
const unavailable = await kafkaAndAzuriteUnavailable(
  'suspend/resume through a remote agent on Kafka and Azurite',
);
const ROOT = path.resolve(import.meta.dirname, '../..');
const customer = `as${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const cell = `${customer}-cell`;

describe.skipIf(unavailable)('suspend and resume through a remote agent (process)', () => {
  let s: TestServer;
  let controller: TestController;
  let engines: TenantEngines;
  let agent: ChildProcess | undefined;

  beforeAll(async () => {
    [engines, s] = await Promise.all([
      startTenantEngines(deployment),
      startTestServer({
        configure: (c) => {
          c.agent = { ...c.agent, heartbeatIntervalMs: 400, feedPollMs: 100 };
        },
      }),
    ]);
    const none = { missing: 'no provider in the control plane' };
    controller = await startController(s.t, {
      providers: () => ({ 'blob-container': none, 'kafka-topic': none, database: none, regions: {} }),
    });
    const applied = await s.request('POST', '/v1/apply', {
      body: [cellManifest(cell), ...deploymentManifests(customer, 'plan'), ...topicAndContainer(deployment)],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    const token = (await s.request('POST', `/v1/cells/${cell}/join-tokens`, { body: {} })).body.token;
    agent = spawn(
      process.execPath,
      [
        ...['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), '--server', s.url, 'agent'],
        ...['--cell', cell, '--data-dir', await tempDataDir(), '--join-token', token],
      ],
      {
        cwd: ROOT,
        stdio: 'ignore',
        env: {
          ...process.env,
          TENANTRY_LOG_LEVEL: 'warn',
          TENANTRY_RESYNC_MS: '2000',
          ...engines.env,
        },
      },
    );
  }, 300_000);

  afterAll(async () => {
    if (agent?.exitCode === null) agent.kill('SIGKILL');
    await controller?.stop();
    await s?.close();
    await engines?.stop();
  });

  async function transition(action: 'suspend' | 'resume'): Promise<void> {
    const res = await s.request('POST', `/v1/tenants/${tenant}/${action}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    // The control plane's workflow: no provider of its own to call for this cell.
    const id = String(res.headers.get('tenantry-workflow'));
    expect(await finishedOnEngine(s.t, id, {}, 60_000)).toMatchObject({ state: 'Succeeded' });
  }

  it('while suspended the agent has a real consumer and a SAS token refused; after resume both work again', {
    timeout: 300_000,
  }, async () => {
    const probe = await engines.probe(s.t.owner);

    await transition('suspend');
    await expectRefused(probe, 30_000);
    await transition('resume');
    await expectWorking(probe, 30_000);
    // Nothing left behind in the container's metadata.
    expect(Object.keys((await probe.container.getProperties()).metadata ?? {})).not.toContain(
      'tenantry_suspended_policies',
    );
    // The agent reported the resources Ready throughout (no drift left after its ensure).
    const phases = await s.t.owner.query<{ phase: string }>('select phase from integration_resources');
    expect(phases.rows.map((r) => r.phase)).toEqual(['Ready', 'Ready']);
  });
});
