import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createAuditCheckpoint } from './audit-checkpoint.js';
import { openCheckpoint } from './checkpoint-note.js';
import { AuditSigner } from './checkpoint-signer.js';
import { exportAudit, verifyAuditExport } from './export-audit.js';

let t: TestDatabase;
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const keys = [signer.publicKeyPem];
const [alpha, beta] = [randomUUID(), randomUUID()];

beforeAll(async () => {
  t = await createTestDatabase();
  await appendMany(t.db, alpha, 11);
  await appendMany(t.db, beta, 4);
  await appendMany(t.db, null, 2);
  await createAuditCheckpoint(t.db, signer);
});
afterAll(async () => t?.destroy());

async function exportLines(tenant?: string): Promise<Record<string, unknown>[]> {
  let text = '';
  const out = new Writable({
    write(chunk, _enc, done) {
      text += chunk;
      done();
    },
  });
  await exportAudit(t.db, out, { ...(tenant ? { tenant } : {}), signer });
  return text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}
const verifyLines = (lines: unknown[]) =>
  verifyAuditExport(Readable.from([`${lines.map((l) => JSON.stringify(l)).join('\n')}\n`]), keys);

// RFC 9162 §2.1.3.2, written out here independently of merkle.ts.
const sha = (...b: Buffer[]) => createHash('sha256').update(Buffer.concat(b)).digest();
function included(hash: string, index: number, size: number, proof: string[], root: Buffer): boolean {
  let fn = index;
  let sn = size - 1;
  let r = sha(Buffer.from([0]), Buffer.from(hash, 'hex'));
  for (const p of proof.map((h) => Buffer.from(h, 'hex'))) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = sha(Buffer.from([1]), p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else r = sha(Buffer.from([1]), r, p);
    fn >>= 1;
    sn >>= 1;
  }
  return sn === 0 && r.equals(root);
}

describe("a tenant's export", () => {
  it('holds its own chain, its signed tree head and an inclusion proof per record, and nothing about other tenants', async () => {
    const lines = await exportLines(alpha);
    const text = JSON.stringify(lines);
    expect(text).not.toContain(beta);
    expect(text).not.toContain('"platform"');
    expect(lines.filter((l) => l.type === 'checkpoint')).toEqual([]);
    const head = lines.find((l) => l.type === 'tree_head')!;
    const note = openCheckpoint(head.checkpoint as string, [signer.publicKey]);
    expect(note).toMatchObject({ origin: `tenantry/audit/${alpha}`, size: 11 });
    const records = lines.filter((l) => l.type === 'record');
    expect(records).toHaveLength(11);
    for (const r of records)
      expect(
        included(r.hash as string, (r.seq as number) - 1, 11, r.inclusionProof as string[], note.root),
      ).toBe(true);
    const v = await verifyLines(lines);
    expect(v.problems).toEqual([]);
    expect(v).toMatchObject({ ok: true, records: 11 });
    expect(v.chains[0]).toMatchObject({ chain: alpha, anchoredThrough: 11 });
  });

  it('offline verification detects a dropped tail, a forged record and a forged tree head', async () => {
    const lines = await exportLines(alpha);
    // The newest record removed (and the head line with it): the tree head still says 11.
    const cut = lines.filter((l) => !(l.type === 'record' && l.seq === 11) && l.type !== 'head');
    expect((await verifyLines(cut)).firstProblem).toMatchObject({ code: 'chain.truncated', seq: 11 });
    // A record replaced by one with a recomputed hash: not in the signed tree.
    const forged = lines.map((l) =>
      l.type === 'record' && l.seq === 4 ? { ...l, hash: 'ab'.repeat(32) } : l,
    );
    const v = await verifyLines(forged);
    expect(v.problems.map((p) => p.code)).toContain('record.not_included');
    // A tree head signed by another key does not verify.
    // A tree head whose signature is not the log key's does not verify.
    const fakeHead = lines.map((l) =>
      l.type === 'tree_head'
        ? { ...l, checkpoint: (l.checkpoint as string).replace(/— .*$/m, '— x AAAA') }
        : l,
    );
    expect((await verifyLines(fakeHead)).problems.map((p) => p.code)).toContain(
      'checkpoint.signature_invalid',
    );
  });

  it('the whole export keeps the all-chains checkpoints', async () => {
    const lines = await exportLines();
    expect(lines.filter((l) => l.type === 'checkpoint')).toHaveLength(1);
    expect(lines.filter((l) => l.type === 'tree_head')).toEqual([]);
    expect((await verifyLines(lines)).ok).toBe(true);
  });
});
