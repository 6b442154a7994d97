import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import {
  deploymentManifests,
  startController,
  statuses,
  tempDataDir,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';

const fx = useControllerTestDatabase((f) => f.registry.apply(f.ctx, deploymentManifests('acme', 'plan')));

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _enc, cb) {
        lines.push(JSON.parse(String(chunk)));
        cb();
      },
    }),
  );
  return { logger, lines };
}

const statusOf = async (slug: string) => (await statuses(fx.t.owner)).find((r) => r.slug === slug);

describe('failures', () => {
  it('backs off with capped full jitter, then shows Ready=False/Failed, and converges once the fault is gone', async () => {
    const dataDir = await tempDataDir();
    // A real fault: a file where the blob folder should be (chmod would not stop root).
    fs.writeFileSync(path.join(dataDir, 'blobs'), 'in the way');
    await fx.registry.apply(fx.ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'IntegrationResource',
        metadata: {},
        spec: { scope: { deployment: 'acme-eu-dev-plan' }, type: 'blob-container' },
      },
    ]);
    const { logger, lines } = capture();
    const c = await startController(fx.t, {
      dataDir,
      logger,
      // A lease long enough that a stalled event loop on a loaded machine cannot hand the job to a second worker.
      controller: {
        backoffBaseMs: 100,
        backoffCapMs: 150,
        maxAttempts: 4,
        resyncIntervalMs: 1_500,
        leaseMs: 10_000,
      },
    });
    try {
      const failed = await until('blob Failed', async () => {
        const s = await statusOf('acme-eu-dev-plan.blob');
        return s?.phase === 'Failed' && s;
      });
      expect(failed.reason).toBe('StorageUnavailable');
      expect(failed.message).toMatch(/gave up after 4 attempt\(s\)/);
      const all = lines.filter((l) => l.msg === 'reconcile failed' && l.kind === 'IntegrationResource');
      // The series that ended in Failed: on a loaded machine the 1.5 s resync can start one more
      // first attempt before it, which is not part of the backoff under test.
      const end = all.findIndex((l) => l.final === true);
      const attempts = all.slice(Math.max(0, end - 3), end + 1);
      expect(attempts.map((l) => [l.attempts, l.final])).toEqual([
        [1, false],
        [2, false],
        [3, false],
        [4, true],
      ]);
      for (const l of attempts.slice(0, 3)) {
        const n = l.attempts as number;
        expect(l.retryInMs as number).toBeLessThanOrEqual(Math.min(150, 100 * 2 ** (n - 1)));
      }
      const ev = await fx.t.owner.query(
        `select count(*)::int as n from outbox_events where type = 'dev.tenantry.integrationresource.failed.v1'`,
      );
      expect(ev.rows[0].n).toBe(1);
      const audit = await fx.t.owner.query(
        `select outcome from audit_records where action = 'integrationresource.failed'`,
      );
      expect(audit.rows).toEqual([{ outcome: 'failure' }]);
      // The deployment and tenant say why they are not Ready.
      expect(await statusOf('acme-eu-dev-plan')).toMatchObject({
        phase: 'Provisioning',
        reason: 'DependentsNotReady',
      });

      fs.rmSync(path.join(dataDir, 'blobs'));
      await until(
        'blob Ready after the fault is fixed',
        async () => (await statusOf('acme-eu-dev-plan.blob'))?.phase === 'Ready',
      );
      await until('tenant Ready', async () => (await statusOf('acme-eu-dev'))?.phase === 'Ready');
      expect(fs.statSync(path.join(dataDir, 'blobs', 'acme-eu-dev-plan')).isDirectory()).toBe(true);
    } finally {
      await c.stop();
    }
  });

  it('an unreachable data-plane PostgreSQL ends Ready=False DataPlaneUnavailable, never a silent drop', async () => {
    await fx.registry.apply(fx.ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'IntegrationResource',
        metadata: {},
        spec: { scope: { tenant: 'acme-eu-dev' }, type: 'database', database: { isolation: 'pool' } },
      },
    ]);
    const c = await startController(fx.t, {
      env: { TENANTRY_DATAPLANE_DATABASE_URL: 'postgres://nobody:secret@127.0.0.1:1/dataplane' },
      controller: { maxAttempts: 2, backoffBaseMs: 10, backoffCapMs: 20 },
    });
    try {
      const s = await until('database Failed', async () => {
        const s = await statusOf('acme-eu-dev.database');
        return s?.phase === 'Failed' && s;
      });
      expect(s.reason).toBe('DataPlaneUnavailable');
      expect(s.message).toMatch(/ECONNREFUSED|connect/);
      expect(s.message).not.toContain('secret');
      // Parked until the next resync (a minute here), with the error kept on the job.
      const job = await until('job released', async () => {
        const r = await fx.t.owner.query(
          `select last_error, run_after > now() + interval '30 seconds' as later from reconcile_jobs j
           join integration_resources r on r.id = j.object_id
           where r.slug = 'acme-eu-dev.database' and j.locked_by is null`,
        );
        return r.rows[0]?.later && r.rows[0];
      });
      expect(job.last_error).toMatch(/^DataPlaneUnavailable/);
    } finally {
      await c.stop();
    }
  });

  it('a resource failed for want of a provider is retried when a controller starts with it; a shorter resync applies at start', async () => {
    await fx.registry.apply(fx.ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'IntegrationResource',
        metadata: {},
        spec: { scope: { tenant: 'acme-eu-dev' }, type: 'blob-container' },
      },
    ]);
    const dataDir = await tempDataDir();
    // The first process has no blob provider; its failure is final (not retryable) and parked for 10 min.
    const without = await startController(fx.t, {
      dataDir,
      controller: { resyncIntervalMs: 600_000 },
      providers: () => ({ 'blob-container': { missing: 'no blob storage is configured in this test' } }),
    });
    try {
      const s = await until('blob Failed', async () => {
        const s = await statusOf('acme-eu-dev.blob');
        return s?.phase === 'Failed' && s;
      });
      expect(s.reason).toBe('ProviderNotConfigured');
    } finally {
      await without.stop();
    }
    // Everything else of the tenant waits for its resync, ten minutes ahead.
    const ahead = `select count(*)::int as n from reconcile_jobs where run_after > now() + interval '5 minutes'`;
    expect((await fx.t.owner.query(ahead)).rows[0].n).toBeGreaterThan(0);
    // The next process has the provider: the resource is Ready without waiting for the resync, and
    // its 30 s resync interval applies to every job at once.
    const started = Date.now();
    const configured = await startController(fx.t, { dataDir, controller: { resyncIntervalMs: 30_000 } });
    try {
      await until('blob Ready', async () => (await statusOf('acme-eu-dev.blob'))?.phase === 'Ready', 10_000);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect((await fx.t.owner.query(ahead)).rows[0].n).toBe(0);
    } finally {
      await configured.stop();
    }
  });
});
