import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync, verify } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, SEQUENCED, tamper } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { recordFromRow } from './audit.repository.js';
import { AuditCheckpointer } from './audit-checkpoint.js';
import { hashAuditDocument } from './audit-hash.js';
import { publishCheckpoints } from './checkpoint-events.js';
import { openCheckpoint, signCheckpoint } from './checkpoint-note.js';
import { AuditSigner } from './checkpoint-signer.js';
import {
  addSignatures,
  cosign,
  cosignerKeyId,
  openCosignedCheckpoint,
  parseWitnessVerifierKey,
  type Witness,
  witnessVerifierKey,
} from './cosignature.js';
import { logOrigin } from './log-origin.js';
import {
  cosignCheckpoint,
  cosignedCheckpoint,
  parseWitnessEndpoint,
  type WitnessEndpoint,
  type WitnessOutcome,
  WitnessSubmitter,
} from './witness-cosigning.js';

/**
 * Witnessed checkpoints: a real witness (`tenantry witness serve`, its own process and key) cosigns
 * each checkpoint of a tenant's audit log while the log only grows, and refuses — also after a
 * restart — a log whose history was rewritten (a fork), so a client requiring its cosignature
 * (`tenantry audit verify-checkpoint`) rejects the forked checkpoint.
 */
const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts')];
let t: TestDatabase;
let dir: string;
let logKeyFile: string;
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const children: ChildProcess[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-witness-'));
  logKeyFile = path.join(dir, 'log.pem');
  await fs.writeFile(logKeyFile, signer.publicKeyPem);
});
afterAll(async () => {
  for (const c of children) c.kill('SIGTERM');
  await t?.destroy();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

/** Starts `tenantry witness serve` and reads the URL and verifier key it prints. */
function startWitness(name: string): Promise<{ endpoint: WitnessEndpoint; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [
      ...CLI,
      'witness',
      'serve',
      '--name',
      name,
      '--key',
      path.join(dir, `${name.replaceAll('/', '_')}.key`),
      '--state',
      path.join(dir, `${name.replaceAll('/', '_')}.state.json`),
      '--log-key',
      logKeyFile,
      '--listen',
      '127.0.0.1:0',
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /witness listening on (\S+) (\S+)/.exec(out);
      if (m) {
        clearInterval(timer);
        try {
          resolve({ endpoint: parseWitnessEndpoint(`${m[2]} ${m[1]}`), child });
        } catch (err) {
          reject(err);
        }
      }
    }, 50);
    child.on('exit', (code) => {
      clearInterval(timer);
      reject(new Error(`witness exited ${code}: ${out}`));
    });
  });
}

