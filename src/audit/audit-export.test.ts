import { generateKeyPairSync, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, SEQUENCED, sequenceAudit, tamper } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { systemContext } from '../context/request-context.js';
import { createAuditCheckpoint } from './audit-checkpoint.js';
import { applyAuditRetention } from './audit-retention.js';
import { AuditSigner, defaultSigningKeyFile, loadAuditSigner } from './checkpoint-signer.js';
import { exportAudit, verifyAuditExport } from './export-audit.js';
import { searchAudit } from './search-audit.js';
import { verifyAudit } from './verify-audit.js';

let t: TestDatabase;
let dir: string;
const ctx = systemContext('retention-job');
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const keys = [signer.publicKeyPem];
const [alpha, beta] = [randomUUID(), randomUUID()];

async function exportTo(file: string, tenant?: string) {
  const out = (await fs.open(file, 'w')).createWriteStream();
  const summary = await exportAudit(t.db, out, tenant ? { tenant } : {});
  await new Promise<void>((resolve, reject) =>
    out.end((err?: Error | null) => (err ? reject(err) : resolve())),
  );
  return summary;
}

beforeAll(async () => {
  t = await createTestDatabase();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-audit-'));
});
afterAll(async () => {
  await t?.destroy();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe('export, offline verification and retention', () => {
  it('keeps the embedded signing key under the data folder, or loads a configured one', async () => {
    const first = await loadAuditSigner({ dataDir: dir });
    const again = await loadAuditSigner({ dataDir: dir });
    expect(again.keyId).toBe(first.keyId);
    expect((await fs.stat(defaultSigningKeyFile(dir))).mode & 0o777).toBe(0o600);
    expect(first.publicKeyPem).toContain('BEGIN PUBLIC KEY');
    const file = path.join(dir, 'configured.pem');
    await fs.writeFile(
      file,
      generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    );
    const configured = await loadAuditSigner({ keyFile: file, dataDir: dir });
    expect(configured.keyId).not.toBe(first.keyId);
    const rsa = path.join(dir, 'rsa.pem');
    await fs.writeFile(
      rsa,
      generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
    );
    await expect(loadAuditSigner({ keyFile: rsa, dataDir: dir })).rejects.toThrow(/Ed25519/);
  });

  it('exports JSON Lines with the checkpoints that an offline verifier checks with the public key alone', async () => {
    await appendMany(t.db, alpha, 6);
    await appendMany(t.db, beta, 4);
    await appendMany(t.db, null, 2);
    await createAuditCheckpoint(t.db, signer);
    await appendMany(t.db, alpha, 2);
    await createAuditCheckpoint(t.db, signer);
    const file = path.join(dir, 'all.jsonl');
    const summary = await exportTo(file);
    expect(summary).toEqual({ records: 14, checkpoints: 2, retention: 0, chains: 3 });
    const offline = await verifyAuditExport(file, keys);
    expect(offline.problems).toEqual([]);
    expect(offline.malformed).toEqual([]);
    expect(offline).toMatchObject({ ok: true, records: 14, checkpoints: { total: 2, valid: 2 } });

    // One tenant's export verifies on its own.
    const one = path.join(dir, 'alpha.jsonl');
    expect((await exportTo(one, alpha)).records).toBe(8);
    expect(await verifyAuditExport(one, keys)).toMatchObject({ ok: true, records: 8 });

    // The wrong key: the checkpoints are not trusted.
    const stranger = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
    const wrong = await verifyAuditExport(file, [stranger.publicKeyPem]);
    expect(wrong.ok).toBe(false);
    expect(wrong.firstProblem?.code).toBe('checkpoint.unknown_key');

    // An edited line is named.
    const original = (await fs.readFile(file, 'utf8')).trimEnd().split('\n');
    const lines = [...original];
    const idx = lines.findIndex(
      (l) => l.includes('"type":"record"') && l.includes('"seq":3') && l.includes(beta),
    );
    const edited = JSON.parse(lines[idx]!);
    edited.actor.principal = 'mallory';
    lines[idx] = JSON.stringify(edited);
    await fs.writeFile(path.join(dir, 'edited.jsonl'), `${lines.join('\n')}\n`);
    const bad = await verifyAuditExport(path.join(dir, 'edited.jsonl'), keys);
    expect(bad.firstProblem).toMatchObject({ code: 'record.altered', recordId: edited.id, seq: 3 });

    // Dropping the newest lines of a chain from the file is caught by the checkpoint.
    const cut = original.filter(
      (l) => !(l.includes('"type":"record"') && l.includes(alpha) && /"seq":[78],/.test(l)),
    );
    const noHead = cut.filter((l) => !l.includes('"type":"head"'));
    await fs.writeFile(path.join(dir, 'cut.jsonl'), `${noHead.join('\n')}\n`);
    const truncated = await verifyAuditExport(path.join(dir, 'cut.jsonl'), keys);
    expect(truncated.firstProblem).toMatchObject({ code: 'chain.truncated', chain: alpha, seq: 7 });

    await fs.writeFile(path.join(dir, 'junk.jsonl'), 'hello\n');
    expect((await verifyAuditExport(path.join(dir, 'junk.jsonl'), keys)).ok).toBe(false);
  });

  it('retention deletes whole checkpointed segments, records it, and the log still verifies', async () => {
    // State: alpha 1-8, beta 1-4, platform 1-2; checkpoint 1 at (alpha 6, beta 4, platform 2), checkpoint 2 after.
    await new Promise((r) => setTimeout(r, 20));
    const cutoff = new Date();
    // Records this young are kept by the default minimum age (90 days); this operator allows any age.
    await expect(applyAuditRetention(t.db, ctx, { olderThan: cutoff, publicKeys: keys })).rejects.toThrow(
      /younger than the minimum age/,
    );
    await t.owner.query(`update audit_retention_policy set min_age = interval '0'`);
    await appendMany(t.db, alpha, 1);
    await appendMany(t.db, beta, 1);
    const result = await applyAuditRetention(t.db, ctx, { olderThan: cutoff, publicKeys: keys });
    // The newest checkpoint before the cut-off (the second) bounds each chain's deleted segment.
    const byChain = Object.fromEntries(result.segments.map((s) => [s.chain, [s.throughSeq, s.deleted]]));
    expect(byChain).toEqual({ [alpha]: [8, 8], [beta]: [4, 4], platform: [2, 2] });
    expect(result.record).toMatchObject({ chain: 'platform', action: 'audit.retention' });
    // The run's own record is sequenced like any other: next on the platform chain.
    await sequenceAudit(t.db);
    const own = await t.owner.query(`select chain, seq::int from ${SEQUENCED} r where id = $1`, [
      result.record!.id,
    ]);
    expect(own.rows).toEqual([{ chain: 'platform', seq: 3 }]);
    const { rows } = await t.owner.query(
      `select chain, min(seq)::int as min, count(*)::int as n from ${SEQUENCED} r group by chain`,
    );
    expect(Object.fromEntries(rows.map((r) => [r.chain, [r.min, r.n]]))).toEqual({
      [alpha]: [9, 1],
      [beta]: [5, 1],
      platform: [3, 1],
    });
    const v = await verifyAudit(t.db, { publicKeys: keys });
    expect(v.problems).toEqual([]);
    expect(v.chains.find((c) => c.chain === alpha)).toMatchObject({
      retainedThrough: 8,
      firstSeq: 9,
      ok: true,
    });
    const found = await searchAudit(t.db, { kind: 'platform' }, { action: 'audit.retention' });
    expect(found.items).toHaveLength(1);

    // Nothing more is due: a second run deletes nothing.
    expect(
      (await applyAuditRetention(t.db, ctx, { olderThan: new Date(), publicKeys: keys })).segments,
    ).toEqual([]);

    // The export after retention verifies offline as well.
    const file = path.join(dir, 'retained.jsonl');
    expect((await exportTo(file)).retention).toBe(3);
    expect(await verifyAuditExport(file, keys)).toMatchObject({ ok: true, records: 3 });

    // Retention does not go through a checkpoint it cannot verify.
    await expect(
      applyAuditRetention(t.db, ctx, {
        olderThan: new Date(),
        publicKeys: [new AuditSigner(generateKeyPairSync('ed25519').privateKey).publicKey],
      }),
    ).rejects.toThrow(/does not verify/);
  });

  it('detects a deleted segment disguised as retention, and a removed retention mark', async () => {
    await appendMany(t.db, beta, 3); // beta 5..8
    // Deleting the start of beta's remaining chain without retention:
    await tamper(
      t.owner,
      `delete from audit_records a using audit_positions p
       where p.record_id = a.id and p.chain = '${beta}' and p.seq <= 6`,
    );
    let v = await verifyAudit(t.db, { tenant: beta, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'record.missing', seq: 7 });
    // ... and forging a retention mark for it, which no signed checkpoint supports:
    const { rows } = await t.owner.query(`select id from audit_checkpoints order by time desc limit 1`);
    await tamper(
      t.owner,
      `insert into audit_retention (id, chain, through_seq, through_hash, checkpoint_id, deleted)
       select gen_random_uuid(), chain, seq, hash, '${rows[0].id}', 2 from ${SEQUENCED} r where chain = '${beta}' and seq = 7`,
    );
    v = await verifyAudit(t.db, { tenant: beta, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'retention.unverified', chain: beta, seq: 7 });
    // Removing alpha's genuine retention mark exposes the missing start of the chain.
    await tamper(t.owner, `delete from audit_retention where chain = '${alpha}'`);
    v = await verifyAudit(t.db, { tenant: alpha, publicKeys: keys });
    expect(v.firstProblem).toMatchObject({ code: 'chain.start_missing', seq: 9 });
  });
});
