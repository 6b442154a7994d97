import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAST } from '../../../test/helpers/controller.js';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/test-database.js';
import { asPlatform } from '../../db/database.js';
import { ProviderError } from '../../providers/provider.js';
import { Controller } from '../controller.js';
import type { ProviderSet } from '../providers.js';
import { enqueueJob } from './enqueue-job.js';
import type { QueuedJob } from './job.js';
import { JobTypes } from './job-types.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

interface SweepJob extends QueuedJob {
  kind: 'test.sweep';
}

const until = async (what: () => Promise<boolean>, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!(await what())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 25));
  }
};

const row = async (type: string, key: string) =>
  (
    await t.owner.query<{
      attempts: number;
      last_error: string | null;
      locked_by: string | null;
      due_in_s: number;
    }>(
      `select attempts, last_error, locked_by, extract(epoch from run_after - now())::float8 as due_in_s
       from reconcile_jobs where object_kind = $1 and object_id = $2`,
      [type, key],
    )
  ).rows[0];

describe('job types on the leased queue', () => {
  it('refuses a type registered twice', () => {
    const types = new JobTypes().register('a', { run: async () => ({ finalised: false, finished: false }) });
    expect(() => types.register('a', { run: async () => ({ finalised: false, finished: false }) })).toThrow(
      /registered twice/,
    );
  });

  it('serves a registered type with the same lease, retry and resync as reconciles; an unknown type fails without stopping the queue', async () => {
    const key = randomUUID();
    const unknownKey = randomUUID();
    const runs: string[] = [];
    const failures: string[] = [];
    const types = new JobTypes<{ 'test.sweep': SweepJob }>().register('test.sweep', {
      async run(job) {
        runs.push(job.objectId);
        // The first run fails (retryable): the job comes back after backoff, with its attempt counted.
        if (runs.length === 1) throw new ProviderError('store busy', 'Busy', true);
        return { finalised: false, finished: false };
      },
      async failed(job, err, final) {
        failures.push(`${job.kind} ${err.reason} final=${final}`);
      },
    });
    await asPlatform(t.db, async (trx) => {
      await enqueueJob(trx, { kind: 'test.sweep', objectId: key, tenantId: null, generation: 1 });
      await enqueueJob(trx, { kind: 'test.unknown', objectId: unknownKey, tenantId: null, generation: 1 });
    });
    const controller = new Controller({
      db: t.db,
      config: FAST,
      providers: {} as ProviderSet,
      logger: pino({ level: 'silent' }),
      jobTypes: types as unknown as JobTypes,
    });
    expect(controller.jobTypes.types).toEqual(expect.arrayContaining(['test.sweep', 'Tenant', 'Deployment']));
    controller.start();
    try {
      await until(async () => runs.length >= 2 && (await row('test.sweep', key))?.locked_by === null);
      await until(async () => (await row('test.unknown', unknownKey))?.last_error !== null);
    } finally {
      await controller.stop();
    }
    expect(runs).toEqual([key, key]);
    expect(failures).toEqual(['test.sweep Busy final=false']);
    const done = await row('test.sweep', key);
    // Succeeded: released, attempts reset, next run at the resync (±10%).
    expect(done).toMatchObject({ attempts: 0, last_error: null, locked_by: null });
    expect(done!.due_in_s).toBeGreaterThan((FAST.resyncIntervalMs / 1000) * 0.85);
    // No handler: failed for good (not retryable), kept for the next resync, not lost.
    const unknown = await row('test.unknown', unknownKey);
    expect(unknown!.last_error).toMatch(/^UnknownJobType: no handler for job type test.unknown/);
    expect(unknown!.due_in_s).toBeGreaterThan((FAST.resyncIntervalMs / 1000) * 0.85);
  });
});
