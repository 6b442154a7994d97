import { CloudEvent } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedTenants } from '../../test/helpers/event-fixtures.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, asTenant } from '../db/database.js';
import type { RegistryService } from '../registry/registry.service.js';
import { appendEvent } from './append-event.js';
import { EventsService } from './events.service.js';

let t: TestDatabase;
let registry: RegistryService;
let events: EventsService;
const ctx = systemContext('test-operator');

beforeAll(async () => {
  t = await createTestDatabase();
  registry = createRegistry(t.db, t.config);
  events = new EventsService(t.db, t.config);
});
afterAll(async () => t?.destroy());

async function sequences(stream: string): Promise<number[]> {
  const r = await t.owner.query('select seq from outbox_events where stream = $1 order by seq', [stream]);
  return r.rows.map((row) => Number(row.seq));
}
const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
/** What a lifecycle transition writes to the tenant's stream once its workflow has run to the end. */
const transitionEvents = (event: string, steps: number) => [
  `dev.tenantry.tenant.${event}.v1`,
  'dev.tenantry.workflow.started.v1',
  ...Array.from({ length: steps }, () => 'dev.tenantry.workflow.step_completed.v1'),
  'dev.tenantry.workflow.succeeded.v1',
];
const SUSPENDED = transitionEvents('suspended', 5);
const RESUMED = transitionEvents('resumed', 4);

/** `writers` concurrent writers, each appending `each` events to its streams; about a third roll back. */
async function race(streams: (string | null)[], writers: number, each: number) {
  const committed = new Map<string, number>();
  await Promise.all(
    range(writers).map(async (w) => {
      for (let i = 0; i < each; i++) {
        const tenantId = streams[(w + i) % streams.length]!;
        const rollback = (w * 7 + i * 13) % 3 === 0;
        try {
          await asPlatform(t.db, async (trx) => {
            await appendEvent(trx, {
              tenantId,
              name: 'tenant.updated',
              subject: `tenants/${tenantId ?? 'platform'}`,
              data: { writer: w, i },
              correlationId: `w${w}-${i}`,
            });
            // Stay in the transaction a little so writers overlap.
            await new Promise((r) => setTimeout(r, Math.random() * 3));
            if (rollback) throw new Error('rollback');
          });
          const key = tenantId ?? 'platform';
          committed.set(key, (committed.get(key) ?? 0) + 1);
        } catch (err) {
          if ((err as Error).message !== 'rollback') throw err;
        }
      }
    }),
  );
  return committed;
}

