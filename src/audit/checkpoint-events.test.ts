import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, sequenceAudit, tamper } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform } from '../db/database.js';
import { publishedEventSchemas } from '../events/event-schemas.js';
import { EventsService } from '../events/events.service.js';
import { appendAudit } from './append-audit.js';
import { AuditCheckpointer } from './audit-checkpoint.js';
import { AuditSequencer } from './audit-sequencer.js';
import { chainCheckpoint, chainConsistency } from './audit-tree.js';
import { CheckpointPublisher, publishCheckpoints } from './checkpoint-events.js';
import { openCheckpoint } from './checkpoint-note.js';
import { AuditSigner } from './checkpoint-signer.js';
import { verifyConsistency } from './merkle.js';

let t: TestDatabase;
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

const TYPE = 'dev.tenantry.audit.checkpoint.v1';
async function checkpointEvents(): Promise<{ tenant_id: string | null; data: Record<string, unknown> }[]> {
  return (
    await t.owner.query('select tenant_id, data from outbox_events where type = $1 order by time, seq', [
      TYPE,
    ])
  ).rows;
}

describe('checkpoints published as events', () => {
  it("publishes each grown log's signed checkpoint in that log's own stream, with the root the records give", async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    await appendMany(t.db, a, 5);
    await appendMany(t.db, b, 3);
    await appendMany(t.db, null, 2);
    const published = await publishCheckpoints(t.db, signer);
    expect(published.map((p) => [p.chain, p.treeSize]).sort()).toEqual(
      [
        [a, 5],
        [b, 3],
        ['platform', 2],
      ].sort(),
    );
    const events = await checkpointEvents();
    expect(events).toHaveLength(3);
    for (const e of events) {
      const chain = e.data.chain as string;
      // A tenant's checkpoint goes to that tenant's stream only, and names no other tenant.
      expect(e.tenant_id).toBe(chain === 'platform' ? null : chain);
      for (const other of [a, b].filter((x) => x !== chain)) expect(JSON.stringify(e)).not.toContain(other);
      // Its signed note opens with the log's key, and its root is the one recomputed from the records.
      const note = openCheckpoint(e.data.checkpoint as string, [signer.publicKey]);
      const head = await chainCheckpoint(t.db, signer, chain);
      expect(note).toMatchObject({ origin: `tenantry/audit/${chain}`, size: head.size });
      expect(note.root.toString('hex')).toBe(head.rootHash);
      expect(e.data.rootHash).toBe(head.rootHash);
    }
    // Nothing grew: nothing is published again.
    expect(await publishCheckpoints(t.db, signer)).toEqual([]);

    // The log grows: the next checkpoint is consistent with the one a subscriber kept.
    await appendMany(t.db, a, 4);
    const [next] = await publishCheckpoints(t.db, signer, { chains: [a] });
    expect(next).toMatchObject({ chain: a, treeSize: 9 });
    const proof = await chainConsistency(t.db, signer, a, 5, 9);
    const old = events.find((e) => e.data.chain === a)!.data.rootHash as string;
    expect(
      verifyConsistency(
        5,
        9,
        proof.proof.map((h) => Buffer.from(h, 'hex')),
        Buffer.from(old, 'hex'),
        Buffer.from(next!.rootHash, 'hex'),
      ),
    ).toBe(true);
  });

  it('are valid CloudEvents of their published schema, readable in the tenant stream', async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 2);
    await publishCheckpoints(t.db, signer, { chains: [tenant] });
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats.default(ajv);
    const validate = ajv.compile(JSON.parse(publishedEventSchemas()[`${TYPE}.json`]!));
    const page = await new EventsService(t.db, t.config).read(
      systemContext('test-operator'),
      { stream: tenant },
      undefined,
      50,
    );
    const events = page.entries.map((e) => e.event).filter((e) => e.type === TYPE);
    expect(events).toHaveLength(1);
    expect(validate(events[0]), JSON.stringify(validate.errors)).toBe(true);
    expect(events[0]).toMatchObject({ tenantid: tenant, subject: `auditlogs/${tenant}` });
  });

  it('per batch at most once per log per interval; the scheduled checkpointer publishes what was skipped', async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 1);
    expect(await publishCheckpoints(t.db, signer, { chains: [tenant], minIntervalMs: 60_000 })).toHaveLength(
      1,
    );
    await appendMany(t.db, tenant, 1);
    expect(await publishCheckpoints(t.db, signer, { chains: [tenant], minIntervalMs: 60_000 })).toEqual([]);
    await new AuditCheckpointer(t.db, signer, 60_000).tick();
    const mine = (await checkpointEvents()).filter((e) => e.data.chain === tenant);
    expect(mine.map((e) => e.data.treeSize)).toEqual([1, 2]);
  });

  it('builds the tree of a log that predates it from its records', async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 6);
    // As after the migration: the chain has records but no compact range yet.
    await tamper(t.owner, `delete from audit_trees where chain = '${tenant}'`);
    await appendMany(t.db, tenant, 1);
    await sequenceAudit(t.db);
    const [p] = await publishCheckpoints(t.db, signer, { chains: [tenant] });
    expect(p).toMatchObject({
      treeSize: 7,
      rootHash: (await chainCheckpoint(t.db, signer, tenant)).rootHash,
    });
  });

  it('a running sequencer and publisher publish the checkpoint of a write within a second', async () => {
    const tenant = randomUUID();
    const publisher = new CheckpointPublisher(t.db, signer);
    const sequencer = new AuditSequencer(t.db, { intervalMs: 100, onBatch: (b) => publisher.add(b.trees) });
    publisher.start();
    sequencer.start();
    try {
      const t0 = Date.now();
      await asPlatform(t.db, (trx) =>
        appendAudit(trx, {
          tenantId: tenant,
          appId: 'test',
          actor: { principal: 'writer', kind: 'service' },
          sessionId: null,
          action: 'tenant.update',
          target: { kind: 'Tenant', id: tenant, slug: null },
          outcome: 'success',
          requestId: 'r',
          correlationId: 'c',
        }),
      );
      let mine: unknown[] = [];
      while (mine.length === 0 && Date.now() - t0 < 3000) {
        await new Promise((r) => setTimeout(r, 20));
        mine = (await checkpointEvents()).filter((e) => e.data.chain === tenant);
      }
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(mine).toEqual([
        expect.objectContaining({ tenant_id: tenant, data: expect.objectContaining({ treeSize: 1 }) }),
      ]);
    } finally {
      await sequencer.stop();
      await publisher.stop();
    }
  });
});