async function stop(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** Publishes the tenant log's checkpoint now (as the sequencer does after a batch). */
async function publish(tenant: string) {
  const [p] = await publishCheckpoints(t.db, signer, { chains: [tenant] });
  if (!p) throw new Error('no checkpoint published');
  return p;
}

function verifyCli(file: string, w: Witness): { status: number | null; out: string } {
  const r = spawnSync(
    process.execPath,
    [
      ...CLI,
      'audit',
      'verify-checkpoint',
      file,
      '--public-key',
      logKeyFile,
      '--witness',
      witnessVerifierKey(w),
    ],
    { cwd: ROOT, encoding: 'utf8' },
  );
  return { status: r.status, out: r.stdout + r.stderr };
}

describe('cosignatures (c2sp.org/tlog-cosignature)', () => {
  it('follow the specification: key id, verifier key, signed message, line layout', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const w: Witness = { name: 'witness.example/w1', publicKey };
    const raw = publicKey.export({ format: 'jwk' }).x!;
    const key = Buffer.from(raw, 'base64url');
    // Independently of the code under test: SHA-256(name || "\n" || 0x04 || key)[:4].
    const id = createHash('sha256')
      .update(Buffer.concat([Buffer.from('witness.example/w1\n'), Buffer.from([4]), key]))
      .digest()
      .subarray(0, 4);
    expect(cosignerKeyId(w.name, publicKey)).toEqual(id);
    const vkey = witnessVerifierKey(w);
    expect(vkey).toBe(
      `witness.example/w1+${id.toString('hex')}+${Buffer.concat([Buffer.from([4]), key]).toString('base64')}`,
    );
    expect(parseWitnessVerifierKey(vkey).publicKey.export({ format: 'jwk' }).x).toBe(raw);
    // Base64 keys hold '+' (about one in five keys here): the name and id end at the first two.
    for (let i = 0; i < 50; i++) {
      const k = generateKeyPairSync('ed25519').publicKey;
      const v = witnessVerifierKey({ name: 'w.example/x', publicKey: k });
      expect(parseWitnessVerifierKey(v).publicKey.export({ format: 'jwk' }).x).toBe(
        k.export({ format: 'jwk' }).x,
      );
    }
    expect(() => parseWitnessVerifierKey(vkey.replace(/\+[0-9a-f]{8}\+/, '+00000000+'))).toThrow(/key id/);

    const note = signCheckpoint(signer, { origin: 'tenantry/audit/x', size: 5, root: Buffer.alloc(32, 7) });
    const line = cosign(w.name, privateKey, note, 1679315147);
    const m = /^\u2014 witness\.example\/w1 (\S+)\n$/.exec(line);
    expect(m).not.toBeNull();
    const blob = Buffer.from(m![1]!, 'base64');
    expect(blob.length).toBe(4 + 8 + 64);
    expect(blob.subarray(0, 4)).toEqual(id);
    expect(blob.readBigUInt64BE(4)).toBe(1679315147n);
    const body = note.slice(0, note.indexOf('\n\n') + 1);
    const message = Buffer.from(`cosignature/v1\ntime 1679315147\n${body}`);
    expect(verify(null, message, publicKey, blob.subarray(12))).toBe(true);

    const cosigned = addSignatures(note, [line]);
    expect(openCosignedCheckpoint(cosigned, [signer.publicKey], [w], 1).cosigners).toEqual([
      { name: w.name, time: 1679315147 },
    ]);
    // The log's own signature still verifies with the cosignature appended.
    expect(openCheckpoint(cosigned, [signer.publicKey]).size).toBe(5);
    // A cosignature is over this checkpoint only: moved to another, it does not verify.
    const other = signCheckpoint(signer, { origin: 'tenantry/audit/x', size: 6, root: Buffer.alloc(32, 7) });
    expect(() => openCosignedCheckpoint(addSignatures(other, [line]), [signer.publicKey], [w], 1)).toThrow(
      /0 of the 1 witness cosignatures/,
    );
  });
});

