import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/test-database.js';
import { asPlatform, createDb, type Db } from '../../db/database.js';
import { claimJobs } from './claim-jobs.js';
import { completeJob, completeJobs } from './complete-job.js';
import { enqueueJob } from './enqueue-job.js';
import { failJob } from './fail-job.js';
import { readTickets } from './read-tickets.js';
import { renewLease, renewLeases } from './renew-lease.js';

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

  it('a batch completes in one statement, fenced and ticket-compared per job', async () => {
    const [kept, moved, gone, lost, tomb] = await seed(5);
    const jobs = await claim(t.db, 'w', 5, 300);
    const byId = Object.fromEntries(jobs.map((j) => [j.objectId, j]));
    // `moved` is enqueued again during the work; `lost`'s lease runs out and another worker takes it.
    await asPlatform(t.db, (trx) =>
      enqueueJob(trx, { kind: 'Customer', objectId: moved!, tenantId: null, generation: 2 }),
    );
    await new Promise((r) => setTimeout(r, 400));
    await t.owner.query(
      `update reconcile_jobs set locked_until = now() + interval '10 seconds' where object_id <> $1`,
      [lost],
    );
    const [taken] = await claim(other, 'alive', 1);
    expect(taken?.objectId).toBe(lost);
    await asPlatform(t.db, (trx) =>
      enqueueJob(trx, { kind: 'Customer', objectId: tomb!, tenantId: null, generation: 2 }),
    );
    await asPlatform(t.db, (trx) =>
      completeJobs(
        trx,
        [kept, moved, gone, lost, tomb].map((id) => ({
          job: byId[id!]!,
          finalised: id === gone || id === tomb,
        })),
        { workerId: 'w', resyncMs: 60_000 },
      ),
    );
    const rows = await t.owner.query(
      'select object_id, run_after <= now() as due, locked_by from reconcile_jobs',
    );
    const after = Object.fromEntries(rows.rows.map((r) => [r.object_id, r]));
    expect(after[kept!]).toMatchObject({ due: false, locked_by: null });
    expect(after[moved!]).toMatchObject({ due: true, locked_by: null });
    expect(after[gone!]).toBeUndefined();
    // Finalised, but enqueued again meanwhile: the job stays, due now.
    expect(after[tomb!]).toMatchObject({ due: true, locked_by: null });
    // The lost lease is fenced off: the new holder keeps it.
    expect(after[lost!]).toMatchObject({ locked_by: 'alive' });
  });

  it('renewing a batch skips a row another transaction holds rather than wait for it, and counts the leases held', async () => {
    const ids = await seed(3);
    const jobs = await claim(t.db, 'w', 3, 2_000);
    const holder = await t.owner.connect();
    try {
      await holder.query('begin');
      await holder.query('update reconcile_jobs set updated_at = now() where object_id = $1', [ids[0]]);
      const held = await asPlatform(t.db, (trx) =>
        renewLeases(trx, jobs, { workerId: 'w', leaseMs: 60_000 }),
      );
      expect(held).toBe(3);
      await holder.query('commit');
    } finally {
      holder.release();
    }
    const r = await t.owner.query(
      `select object_id, locked_until > now() + interval '30 seconds' as renewed from reconcile_jobs`,
    );
    const renewed = Object.fromEntries(r.rows.map((x) => [x.object_id, x.renewed]));
    expect(renewed).toEqual({ [ids[0]!]: false, [ids[1]!]: true, [ids[2]!]: true });
    expect(await asPlatform(t.db, (trx) => renewLeases(trx, jobs, { workerId: 'x', leaseMs: 60_000 }))).toBe(
      0,
    );
  });

  it('a ticket read again before the work makes an earlier enqueue seen; a later one still keeps the job due', async () => {
    const [a, b] = await seed(2);
    const jobs = await claim(t.db, 'w', 2);
    for (const id of [a, b])
      await asPlatform(t.db, (trx) =>
        enqueueJob(trx, { kind: 'Customer', objectId: id!, tenantId: null, generation: 2 }),
      );
    await asPlatform(t.db, (trx) => readTickets(trx, jobs, { workerId: 'w' }));
    await asPlatform(t.db, (trx) =>
      enqueueJob(trx, { kind: 'Customer', objectId: b!, tenantId: null, generation: 3 }),
    );
    await asPlatform(t.db, (trx) =>
      completeJobs(
        trx,
        jobs.map((job) => ({ job, finalised: false })),
        { workerId: 'w', resyncMs: 60_000 },
      ),
    );
    const r = await t.owner.query('select object_id, run_after <= now() as due from reconcile_jobs');
    const due = Object.fromEntries(r.rows.map((x) => [x.object_id, x.due]));
    expect(due).toEqual({ [a!]: false, [b!]: true });
  });
});
