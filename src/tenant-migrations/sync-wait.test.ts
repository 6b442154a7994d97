import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { skipReason } from '../../test/infra/engines.js';
import { ProviderError } from '../providers/provider.js';
import { IsolationDataPlane } from './isolation-dataplane.js';
import type { ResourcePlan } from './migration-records.js';
import { databaseUrl, walLevel, withClient } from './pg-copy.js';

/**
 * The wait of a pool → silo migration (IsolationDataPlane.waitSynced, in its 10 s turns as the
 * workflow asks it) on a real PostgreSQL whose subscription cannot finish its initial copy: a row
 * already in the target collides with the source's, so PostgreSQL restarts the table-sync worker
 * every 5 s and says why in its log only. The wait fails as a retryable SubscriptionFailing that
 * names the subscription, its failures and where to look, rather than waiting out the step.
 */
let t: TestDatabase;
const run = randomBytes(3).toString('hex');
const role = `tenantry_sw_${run}`;
const source = `tenantry_sw_${run}_pool`;
const target = `tenantry_sw_${run}_silo`;
const schema = `t_sw_${run}`;
let admin: string;
let logical = false;
let dp: IsolationDataPlane;

beforeAll(async () => {
  t = await createTestDatabase();
  admin = databaseUrl(t.ownerUrl, 'postgres');
  // Only the replication steps are used: they reach the data-plane server, no provider.
  dp = new IsolationDataPlane({
    dataplaneUrl: admin,
    provider: () => {
      throw new Error('no provider in this test');
    },
  });
  await withClient(admin, async (c) => {
    logical = (await walLevel(c)) === 'logical';
    await c.query(`create role ${role} nologin`);
    await c.query(`create database ${source}`);
    await c.query(`create database ${target}`);
  });
  await withClient(databaseUrl(t.ownerUrl, source), async (c) => {
    await c.query(`create schema ${schema} authorization ${role}`);
    await c.query(`create table ${schema}.orders (id int primary key, note text)`);
    await c.query(`alter table ${schema}.orders owner to ${role}`);
    await c.query(`insert into ${schema}.orders select g, 'n' || g from generate_series(1, 100) g`);
  });
});

afterAll(async () => {
  if (admin) {
    await dp.stopReplication({ resources: [plan] }).catch(() => undefined);
    await withClient(admin, async (c) => {
      await c.query(`drop database if exists ${target} with (force)`);
      await c.query(`drop database if exists ${source} with (force)`);
      await c.query(`drop role if exists ${role}`);
    });
  }
  await t?.destroy();
});

const plan: ResourcePlan = {
  resourceId: `sw-${run}`,
  scopeSlug: `sw-${run}`,
  source: { database: source, schema, role },
  target: { database: target, schema: 'public', role },
  targetKey: `sw-${run}-target`,
  sourceKey: `sw-${run}-source`,
  replication: `tenantry_m_sw${run}_0`,
  tables: ['orders'],
};

describe('the isolation migration waiting for its subscription', () => {
  it('fails as SubscriptionFailing, saying why, when the table sync keeps failing', {
    timeout: 150_000,
  }, async (ctx) => {
    if (
      skipReason(
        'the subscription wait test',
        logical ? undefined : 'the test PostgreSQL is not at wal_level=logical',
      )
    )
      ctx.skip();
    await dp.copySchema({ resources: [plan] });
    // Already in the target: the initial copy of `orders` breaks its primary key, every attempt.
    await withClient(databaseUrl(t.ownerUrl, target), (c) =>
      c.query(`insert into ${schema}.orders values (1, 'in the way')`),
    );
    await dp.startReplication({ resources: [plan] });
    const t0 = Date.now();
    let errorsSeen: Record<string, number> | undefined;
    const failure = await (async () => {
      for (;;) {
        const r = await dp.waitSynced({ resources: [plan], waitMs: 10_000, errorsSeen });
        expect(r.synced).toBe(false);
        errorsSeen = r.errorsSeen;
        if (Date.now() - t0 > 120_000) throw new Error('still waiting after 2 minutes');
      }
    })().catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(ProviderError);
    expect(failure).toMatchObject({ reason: 'SubscriptionFailing', retryable: true });
    expect((failure as Error).message).toMatch(
      new RegExp(
        `^the subscription ${plan.replication} in database ${target} keeps failing \\(\\d+ table sync and \\d+ apply errors\\): see the log of the data-plane PostgreSQL$`,
      ),
    );
    // The failures were counted across the turns (each 10 s turn sees about two).
    expect(Date.now() - t0).toBeGreaterThan(10_000);
  });
});
