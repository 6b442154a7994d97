import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, sequenceAudit } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { asPlatform, asTenant } from '../db/database.js';
import { type AuditEntry, appendAudit } from './append-audit.js';
import { AuditSequencer, integrateAudit, integrateAuditBatch } from './audit-sequencer.js';
import { AuditSigner } from './checkpoint-signer.js';
import { verifyAudit } from './verify-audit.js';

let t: TestDatabase;
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const keys = [signer.publicKeyPem];

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

function entry(tenantId: string | null, n = 0): AuditEntry {
  const id = randomUUID();
  return {
    tenantId,
    appId: 'test',
    actor: { principal: 'writer', kind: 'service' },
    sessionId: null,
    action: 'tenant.update',
    target: { kind: 'Tenant', id: tenantId, slug: null },
    after: { n },
    outcome: 'success',
    requestId: id,
    correlationId: id,
  };
}

const write = (tenant: string | null, n = 0) => asPlatform(t.db, (trx) => appendAudit(trx, entry(tenant, n)));
const unsequenced = async (): Promise<number> =>
  (
    await t.owner.query(
      'select count(*)::int as n from audit_records a where not exists (select from audit_positions p where p.record_id = a.id)',
    )
  ).rows[0].n;

/** The log verifies, and each tenant's chain holds its `records` entries from seq 1, each once. */
async function expectWholeChains(tenants: string[], records: number): Promise<void> {
  const v = await verifyAudit(t.db, { publicKeys: keys });
  expect(v.problems).toEqual([]);
  for (const tenant of tenants)
    expect(v.chains.find((c) => c.chain === tenant)).toMatchObject({
      records,
      firstSeq: 1,
      lastSeq: records,
    });
}

