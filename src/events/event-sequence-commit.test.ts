import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedTenants } from '../../test/helpers/event-fixtures.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform } from '../db/database.js';
import type { RegistryService } from '../registry/registry.service.js';
import { appendEvent } from './append-event.js';

/**
 * Issue 17: events are numbered at commit (migration 0045), so one tenant's writers overlap up to
 * their commits. What consumers rely on still holds: a reader that follows a stream by "after the
 * last number I saw" never sees a number before every smaller one is visible (commit order, no
 * skipped event), and transactions writing to several streams in opposite orders do not deadlock.
 */
let t: TestDatabase;
let registry: RegistryService;
const ctx = systemContext('test-operator');

beforeAll(async () => {
  t = await createTestDatabase();
  registry = createRegistry(t.db, t.config);
});
afterAll(async () => t?.destroy());

const deadlocks = async () => {
  const r = await t.owner.query<{ n: string }>(
    'select deadlocks::text as n from pg_stat_database where datname = current_database()',
  );
  return Number(r.rows[0]?.n ?? 0);
};

describe('event numbers assigned at commit', () => {
  it('a reader following one stream sees its numbers in order, none skipped, under 8 overlapping writers', async () => {
    const [a] = await seedTenants(registry, ctx, 'seqfollow', ['a']);
    const stream = a!.uuid;
    let writing = true;
    const seen: number[] = [];
    const next = async (after: number) => {
      const r = await t.owner.query<{ seq: string }>(
        'select seq from outbox_events where stream = $1 and seq > $2 order by seq',
        [stream, after],
      );
      return r.rows.map((row) => Number(row.seq));
    };
    const start = Number(
      (
        await t.owner.query('select coalesce(max(seq), 0) as m from outbox_events where stream = $1', [
          stream,
        ])
      ).rows[0].m,
    );
    let last = start;
    const follow = async () => {
      const batch = await next(last);
      seen.push(...batch);
      last = batch.at(-1) ?? last;
    };
    const reader = (async () => {
      while (writing) await follow();
    })();
    let committed = 0;
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; i < 30; i++) {
          try {
            await asPlatform(t.db, async (trx) => {
              await appendEvent(trx, {
                tenantId: stream,
                name: 'tenant.updated',
                subject: `tenants/${stream}`,
                data: { w, i },
                correlationId: `f${w}-${i}`,
              });
              await new Promise((r) => setTimeout(r, Math.random() * 3));
              if ((w + i) % 4 === 0) throw new Error('rollback');
            });
            committed++;
          } catch (err) {
            if ((err as Error).message !== 'rollback') throw err;
          }
        }
      }),
    );
    writing = false;
    await reader;
    await follow();
    // Every batch the reader got continued exactly where it had stopped: nothing skipped, in order.
    expect(seen).toEqual(Array.from({ length: committed }, (_, i) => start + i + 1));
  });

  it('transactions appending to two streams in opposite orders commit without a deadlock, each numbered', async () => {
    const [x, y] = await seedTenants(registry, ctx, 'seqcross', ['x', 'y']);
    const before = await deadlocks();
    const count = async (s: string) =>
      Number(
        (await t.owner.query('select count(*) as n from outbox_events where stream = $1', [s])).rows[0].n,
      );
    const [bx, by] = [await count(x!.uuid), await count(y!.uuid)];
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        const order = w % 2 === 0 ? [x!.uuid, y!.uuid] : [y!.uuid, x!.uuid];
        for (let i = 0; i < 20; i++)
          await asPlatform(t.db, async (trx) => {
            for (const s of order)
              await appendEvent(trx, {
                tenantId: s,
                name: 'tenant.updated',
                subject: `tenants/${s}`,
                data: { w, i },
                correlationId: `c${w}-${i}`,
              });
          });
      }),
    );
    expect(await deadlocks()).toBe(before);
    for (const [s, b] of [
      [x!.uuid, bx],
      [y!.uuid, by],
    ] as const) {
      const r = await t.owner.query<{ seq: string }>(
        'select seq from outbox_events where stream = $1 order by seq',
        [s],
      );
      expect(r.rows.map((row) => Number(row.seq))).toEqual(Array.from({ length: b + 160 }, (_, i) => i + 1));
    }
  });

  it('fans every event out to the endpoints that want it, with its number, one event or many (migration 0067)', async () => {
    const [x, y] = await seedTenants(registry, ctx, 'seqfan', ['x', 'y']);
    const endpoint = (slug: string, tenant: string | null, spec: object) =>
      t.owner.query<{ id: string }>(
        `insert into webhook_endpoints (id, tenant_id, name, slug, spec)
         values (gen_random_uuid(), $1, $2, $2, $3) returning id`,
        [tenant, slug, JSON.stringify(spec)],
      );
    const all = (await endpoint('fan-all', null, {})).rows[0]!.id;
    const xOnly = (await endpoint('fan-x', x!.uuid, {})).rows[0]!.id;
    const suspended = (
      await endpoint('fan-suspended', null, { eventTypes: ['dev.tenantry.tenant.suspended.v1'] })
    ).rows[0]!.id;
    const append = (
      trx: Parameters<typeof appendEvent>[0],
      s: string,
      name: 'tenant.updated' | 'tenant.suspended',
    ) => appendEvent(trx, { tenantId: s, name, subject: `tenants/${s}`, data: {}, correlationId: 'fan' });
    const one = await asPlatform(t.db, (trx) => append(trx, y!.uuid, 'tenant.updated'));
    const many = await asPlatform(t.db, async (trx) => [
      await append(trx, y!.uuid, 'tenant.suspended'),
      await append(trx, x!.uuid, 'tenant.updated'),
      await append(trx, x!.uuid, 'tenant.suspended'),
    ]);
    const r = await t.owner.query<{ event: string; endpoint: string; fit: boolean }>(
      `select d.event_id as event, d.endpoint_id as endpoint, d.stream = o.stream and d.seq = o.seq as fit
       from webhook_deliveries d join outbox_events o on o.id = d.event_id
       where d.event_id = any($1::uuid[]) order by o.stream, o.seq, d.endpoint_id`,
      [[one, ...many]],
    );
    expect(r.rows.every((d) => d.fit)).toBe(true);
    const got = r.rows.map((d) => `${d.event} ${d.endpoint}`).sort();
    const want = [
      [one, all],
      [many[0], all],
      [many[0], suspended],
      [many[1], all],
      [many[1], xOnly],
      [many[2], all],
      [many[2], xOnly],
      [many[2], suspended],
    ].map(([e, d]) => `${e} ${d}`);
    expect(got).toEqual(want.sort());
  });
});