describe('the checkpoint publisher', () => {
  it('publishes the moved logs together, defers a log published within the interval, and publishes it at a later tick', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    await appendMany(t.db, a, 1);
    await appendMany(t.db, b, 1);
    const publisher = new CheckpointPublisher(t.db, signer, { minIntervalMs: 300 });
    publisher.add([a, b]);
    expect((await publisher.tick()).map((p) => [p.chain, p.treeSize]).sort()).toEqual(
      [
        [a, 1],
        [b, 1],
      ].sort(),
    );
    await appendMany(t.db, a, 1);
    publisher.add([a]);
    // Published 1 ms ago: kept for later, not dropped.
    expect(await publisher.tick()).toEqual([]);
    await new Promise((r) => setTimeout(r, 350));
    expect((await publisher.tick()).map((p) => [p.chain, p.treeSize])).toEqual([[a, 2]]);
    // Nothing left.
    expect(await publisher.tick()).toEqual([]);
    const mine = (await checkpointEvents()).filter((e) => e.data.chain === a);
    expect(mine.map((e) => e.data.treeSize)).toEqual([1, 2]);
  });

  it('signs each size once when publishers race, and never a smaller size after a larger one', async () => {
    const tenant = randomUUID();
    for (let round = 1; round <= 3; round++) {
      await appendMany(t.db, tenant, 2);
      const results = await Promise.all(Array.from({ length: 4 }, () => publishCheckpoints(t.db, signer)));
      expect(results.flat().filter((p) => p.chain === tenant)).toHaveLength(1);
    }
    const mine = (await checkpointEvents()).filter((e) => e.data.chain === tenant);
    expect(mine.map((e) => e.data.treeSize)).toEqual([2, 4, 6]);
  });
});