describe('the audit sequencer', () => {
  it('integrates entries committed by parallel writers into gap-free chains, each exactly once, with two sequencers running', async () => {
    const tenants = [randomUUID(), randomUUID()];
    const sequencers = [
      new AuditSequencer(t.db, { intervalMs: 20 }),
      new AuditSequencer(t.db, { intervalMs: 20 }),
    ];
    for (const s of sequencers) s.start();
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; i < 25; i++) await write(tenants[w % 2]!, i);
      }),
    );
    const deadline = Date.now() + 5000;
    while ((await unsequenced()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of sequencers) await s.stop();
    expect(await unsequenced()).toBe(0);
    // Both ran; the lock made their batches one at a time, so nothing was integrated twice.
    expect(sequencers[0]!.integrated + sequencers[1]!.integrated).toBe(200);
    await expectWholeChains(tenants, 100);
  });

  it('keeps each part integrating during writes while sequencers stop mid-backlog and others take over, each entry once', async () => {
    const tenants = Array.from({ length: 6 }, () => randomUUID());
    // Small batches: every part has a backlog, so its loop runs pass after pass without sleeping.
    const opts = { intervalMs: 60_000, batchSize: 7 };
    const first = new AuditSequencer(t.db, opts);
    first.start();
    const writers = Promise.all(
      tenants.map(async (tenant, w) => {
        for (let i = 0; i < 30; i++) await write(tenant, w * 100 + i);
      }),
    );
    // Stopped while writers still write: stop() does not wait out the long interval, and whatever
    // batch was in flight either committed whole or left its entries queued.
    await new Promise((r) => setTimeout(r, 150));
    const stopped = Date.now();
    await first.stop();
    expect(Date.now() - stopped).toBeLessThan(10_000);
    const second = new AuditSequencer(t.db, opts);
    const third = new AuditSequencer(t.db, opts);
    second.start();
    third.start();
    await writers;
    // Entries written after a part's pass began wait for its next pass (up to the interval here):
    // the last pass runs with the loops still going, so the locks are contended to the end.
    const catchUp = new AuditSequencer(t.db, opts);
    while ((await unsequenced()) > 0) await catchUp.tick();
    await Promise.all([second.stop(), third.stop()]);
    expect(first.integrated + second.integrated + third.integrated + catchUp.integrated).toBe(180);
    await expectWholeChains(tenants, 30);
  });

  it('integrates within a second of the commit', async () => {
    const sequencer = new AuditSequencer(t.db, { intervalMs: 200 });
    sequencer.start();
    try {
      const { id } = await write(null);
      const t0 = Date.now();
      let seq: number | null = null;
      while (seq === null && Date.now() - t0 < 3000) {
        await new Promise((r) => setTimeout(r, 10));
        seq =
          (await t.owner.query('select seq from audit_positions where record_id = $1', [id])).rows[0]?.seq ??
          null;
      }
      expect(seq).not.toBeNull();
      expect(Date.now() - t0).toBeLessThan(1000);
    } finally {
      await sequencer.stop();
    }
  });

  it('loses nothing when the sequencer dies mid-batch: another takes over', async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 2);
    await write(tenant, 3);
    await write(tenant, 4);
    // A sequencer (its own connection) holds the lock and has half-written a batch when it dies.
    const dying = new pg.Client({ connectionString: t.ownerUrl });
    await dying.connect();
    dying.on('error', () => undefined);
    await dying.query('begin');
    await dying.query(`select pg_advisory_xact_lock(${0x74656e73})`);
    await dying.query(
      `with entry as (delete from audit_queue q using audit_records a
         where a.id = q.record_id and a.chain = $1 and (a.after->>'n')::int = 3 returning a.id)
       insert into audit_positions (chain, seq, record_id, prev_hash, hash)
       select $1, 3, id, repeat('0', 64), repeat('1', 64) from entry`,
      [tenant],
    );
    // Meanwhile no other process sequences.
    expect(await integrateAuditBatch(t.db)).toBeNull();
    const pid = (await dying.query('select pg_backend_pid() as pid')).rows[0].pid;
    await t.owner.query('select pg_terminate_backend($1)', [pid]);
    await dying.end().catch(() => undefined);
    // Its half batch rolled back; the next sequencer integrates both entries.
    await sequenceAudit(t.db);
    const v = await verifyAudit(t.db, { tenant, publicKeys: keys });
    expect(v.problems).toEqual([]);
    expect(v.chains[0]).toMatchObject({ records: 4, lastSeq: 4 });
    expect(v.unsequenced.records).toBe(0);
  });

  it('counts entries not yet sequenced, and verifies the sequenced tree meanwhile', async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 3);
    await write(tenant);
    await write(tenant);
    const v = await verifyAudit(t.db, { tenant, publicKeys: keys });
    expect(v.ok).toBe(true);
    expect(v.chains[0]).toMatchObject({ records: 3, lastSeq: 3 });
    expect(v.unsequenced.records).toBe(2);
    expect(v.unsequenced.oldest).toMatch(/^\d{4}-\d\d-\d\dT/);
    await sequenceAudit(t.db);
    expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).chains[0]).toMatchObject({ records: 5 });
  });

  it('refuses batches that do not continue the chain, re-sequencing, a tenant scope, and any change of content', async () => {
    const tenant = randomUUID();
    const [first] = await appendMany(t.db, tenant, 1);
    const { id } = await write(tenant);
    const call = (
      scope: 'platform' | 'tenant',
      ids: string[],
      seqs: number[],
      prevs: string[],
      hashes: string[],
    ) => {
      const run = (trx: Parameters<Parameters<typeof asPlatform>[1]>[0]) =>
        sql`select tenantry_audit_sequence(${ids}::uuid[], ${seqs}::bigint[], ${prevs}::text[], ${hashes}::text[])`.execute(
          trx,
        );
      return scope === 'platform' ? asPlatform(t.db, run) : asTenant(t.db, tenant, run);
    };
    const h = 'a'.repeat(64);
    // A gap (seq 3 after head 1), a wrong link, the already sequenced first record again.
    await expect(call('platform', [id], [3], [first!.hash], [h])).rejects.toThrow(/does not continue chain/);
    await expect(call('platform', [id], [2], [h], [h])).rejects.toThrow(/does not continue chain/);
    await expect(call('platform', [first!.id], [2], [first!.hash], [h])).rejects.toThrow(/0 of 1 entries/);
    // Only the platform role sequences: the tenant role may not even call the function.
    await expect(call('tenant', [id], [2], [first!.hash], [h])).rejects.toThrow(/permission denied/);
    // The application role cannot write records, positions or heads directly.
    await expect(
      asPlatform(t.db, (trx) =>
        sql`update audit_records set action = 'forged' where id = ${id}`.execute(trx),
      ),
    ).rejects.toThrow(/permission denied/);
    await expect(
      asPlatform(t.db, (trx) =>
        sql`insert into audit_positions (chain, seq, record_id, prev_hash, hash)
          values (${tenant}, 2, ${id}, ${first!.hash}, ${h})`.execute(trx),
      ),
    ).rejects.toThrow(/permission denied/);
    await expect(
      asPlatform(t.db, (trx) => sql`delete from audit_queue where record_id = ${id}`.execute(trx)),
    ).rejects.toThrow(/permission denied/);
    await expect(
      asPlatform(t.db, (trx) =>
        sql`update audit_chain_heads set seq = 9 where chain = ${tenant}`.execute(trx),
      ),
    ).rejects.toThrow(/permission denied/);
    // Even the owner, with the old sequencing flag on, cannot change a record's content.
    const c = await t.owner.connect();
    try {
      await c.query('begin');
      await c.query("select set_config('tenantry.audit_sequencing', 'on', true)");
      await expect(c.query(`update audit_records set action = 'forged' where id = $1`, [id])).rejects.toThrow(
        /append-only/,
      );
      await c.query('rollback');
    } finally {
      c.release();
    }
    await sequenceAudit(t.db);
    expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).chains[0]).toMatchObject({
      records: 2,
      ok: true,
    });
  });

  it('integrates in batches of the given size until caught up', async () => {
    const tenant = randomUUID();
    for (let i = 0; i < 7; i++) await write(tenant, i);
    const batches = await integrateAudit(t.db, 3);
    expect(batches?.map((b) => b.records)).toEqual([3, 3, 1]);
    expect(batches?.at(-1)?.heads.get(tenant)).toMatchObject({ seq: 7 });
  });

  it('is not stopped by a queued entry that a forger gave a position: it stays queued, counted, and the position is caught', async () => {
    const forged = randomUUID();
    const { id } = await write(forged);
    // As the owner: a position for the queued entry, bypassing the sequencer.
    await t.owner.query(
      `insert into audit_positions (chain, seq, record_id, prev_hash, hash)
       values ($1, 1, $2, repeat('0', 64), repeat('1', 64))`,
      [forged, id],
    );
    const other = randomUUID();
    await write(other);
    await write(other);
    await sequenceAudit(t.db);
    expect((await verifyAudit(t.db, { tenant: other, publicKeys: keys })).chains[0]).toMatchObject({
      records: 2,
      ok: true,
    });
    const v = await verifyAudit(t.db, { tenant: forged, publicKeys: keys });
    expect(v.unsequenced.records).toBe(1);
    expect(v.firstProblem).toMatchObject({ code: 'record.altered', seq: 1, recordId: id });
  });
});
