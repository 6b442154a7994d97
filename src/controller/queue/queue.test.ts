import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/test-database.js';
import { asPlatform, createDb, type Db } from '../../db/database.js';
import { claimJobs } from './claim-jobs.js';
import { completeJob } from './complete-job.js';
import { enqueueJob } from './enqueue-job.js';
import { failJob } from './fail-job.js';
import { renewLease } from './renew-lease.js';

let t: TestDatabase;
let other: Db;

beforeAll(async () => {
  t = await createTestDatabase();
  other = createDb(t.appUrl, 10, { platformUrl: t.platformUrl });
});
afterAll(async () => {
  await other?.destroy();
  await t?.destroy();
});

async function seed(n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => randomUUID());
  await t.owner.query('delete from reconcile_jobs');
  await asPlatform(t.db, async (trx) => {
    for (const id of ids)
      await enqueueJob(trx, { kind: 'Customer', objectId: id, tenantId: null, generation: 1 });
  });
  return ids;
}

const claim = (db: Db, workerId: string, limit: number, leaseMs = 10_000) =>
  asPlatform(db, (trx) => claimJobs(trx, { workerId, limit, leaseMs }));

describe('reconcile queue', () => {
  it('concurrent claimers never take the same job while its lease holds', async () => {
    const ids = await seed(300);
    const taken = new Map<string, string>();
    const dup: string[] = [];
    await Promise.all(
      ['w1', 'w2', 'w3', 'w4'].map(async (w, i) => {
        const db = i % 2 === 0 ? t.db : other;
        for (;;) {
          const jobs = await claim(db, w, 7);
          if (jobs.length === 0) return;
          for (const j of jobs) {
            if (taken.has(j.objectId)) dup.push(j.objectId);
            taken.set(j.objectId, w);
          }
        }
      }),
    );
    expect(dup).toEqual([]);
    expect(taken.size).toBe(ids.length);
    expect(new Set(taken.values()).size).toBeGreaterThan(1);
  });

  it('a dead worker’s lease runs out and another worker takes the job; the dead one is fenced off', async () => {
    const [id] = await seed(1);
    const [job] = await claim(t.db, 'dead', 1, 300);
    expect(job?.objectId).toBe(id);
    expect(await claim(other, 'alive', 1)).toEqual([]);
    await new Promise((r) => setTimeout(r, 400));
    const [again] = await claim(other, 'alive', 1);
    expect(again?.objectId).toBe(id);
    // The dead worker comes back: it can neither renew nor complete what it no longer holds.
    expect(
      await asPlatform(t.db, (trx) => renewLease(trx, job!, { workerId: 'dead', leaseMs: 10_000 })),
    ).toBe(false);
    await asPlatform(t.db, (trx) =>
      completeJob(trx, job!, { workerId: 'dead', resyncMs: 60_000, finalised: true }),
    );
    const row = await t.owner.query('select locked_by from reconcile_jobs where object_id = $1', [id]);
    expect(row.rows[0].locked_by).toBe('alive');
  });

  it('an enqueue during the work keeps the job due; without one it waits for the resync', async () => {
    const [a, b] = await seed(2);
    const jobs = await claim(t.db, 'w', 2);
    await asPlatform(t.db, (trx) =>
      enqueueJob(trx, { kind: 'Customer', objectId: a!, tenantId: null, generation: 2 }),
    );
    for (const j of jobs) {
      await asPlatform(t.db, (trx) =>
        completeJob(trx, j, { workerId: 'w', resyncMs: 60_000, finalised: false }),
      );
    }
    const due = await t.owner.query(
      'select object_id, generation, run_after <= now() as due, locked_by from reconcile_jobs order by object_id',
    );
    const byId = Object.fromEntries(due.rows.map((r) => [r.object_id, r]));
    expect(byId[a!]).toMatchObject({ due: true, generation: '2', locked_by: null });
    expect(byId[b!]).toMatchObject({ due: false, locked_by: null });
    // A finalised tombstone's job goes away unless it changed meanwhile.
    const [ja] = await claim(t.db, 'w', 1);
    await asPlatform(t.db, (trx) =>
      completeJob(trx, ja!, { workerId: 'w', resyncMs: 60_000, finalised: true }),
    );
    expect((await t.owner.query('select 1 from reconcile_jobs where object_id = $1', [a])).rowCount).toBe(0);
  });

  it('a failure counts the attempt and delays the job', async () => {
    const [id] = await seed(1);
    const [job] = await claim(t.db, 'w', 1);
    await asPlatform(t.db, (trx) =>
      failJob(trx, job!, { workerId: 'w', attempts: 3, delayMs: 5_000, error: 'X: boom' }),
    );
    const r = await t.owner.query(
      `select attempts, last_error, run_after > now() + interval '4 seconds' as later, locked_by from reconcile_jobs where object_id = $1`,
      [id],
    );
    expect(r.rows[0]).toEqual({ attempts: 3, last_error: 'X: boom', later: true, locked_by: null });
    expect(await claim(t.db, 'w', 1)).toEqual([]);
  });
});
