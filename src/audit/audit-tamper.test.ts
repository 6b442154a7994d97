import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, recordAt, SEQUENCED, sequenceAudit, tamper } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { asPlatform } from '../db/database.js';
import { appendAudit } from './append-audit.js';
import { recordFromRow } from './audit.repository.js';
import { checkpointPayload, createAuditCheckpoint } from './audit-checkpoint.js';
import { hashAuditDocument } from './audit-hash.js';
import { AuditSigner } from './checkpoint-signer.js';
import { type VerifyAuditOptions, verifyAudit } from './verify-audit.js';

let t: TestDatabase;
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const keys = [signer.publicKeyPem];

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

/**
 * verifyAudit in this thread, and with two worker threads that each read and hash a part of the
 * chains on their own connection (as it runs over a large log): both must give the same report.
 */
async function verify(opts: VerifyAuditOptions) {
  const inline = await verifyAudit(t.db, { ...opts, workers: 0 });
  const parallel = await verifyAudit(t.db, { ...opts, workers: 2 });
  expect(parallel).toEqual(inline);
  return inline;
}

/** A fresh tenant chain of `n` records, covered by a checkpoint; verifies clean before tampering. */
async function chainOf(n: number) {
  const tenant = randomUUID();
  const records = await appendMany(t.db, tenant, n);
  const checkpoint = await createAuditCheckpoint(t.db, signer);
  const clean = await verify({ tenant, publicKeys: keys });
  expect(clean.problems).toEqual([]);
  expect(clean.chains[0]).toMatchObject({ chain: tenant, records: n, firstSeq: 1, lastSeq: n, ok: true });
  return { tenant, records, checkpoint };
}

const rec = (records: { id: string }[], seq: number) => records[seq - 1]!.id;

