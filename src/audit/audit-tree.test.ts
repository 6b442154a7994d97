import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, auditInsertSql, recordAt, SEQUENCED, tamper } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { recordFromRow } from './audit.repository.js';
import { createAuditCheckpoint } from './audit-checkpoint.js';
import { type AuditRecord, GENESIS_HASH, hashAuditDocument } from './audit-hash.js';
import { chainCheckpoint, chainConsistency, locateRecord, recordInclusion } from './audit-tree.js';
import { openCheckpoint } from './checkpoint-note.js';
import { AuditSigner } from './checkpoint-signer.js';
import { verifyAudit } from './verify-audit.js';
import { checkAgainstSavedCheckpoint } from './witness.js';

let t: TestDatabase;
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const keys = [signer.publicKey];

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

// Independent RFC 9162 (§2.1.1, §2.1.3.2) in a few lines, sharing no code with merkle.ts.
const sha = (...b: Buffer[]) => createHash('sha256').update(Buffer.concat(b)).digest();
const leaf = (recordHash: string) => sha(Buffer.from([0]), Buffer.from(recordHash, 'hex'));
const mth = (d: Buffer[]): Buffer => {
  if (d.length === 0) return sha();
  if (d.length === 1) return d[0]!;
  const k = 2 ** Math.ceil(Math.log2(d.length) - 1);
  return sha(Buffer.from([1]), mth(d.slice(0, k)), mth(d.slice(k)));
};
function rootFromInclusion(index: number, size: number, l: Buffer, path: Buffer[]): Buffer | null {
  let [fn, sn, r] = [index, size - 1, l];
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = sha(Buffer.from([1]), p, r);
      while (fn % 2 === 0 && fn !== 0) [fn, sn] = [fn >> 1, sn >> 1];
    } else r = sha(Buffer.from([1]), r, p);
    [fn, sn] = [fn >> 1, sn >> 1];
  }
  return sn === 0 ? r : null;
}

const fetchProof = async (chain: string, from: number) => chainConsistency(t.db, signer, chain, from);

async function readChain(tenant: string): Promise<AuditRecord[]> {
  const { rows } = await t.owner.query(
    `select a.*, tenantry_audit_time(a.time) as time from ${SEQUENCED} a where chain = $1 order by seq`,
    [tenant],
  );
  return rows.map(recordFromRow);
}

/**
 * What a superuser would do to hide a change: delete every checkpoint, then replace the chain with
 * `edit(records)` re-numbered, re-linked and re-hashed, and move the chain head to match.
 */
async function rewrite(tenant: string, edit: (records: AuditRecord[]) => AuditRecord[]): Promise<void> {
  const edited = edit(await readChain(tenant));
  await tamper(
    t.owner,
    `delete from audit_retention; delete from audit_checkpoints; delete from audit_records where chain = '${tenant}';
     delete from audit_positions where chain = '${tenant}'`,
  );
  let prev = GENESIS_HASH;
  for (const [i, r] of edited.entries()) {
    const doc = { ...r, seq: i + 1, prevHash: prev };
    const rec = { ...doc, hash: hashAuditDocument(doc) };
    const q = auditInsertSql(rec).compile(t.db);
    await tamper(t.owner, q.sql, [...q.parameters]);
    prev = rec.hash;
  }
  await t.owner.query('update audit_chain_heads set seq = $2, hash = $3 where chain = $1', [
    tenant,
    edited.length,
    prev,
  ]);
}

/** A tenant's log of 8 records, a witness's saved checkpoint of it, then 2 more records. */
async function witnessed() {
  const tenant = randomUUID();
  await appendMany(t.db, tenant, 8);
  const saved = (await chainCheckpoint(t.db, signer, tenant)).checkpoint;
  await appendMany(t.db, tenant, 2);
  expect((await checkAgainstSavedCheckpoint(saved, keys, fetchProof)).ok).toBe(true);
  return { tenant, saved };
}

describe("a chain's Merkle tree", () => {
  it('signs C2SP checkpoints and gives inclusion proofs that an independent RFC 9162 verifier accepts', async () => {
    const tenant = randomUUID();
    const records = await appendMany(t.db, tenant, 11);
    const head = await chainCheckpoint(t.db, signer, tenant);
    const cp = openCheckpoint(head.checkpoint, keys);
    expect(cp).toMatchObject({ origin: `tenantry/audit/${tenant}`, size: 11 });
    expect(cp.root.equals(mth(records.map((r) => leaf(r.hash))))).toBe(true);
    for (const r of records) {
      const p = await recordInclusion(t.db, signer, r.id, await locateRecord(t.db, r.id));
      expect(p.leafIndex).toBe(r.seq - 1);
      const root = rootFromInclusion(
        p.leafIndex,
        p.treeSize,
        leaf(r.hash),
        p.proof.map((h) => Buffer.from(h, 'hex')),
      );
      expect(root?.equals(cp.root)).toBe(true);
    }
  });

  it('records written before the tree existed are its leaves: existing chains verify unchanged', async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 3);
    await createAuditCheckpoint(t.db, signer);
    expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).ok).toBe(true);
    expect((await chainCheckpoint(t.db, signer, tenant)).size).toBe(3);
  });

  const cases: [string, (r: AuditRecord[]) => AuditRecord[]][] = [
    [
      'changed field',
      (r) => r.map((x) => (x.seq === 3 ? { ...x, actor: { ...x.actor, principal: 'mallory' } } : x)),
    ],
    ['deleted record', (r) => r.filter((x) => x.seq !== 4)],
    ['reordered records', (r) => [r[0]!, r[2]!, r[1]!, ...r.slice(3)]],
    ['truncated tail', (r) => r.slice(0, 6)],
    [
      'forged append',
      (r) => [...r.slice(0, 5), { ...r[4]!, id: randomUUID(), action: 'tenant.delete' }, ...r.slice(5)],
    ],
  ];
  for (const [name, edit] of cases) {
    it(`with a saved checkpoint, detects: deleted checkpoints, then ${name} in a rewritten tree`, async () => {
      const { tenant, saved } = await witnessed();
      await rewrite(tenant, edit);
      // The rewritten chain is self-consistent and no server checkpoint is left to contradict it…
      expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).ok).toBe(true);
      // …but the witness's checkpoint does.
      const check = await checkAgainstSavedCheckpoint(saved, keys, fetchProof);
      expect(check.ok).toBe(false);
      expect(check.message).toMatch(/NOT consistent|truncated/);
      expect(check.saved?.size).toBe(8);
    });
  }

  it('an untouched log verifies against the saved checkpoint; a checkpoint signed by another key does not', async () => {
    const { saved } = await witnessed();
    expect((await checkAgainstSavedCheckpoint(saved, keys, fetchProof)).message).toMatch(/extends the saved/);
    const other = generateKeyPairSync('ed25519').publicKey;
    expect((await checkAgainstSavedCheckpoint(saved, [other], fetchProof)).ok).toBe(false);
  });

  it('a record deleted without rewriting leaves a tree that cannot be recomputed (409)', async () => {
    const { tenant } = await witnessed();
    await tamper(t.owner, `delete from audit_records where id = ${recordAt(tenant, 2)}`);
    await expect(chainCheckpoint(t.db, signer, tenant)).rejects.toMatchObject({
      code: 'audit.tree_incomplete',
    });
  });
});
