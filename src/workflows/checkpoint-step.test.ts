import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { asPlatform, createDb, type Db } from '../db/database.js';
import { checkpointStep, LeaseLost, onDb, type StepCheckpoint } from './checkpoint-step.js';
import { claimWorkflows } from './claim-workflows.js';
import { engineSession } from './engine-session.js';
import { startWorkflow } from './start-workflow.js';

// The step checkpoint's fence (issue 24 made it a row lock where it was an update): a holder whose
// lease was taken over writes nothing, also when the takeover commits while its checkpoint waits;
// a step completes once; attempts left by failed attempts are reset by the next checkpoint.
let t: TestDatabase;
let db: Db;
beforeAll(async () => {
  t = await createTestDatabase();
  db = createDb(t.appUrl, 4, { platformUrl: t.platformUrl });
});
afterAll(async () => {
  await db.destroy();
  await t.destroy();
});

const step = (
  w: { id: string; tenantId: string },
  workerId: string,
  position: number,
  extra: Partial<StepCheckpoint> = {},
): StepCheckpoint => ({
  workflowId: w.id,
  tenantId: w.tenantId,
  workerId,
  position,
  name: `step-${position}`,
  state: 'Completed',
  attempts: 1,
  output: { position },
  error: null,
  startedAt: new Date(),
  correlationId: 'c',
  reset: false,
  ...extra,
});

/** A Running workflow of a tenant of its own, leased to `workerId`. */
async function claimed(workerId: string) {
  const w = { id: randomUUID(), tenantId: randomUUID() };
  await asPlatform(db, (trx) =>
    startWorkflow(trx, {
      id: w.id,
      tenantId: w.tenantId,
      type: 'test',
      input: {},
      actor: { principal: 'test', kind: 'system' },
      requestId: 'r',
      correlationId: 'c',
    }),
  );
  await t.owner.query(
    `update workflows set state = 'Running', locked_by = $2, locked_until = now() + interval '1 hour' where id = $1`,
    [w.id, workerId],
  );
  return w;
}

/** What a checkpoint left: the workflow's step rows and step events. */
async function written(id: string) {
  const steps = await t.owner.query(
    'select position, state, output from workflow_steps where workflow_id = $1',
    [id],
  );
  const events = await t.owner.query(
    `select data->>'position' as position from outbox_events where subject = $1 and type like '%step_completed%'`,
    [`workflows/${id}`],
  );
  return { steps: steps.rows, events: events.rows.map((e) => Number(e.position)) };
}

describe('step checkpoint', () => {
  it('records the step and its event, and returns a cancel requested meanwhile', async () => {
    const w = await claimed('a');
    await asPlatform(db, (trx) => checkpointStep(onDb(trx), step(w, 'a', 0)));
    await t.owner.query(
      `update workflows set cancel_requested = '{"principal":"op","kind":"user"}' where id = $1`,
      [w.id],
    );
    const kept = await asPlatform(db, (trx) => checkpointStep(onDb(trx), step(w, 'a', 1)));
    expect(kept.cancelRequested).toEqual({ principal: 'op', kind: 'user' });
    expect(await written(w.id)).toEqual({
      steps: [
        { position: 0, state: 'Completed', output: { position: 0 } },
        { position: 1, state: 'Completed', output: { position: 1 } },
      ],
      events: [0, 1],
    });
  });

  it('a holder whose lease was taken over writes nothing (LeaseLost)', async () => {
    const w = await claimed('a');
    // Its lease ran out and another engine claimed the workflow.
    await t.owner.query(`update workflows set locked_until = now() - interval '1 second' where id = $1`, [
      w.id,
    ]);
    const taken = await asPlatform(db, (trx) =>
      claimWorkflows(trx, { workerId: 'b', limit: 10, leaseMs: 60_000 }),
    );
    expect(taken.map((r) => r.id)).toContain(w.id);
    for (const reset of [false, true])
      await expect(
        asPlatform(db, (trx) => checkpointStep(onDb(trx), step(w, 'a', 0, { reset }))),
      ).rejects.toThrow(LeaseLost);
    expect(await written(w.id)).toEqual({ steps: [], events: [] });
  });

  it('a takeover that commits while the checkpoint waits on it wins: the checkpoint writes nothing', async () => {
    const w = await claimed('a');
    const session = engineSession(db, 2);
    if (!session) throw new Error('no engine session');
    // Another engine's claim, in flight: the row is updated (lease expired, now held by b), not committed.
    const b = new pg.Client({ connectionString: t.platformUrl, options: '-c tenantry.platform=on' });
    await b.connect();
    try {
      await b.query('begin');
      await b.query(
        `update workflows set locked_by = 'b', locked_until = now() + interval '1 hour' where id = $1`,
        [w.id],
      );
      const checkpoint = checkpointStep(session.prepared, step(w, 'a', 0)).then(
        () => 'kept',
        (err) => (err instanceof LeaseLost ? 'lost' : String(err)),
      );
      // The checkpoint waits for the claim's row lock.
      await new Promise((r) => setTimeout(r, 300));
      const waiting = await t.owner.query(
        `select count(*)::int n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
      );
      expect(waiting.rows[0].n).toBe(1);
      await b.query('commit');
      expect(await checkpoint).toBe('lost');
    } finally {
      await b.end();
      await session.destroy();
    }
    expect(await written(w.id)).toEqual({ steps: [], events: [] });
  });

  it('a step completes once: a second completion of its position is refused, the first output kept', async () => {
    const w = await claimed('a');
    await asPlatform(db, (trx) => checkpointStep(onDb(trx), step(w, 'a', 0)));
    await expect(
      asPlatform(db, (trx) => checkpointStep(onDb(trx), step(w, 'a', 0, { output: { other: true } }))),
    ).rejects.toThrow(/workflow_steps_pkey/);
    expect(await written(w.id)).toEqual({
      steps: [{ position: 0, state: 'Completed', output: { position: 0 } }],
      events: [0],
    });
  });

  it('resets attempts and the error of failed attempts when asked, and leaves the row unwritten otherwise', async () => {
    const w = await claimed('a');
    const row = async () =>
      (await t.owner.query('select attempts, error, xmin::text from workflows where id = $1', [w.id]))
        .rows[0];
    await t.owner.query(`update workflows set attempts = 2, error = 'broker unreachable' where id = $1`, [
      w.id,
    ]);
    await asPlatform(db, (trx) => checkpointStep(onDb(trx), step(w, 'a', 0, { reset: true })));
    const after = await row();
    expect(after).toMatchObject({ attempts: 0, error: null });
    await asPlatform(db, (trx) => checkpointStep(onDb(trx), step(w, 'a', 1)));
    // Locked, not updated: the same row version.
    expect((await row()).xmin).toBe(after.xmin);
  });
});