describe('audit chain tamper evidence', () => {
  it('is append-only: the application role may not change records, and the owner is stopped by the trigger', async () => {
    const { tenant } = await chainOf(2);
    await expect(
      asPlatform(t.db, (trx) =>
        sql`update audit_records set action = 'x' where chain = ${tenant}`.execute(trx),
      ),
    ).rejects.toThrow(/permission denied/);
    await expect(
      asPlatform(t.db, (trx) => sql`delete from audit_records where chain = ${tenant}`.execute(trx)),
    ).rejects.toThrow(/permission denied/);
    await expect(asPlatform(t.db, (trx) => sql`delete from audit_checkpoints`.execute(trx))).rejects.toThrow(
      /permission denied/,
    );
    await expect(
      t.owner.query(`update audit_records set action = 'x' where chain = $1`, [tenant]),
    ).rejects.toThrow(/append-only/);
    await expect(t.owner.query(`delete from audit_records where chain = $1`, [tenant])).rejects.toThrow(
      /append-only/,
    );
    await expect(t.owner.query('truncate audit_records')).rejects.toThrow(/append-only/);
    // Positions likewise: the application role may only read them, the owner is stopped.
    await expect(
      asPlatform(t.db, (trx) =>
        sql`update audit_positions set hash = hash where chain = ${tenant}`.execute(trx),
      ),
    ).rejects.toThrow(/permission denied/);
    await expect(
      asPlatform(t.db, (trx) => sql`delete from audit_positions where chain = ${tenant}`.execute(trx)),
    ).rejects.toThrow(/permission denied/);
    await expect(
      t.owner.query(`update audit_positions set hash = hash where chain = $1`, [tenant]),
    ).rejects.toThrow(/append-only/);
    await expect(t.owner.query(`delete from audit_positions where chain = $1`, [tenant])).rejects.toThrow(
      /append-only/,
    );
    await expect(t.owner.query('truncate audit_positions')).rejects.toThrow(/append-only/);
    await expect(t.owner.query('delete from audit_checkpoints')).rejects.toThrow(/append-only/);
    // Setting the retention flag by hand does not let the application role delete either.
    await expect(
      asPlatform(t.db, async (trx) => {
        await sql`select set_config('tenantry.audit_retention', 'on', true)`.execute(trx);
        await sql`delete from audit_records where chain = ${tenant}`.execute(trx);
      }),
    ).rejects.toThrow(/permission denied/);
    expect((await verify({ tenant, publicKeys: keys })).ok).toBe(true);
  });

  it('verifies in parallel parts every chain, also one whose stored head was deleted', async () => {
    const others = [await chainOf(2), await chainOf(2)];
    const { tenant } = await chainOf(3);
    await tamper(t.owner, `delete from audit_chain_heads where chain = '${tenant}'`);
    // The parts are ranges of chain names: a chain the heads no longer name is still read (and the
    // parallel report equals the one read in this thread).
    const v = await verify({ publicKeys: keys });
    expect(v.chains.find((c) => c.chain === tenant)).toMatchObject({ records: 3, lastSeq: 3 });
    for (const o of others) expect(v.chains.find((c) => c.chain === o.tenant)).toMatchObject({ ok: true });
  });

  it('detects a changed field and names the record', async () => {
    const { tenant, records } = await chainOf(5);
    await tamper(
      t.owner,
      `update audit_records set actor_principal = 'mallory' where id = ${recordAt(tenant, 3)}`,
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.ok).toBe(false);
    expect(v.firstProblem).toMatchObject({
      code: 'record.altered',
      chain: tenant,
      seq: 3,
      recordId: rec(records, 3),
    });
    expect(v.firstProblem?.message).toContain(rec(records, 3));
    // The whole-log verification fails as well.
    expect((await verify({ publicKeys: keys })).ok).toBe(false);
  });

  it('verifies records whose text needs escaping (in COPY and in JSON), and detects a change in them', async () => {
    const tenant = randomUUID();
    const odd = 'a "quote", a \\ backslash, \t tab, \n newline, \u0001, é, 😀, \\N';
    const values = {
      'a longer key': [1e21, 0.1, -5, 1.5e-7, 123456789012345, 'x\\y'],
      b: { é: null, '\u0001\u001f': true, [odd]: odd, '': {} },
      N: '\\N',
    };
    const ids: string[] = [];
    for (const [principal, slug] of [
      [odd, 'plain'],
      ['plain', '\\N'],
      ['plain', 'plain'],
    ] as const) {
      const id = randomUUID();
      const appended = await asPlatform(t.db, (trx) =>
        appendAudit(trx, {
          tenantId: tenant,
          appId: odd,
          actor: { principal, kind: 'user' },
          sessionId: null,
          action: 'tenant.update',
          target: { kind: 'Tenant', id: tenant, slug },
          before: values,
          after: { ...values, N: odd },
          outcome: 'success',
          decision: [odd],
          requestId: id,
          correlationId: id,
        }),
      );
      ids.push(appended.id);
    }
    await sequenceAudit(t.db);
    await createAuditCheckpoint(t.db, signer);
    expect((await verify({ tenant, publicKeys: keys })).problems).toEqual([]);
    // A string `\N` is not SQL's null (seq 2 holds one and verifies): changed to one, it is detected.
    await tamper(t.owner, `update audit_records set target_slug = $1 where id = $2`, ['\\N', ids[2]]);
    await tamper(
      t.owner,
      `update audit_records set after = jsonb_set(after, '{N}', '"\\\\N"') where id = $1`,
      [ids[0]],
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.problems.filter((p) => p.code === 'record.altered').map((p) => p.seq)).toEqual([1, 3]);
  });

  it('detects a changed record whose hash was recomputed (the link to the next breaks)', async () => {
    const { tenant, records } = await chainOf(5);
    const { rows } = await t.owner.query(
      `select a.*, tenantry_audit_time(a.time) as time from ${SEQUENCED} a where chain = $1 and seq = 2`,
      [tenant],
    );
    const forged = { ...recordFromRow(rows[0]), after: { n: 999 } };
    const hash = hashAuditDocument(forged);
    await tamper(
      t.owner,
      `update audit_records set after = '{"n":999}' where id = ${recordAt(tenant, 2)};
       update audit_positions set hash = '${hash}' where chain = '${tenant}' and seq = 2`,
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.problems.map((p) => p.code)).toEqual(['record.link_broken']);
    expect(v.firstProblem).toMatchObject({ seq: 3, recordId: rec(records, 3) });
    // The message names the record that was changed.
    expect(v.firstProblem?.message).toContain(`record ${rec(records, 2)} (seq 2) was changed`);
  });

  it('detects history rewritten from a record on, with every hash and the head recomputed', async () => {
    const { tenant, records } = await chainOf(4);
    // Rewrite seq 2..4 consistently: the chain alone is valid again, only the checkpoint knows.
    const { rows } = await t.owner.query(
      `select a.*, tenantry_audit_time(a.time) as time from ${SEQUENCED} a where chain = $1 order by seq`,
      [tenant],
    );
    let prev = rows[0].hash as string;
    const updates: string[] = [];
    for (const row of rows.slice(1)) {
      const doc = { ...recordFromRow(row), prevHash: prev, after: { rewritten: true } };
      const hash = hashAuditDocument(doc);
      updates.push(
        `update audit_records set after = '{"rewritten":true}' where id = '${row.id}';
         update audit_positions set prev_hash = '${prev}', hash = '${hash}' where record_id = '${row.id}';`,
      );
      prev = hash;
    }
    updates.push(`update audit_chain_heads set hash = '${prev}' where chain = '${tenant}';`);
    await tamper(t.owner, updates.join('\n'));
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.ok).toBe(false);
    expect(v.problems.map((p) => p.code)).toEqual(['checkpoint.head_mismatch']);
    expect(v.firstProblem).toMatchObject({ seq: 4, recordId: rec(records, 4) });
  });

  it('detects a deleted record, naming the missing position and the record after it', async () => {
    const { tenant, records } = await chainOf(5);
    // The record and its position, as a forger would; the record alone leaves the same gap.
    await tamper(
      t.owner,
      `delete from audit_records where id = ${recordAt(tenant, 3)};
       delete from audit_positions where chain = '${tenant}' and seq = 3`,
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'record.missing', seq: 4, recordId: rec(records, 4) });
    expect(v.firstProblem?.message).toMatch(/seq 3 .*missing/);
  });

  it('detects the deletion of the first record', async () => {
    const { tenant, records } = await chainOf(3);
    await tamper(t.owner, `delete from audit_records where id = ${recordAt(tenant, 1)}`);
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'chain.start_missing', seq: 2, recordId: rec(records, 2) });
  });

  it('detects the deletion of the newest records even when the chain head is rewound too', async () => {
    const { tenant, records } = await chainOf(5);
    await tamper(
      t.owner,
      `delete from audit_records a using audit_positions p
         where p.record_id = a.id and p.chain = '${tenant}' and p.seq >= 4;
       delete from audit_positions where chain = '${tenant}' and seq >= 4;
       update audit_chain_heads set seq = 3, hash = '${records[2]!.hash}' where chain = '${tenant}';`,
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.ok).toBe(false);
    expect(v.problems.map((p) => p.code)).toEqual(['chain.truncated']);
    expect(v.firstProblem).toMatchObject({ chain: tenant, seq: 4 });
    expect(v.firstProblem?.message).toContain('records 4-5 were deleted');
  });

  it('detects the deletion of the newest records through the head, before any checkpoint covers them', async () => {
    const { tenant } = await chainOf(2);
    const more = await appendMany(t.db, tenant, 2);
    await tamper(
      t.owner,
      `delete from audit_records where id = '${more[1]!.id}';
       delete from audit_positions where record_id = '${more[1]!.id}'`,
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'head.mismatch', seq: 4 });
  });

  it('detects reordered records', async () => {
    const { tenant, records } = await chainOf(5);
    await tamper(
      t.owner,
      `update audit_positions set seq = 1000 where chain = '${tenant}' and seq = 2;
       update audit_positions set seq = 2 where chain = '${tenant}' and seq = 4;
       update audit_positions set seq = 4 where chain = '${tenant}' and seq = 1000;`,
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'record.altered', seq: 2, recordId: rec(records, 4) });
    expect(v.problems).toContainEqual(expect.objectContaining({ seq: 4, recordId: rec(records, 2) }));
  });

  it('detects reordering by time (swapping the timestamps of two records)', async () => {
    const { tenant, records } = await chainOf(3);
    await tamper(
      t.owner,
      `update audit_records a set time = b.time from ${SEQUENCED} b, audit_positions p
       where p.record_id = a.id and p.chain = '${tenant}' and b.chain = p.chain
         and ((p.seq = 1 and b.seq = 3) or (p.seq = 3 and b.seq = 1))`,
    );
    const v = await verify({ tenant, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'record.altered', seq: 1, recordId: rec(records, 1) });
  });

  it('detects a forged checkpoint: altered heads, and one signed with an untrusted key', async () => {
    const { tenant, checkpoint } = await chainOf(2);
    // Altered: claims a longer chain, keeping the old signature.
    await tamper(
      t.owner,
      `update audit_checkpoints set heads = jsonb_set(heads, '{${tenant},seq}', '9') where id = '${checkpoint.id}'`,
    );
    let v = await verify({ tenant, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({
      code: 'checkpoint.signature_invalid',
      checkpointId: checkpoint.id,
    });
    expect(v.checkpoints.valid).toBe(v.checkpoints.total - 1);

    // A whole checkpoint signed by an attacker's key, vouching for a rewritten head.
    const mallory = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
    const fake = {
      id: randomUUID(),
      time: '2030-01-01T00:00:00.000000Z',
      keyId: mallory.keyId,
      heads: { [tenant]: { seq: 2, hash: 'f'.repeat(64) } },
    };
    const signature = mallory.sign(checkpointPayload(fake));
    await tamper(
      t.owner,
      `insert into audit_checkpoints (id, time, heads, signature, key_id) values
       ('${fake.id}', '${fake.time}', '${JSON.stringify(fake.heads)}', '${signature}', '${fake.keyId}')`,
    );
    v = await verify({ tenant, publicKeys: keys });
    expect(v.problems).toContainEqual(
      expect.objectContaining({ code: 'checkpoint.unknown_key', checkpointId: fake.id }),
    );
    // Trusting the attacker's key is the only way to make it pass, and even then the heads do not match.
    v = await verify({ tenant, publicKeys: [...keys, mallory.publicKey] });
    expect(v.problems).toContainEqual(expect.objectContaining({ code: 'checkpoint.head_mismatch', seq: 2 }));
  });
});