describe('per-tenant event sequence', () => {
  it('is gap-free with 8 concurrent writers and rollbacks on one tenant', async () => {
    const [a] = await seedTenants(registry, ctx, 'seqone', ['a']);
    const before = (await sequences(a!.uuid)).length;
    const committed = await race([a!.uuid], 8, 25);
    expect(await sequences(a!.uuid)).toEqual(range(before + committed.get(a!.uuid)!));
  });

  it('is gap-free per stream with 8 concurrent writers over several tenants and the platform', async () => {
    const tenants = await seedTenants(registry, ctx, 'seqmany', ['x', 'y', 'z']);
    const streams = [...tenants.map((x) => x.uuid), null];
    const before = new Map<string, number>();
    for (const s of streams) before.set(s ?? 'platform', (await sequences(s ?? 'platform')).length);
    const committed = await race(streams, 8, 30);
    for (const s of streams) {
      const key = s ?? 'platform';
      expect(await sequences(key)).toEqual(range(before.get(key)! + (committed.get(key) ?? 0)));
    }
  });

  it('registry changes emit typed CloudEvents with sequence, tenant and previous/new state', async () => {
    const [tenant] = await seedTenants(registry, ctx, 'cevents', ['c']);
    // Each transition starts a lifecycle workflow; the next one waits for it to end (else 409).
    await registry.transition(ctx, tenant!.slug, 'suspend');
    await settleWorkflows(t);
    await registry.transition(ctx, tenant!.slug, 'resume');
    const page = await events.read(ctx, { stream: tenant!.uuid }, undefined, 100);
    const types = page.entries.map((e) => e.event.type);
    // The resume's workflow has not run yet (no engine here): its start is in, its steps are not.
    expect(types).toEqual([
      'dev.tenantry.tenant.created.v1',
      ...SUSPENDED,
      'dev.tenantry.tenant.resumed.v1',
      'dev.tenantry.workflow.started.v1',
    ]);
    const workflows = await t.owner.query('select id from workflows where tenant_id = $1', [tenant!.uuid]);
    const workflowSubjects = workflows.rows.map((w) => `workflows/${w.id}`);
    expect(workflowSubjects).toHaveLength(2);
    for (const [i, { event, cursor }] of page.entries.entries()) {
      const ce = new CloudEvent(event as never, true);
      expect(() => ce.validate()).not.toThrow();
      expect(ce.tenantid).toBe(tenant!.uuid);
      expect(event.sequence).toBe(String(i + 1).padStart(20, '0'));
      expect(cursor).toBe(event.sequence);
      expect(ce.source).toBe(t.config.source);
      // A workflow's progress events are about the workflow (one of this tenant's), the others about the tenant.
      if (event.type.startsWith('dev.tenantry.workflow.')) expect(workflowSubjects).toContain(ce.subject);
      else expect(ce.subject).toBe(`tenants/${tenant!.uuid}`);
    }
    const suspended = page.entries[1]!.event.data as {
      previous: { lifecycle: string };
      current: { lifecycle: string };
    };
    expect(suspended.previous.lifecycle).toBe('Active');
    expect(suspended.current.lifecycle).toBe('Suspended');
    // Platform objects (the customer) go to the platform stream, without tenantid.
    const platform = await events.read(ctx, { stream: 'platform' }, undefined, 1000);
    const customer = platform.entries.find((e) => e.event.subject.startsWith('customers/'))!.event;
    expect(customer.tenantid).toBeUndefined();
    expect(new CloudEvent(customer as never, true).type).toBe('dev.tenantry.customer.created.v1');
  });

  it('replay after N returns exactly the events after N, and the global cursor sees every stream once', async () => {
    const [tenant] = await seedTenants(registry, ctx, 'replay', ['r']);
    for (let i = 0; i < 6; i++) {
      await registry.transition(ctx, tenant!.slug, i % 2 === 0 ? 'suspend' : 'resume');
      await settleWorkflows(t);
    }
    const all = await events.read(ctx, { stream: tenant!.uuid }, undefined, 100);
    expect(all.entries.map((e) => e.event.type)).toEqual([
      'dev.tenantry.tenant.created.v1',
      ...SUSPENDED,
      ...RESUMED,
      ...SUSPENDED,
      ...RESUMED,
      ...SUSPENDED,
      ...RESUMED,
    ]);
    expect(all.entries.map((e) => Number(e.event.sequence))).toEqual(range(46));
    const after3 = await events.read(ctx, { stream: tenant!.uuid }, '3', 100);
    expect(after3.entries.map((e) => Number(e.event.sequence))).toEqual(range(46).slice(3));
    const paged: string[] = [];
    let cursor: string | undefined;
    for (;;) {
      const p = await events.read(ctx, { stream: null }, cursor, 7);
      paged.push(...p.entries.map((e) => e.event.id));
      if (p.entries.length === 0) break;
      cursor = p.cursor ?? undefined;
    }
    const total = await t.owner.query('select count(*)::int as n from outbox_events');
    expect(new Set(paged).size).toBe(total.rows[0].n);
    expect(paged).toHaveLength(total.rows[0].n);
  });

  it('a tenant reads only its own stream', async () => {
    const [a, b] = await seedTenants(registry, ctx, 'rls', ['a', 'b']);
    const own = await asTenant(t.db, a!.uuid, async () => undefined).then(() =>
      events.read(
        { ...ctx, scope: { kind: 'tenant', tenantId: a!.uuid } },
        { stream: b!.uuid },
        undefined,
        100,
      ),
    );
    expect(own.entries).toHaveLength(0);
    const mine = await events.read(
      { ...ctx, scope: { kind: 'tenant', tenantId: a!.uuid } },
      { stream: null },
      undefined,
      100,
    );
    expect(mine.entries.every((e) => e.event.tenantid === a!.uuid)).toBe(true);
    expect(mine.entries.length).toBeGreaterThan(0);
  });
});