describe('a witness process cosigning the audit log', () => {
  it('cosigns while the log grows, refuses a forked log (also after a restart), and the CLI rejects the fork', async () => {
    let { endpoint, child } = await startWitness('witness.test/w1');
    const tenant = (await import('node:crypto')).randomUUID();

    // 1. The log grows from 0 to 3, then to 7: cosigned both times (the second with a proof 3 -> 7).
    await appendMany(t.db, tenant, 3);
    const first = await publish(tenant);
    expect(await cosignCheckpoint(t.db, signer, first, [endpoint])).toEqual([
      { witness: 'witness.test/w1', status: 'cosigned', size: 3 },
    ]);
    await appendMany(t.db, tenant, 4);
    const second = await publish(tenant);
    expect(await cosignCheckpoint(t.db, signer, second, [endpoint])).toEqual([
      { witness: 'witness.test/w1', status: 'cosigned', size: 7 },
    ]);
    const head = await cosignedCheckpoint(t.db, signer, tenant);
    expect(head).toMatchObject({ chain: tenant, size: 7, witnesses: ['witness.test/w1'] });
    const good = openCosignedCheckpoint(head!.checkpoint, [signer.publicKey], [endpoint.witness], 1);
    expect(good.root.toString('hex')).toBe(second.rootHash);
    const goodFile = path.join(dir, 'good.note');
    await fs.writeFile(goodFile, head!.checkpoint);
    const ok = verifyCli(goodFile, endpoint.witness);
    expect(ok.out).toContain(`checkpoint verified: ${logOrigin(tenant)} at 7 entries`);
    expect(ok.status).toBe(0);

    // 2. The operator rewrites history from seq 2 on (every hash, the head and the cached tree
    //    recomputed, as the PostgreSQL superuser) and appends: the log signs a forked checkpoint.
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
    updates.push(`delete from audit_trees where chain = '${tenant}';`);
    await tamper(t.owner, updates.join('\n'));
    await appendMany(t.db, tenant, 2);
    const forked = await publish(tenant);
    expect(forked.treeSize).toBe(9);
    // The forked checkpoint is validly signed by the log: only a witness can tell.
    expect(openCheckpoint(forked.checkpoint, [signer.publicKey]).size).toBe(9);
    const refused = await cosignCheckpoint(t.db, signer, forked, [endpoint]);
    expect(refused).toEqual([
      expect.objectContaining({ witness: 'witness.test/w1', status: 'refused', httpStatus: 422 }),
    ]);
    // What a client is shown for the fork has no cosignature: rejected.
    const forkFile = path.join(dir, 'fork.note');
    await fs.writeFile(forkFile, forked.checkpoint);
    const rejected = verifyCli(forkFile, endpoint.witness);
    expect(rejected.out).toContain('checkpoint NOT verified');
    expect(rejected.out).toContain('0 of the 1 witness cosignatures');
    expect(rejected.status).toBe(1);
    // The largest cosigned checkpoint is still the honest one of size 7.
    expect((await cosignedCheckpoint(t.db, signer, tenant))?.size).toBe(7);

    // 3. A split view at the size the witness holds (same size, another root): 409, not cosigned.
    const split = signCheckpoint(signer, {
      origin: logOrigin(tenant),
      size: 7,
      root: Buffer.alloc(32, 1),
    });
    const res = await fetch(`${endpoint.url}/add-checkpoint`, {
      method: 'POST',
      body: `old 7\n\n${split}`,
    });
    expect(res.status).toBe(409);
    expect(res.headers.get('content-type')).toBe('text/x.tlog.size');
    expect(await res.text()).toBe('7\n');
    // Not signed by the log's key: 403; another origin: 404; a malformed body: 400.
    const mallory = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
    const forged = signCheckpoint(mallory, { origin: logOrigin(tenant), size: 9, root: Buffer.alloc(32) });
    expect(
      (await fetch(`${endpoint.url}/add-checkpoint`, { method: 'POST', body: `old 7\n\n${forged}` })).status,
    ).toBe(403);
    const foreign = signCheckpoint(signer, { origin: 'example.com/log', size: 1, root: Buffer.alloc(32) });
    expect(
      (await fetch(`${endpoint.url}/add-checkpoint`, { method: 'POST', body: `old 0\n\n${foreign}` })).status,
    ).toBe(404);
    expect(
      (await fetch(`${endpoint.url}/add-checkpoint`, { method: 'POST', body: 'new 1\n\n' })).status,
    ).toBe(400);

    // 4. The witness restarts: its state was persisted, and it still refuses the fork.
    await stop(child);
    ({ endpoint, child } = await startWitness('witness.test/w1'));
    expect(await cosignCheckpoint(t.db, signer, forked, [endpoint])).toEqual([
      expect.objectContaining({ status: 'refused', httpStatus: 422 }),
    ]);
    // Four processes start here (two witnesses, two CLI runs): minutes on a loaded 2-core machine.
  }, 240_000);

  it('sends each periodic checkpoint to the witnesses as it is made, not at the next batch', async () => {
    const { endpoint } = await startWitness('witness.test/w2');
    const tenant = (await import('node:crypto')).randomUUID();
    // Sequenced, but no batch published its checkpoint: the periodic checkpointer does, and submits it.
    await appendMany(t.db, tenant, 2);
    const outcomes: WitnessOutcome[] = [];
    const submitter = new WitnessSubmitter(t.db, signer, [endpoint], (chain, o) => {
      if (chain === tenant) outcomes.push(o);
    });
    await new AuditCheckpointer(t.db, signer, 60_000, undefined, (p) => submitter.submit(p)).tick();
    await submitter.idle();
    expect(outcomes).toEqual([{ witness: 'witness.test/w2', status: 'cosigned', size: 2 }]);
    expect(await cosignedCheckpoint(t.db, signer, tenant)).toMatchObject({
      size: 2,
      witnesses: ['witness.test/w2'],
    });
  }, 120_000);
});
