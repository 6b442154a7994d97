import { createHash, generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CheckpointError, noteVerifierKey, openCheckpoint, signCheckpoint } from './checkpoint-note.js';
import { AuditSigner } from './checkpoint-signer.js';
import {
  allInclusionProofs,
  CompactRange,
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  rootOf,
  verifyConsistency,
  verifyInclusion,
} from './merkle.js';

// An independent reference, straight from the recursive definitions of RFC 9162 §2.1 (MTH, PATH,
// PROOF/SUBPROOF) over the entries themselves; it shares no code with merkle.ts.
const sha = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();
const k = (n: number) => 2 ** Math.ceil(Math.log2(n) - 1);
const mth = (d: Buffer[]): Buffer =>
  d.length === 0
    ? sha()
    : d.length === 1
      ? sha(Buffer.from([0]), d[0]!)
      : sha(Buffer.from([1]), mth(d.slice(0, k(d.length))), mth(d.slice(k(d.length))));
const path = (m: number, d: Buffer[]): Buffer[] =>
  d.length <= 1
    ? []
    : m < k(d.length)
      ? [...path(m, d.slice(0, k(d.length))), mth(d.slice(k(d.length)))]
      : [...path(m - k(d.length), d.slice(k(d.length))), mth(d.slice(0, k(d.length)))];
const subproof = (m: number, d: Buffer[], b: boolean): Buffer[] =>
  m === d.length
    ? b
      ? []
      : [mth(d)]
    : m <= k(d.length)
      ? [...subproof(m, d.slice(0, k(d.length)), b), mth(d.slice(k(d.length)))]
      : [...subproof(m - k(d.length), d.slice(k(d.length)), false), mth(d.slice(0, k(d.length)))];

// Test vectors of transparency-dev/merkle (testonly/constants.go, reference_test.go), from RFC 6962.
const hd = (s: string) => Buffer.from(s, 'hex');
const inputs = [
  '',
  '00',
  '10',
  '2021',
  '3031',
  '40414243',
  '5051525354555657',
  '606162636465666768696a6b6c6d6e6f',
].map(hd);
const roots = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
const inclusionVectors: [number, number, string[]][] = [
  [0, 1, []],
  [0, 2, ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7']],
  [1, 2, ['6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d']],
  [2, 3, ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125']],
  [
    1,
    5,
    [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ],
  ],
  [
    0,
    8,
    [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ],
  ],
  [
    5,
    8,
    [
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  ],
];
const consistencyVectors: [number, number, string[]][] = [
  [1, 1, []],
  [
    1,
    8,
    [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ],
  ],
  [
    2,
    5,
    [
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ],
  ],
  [
    6,
    8,
    [
      '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  ],
];
const hex = (hs: Buffer[]) => hs.map((h) => h.toString('hex'));
const leaves = inputs.map(leafHash);

describe('RFC 9162 Merkle tree', () => {
  it('reproduces the CT root hashes for every size, and the reference agrees', () => {
    expect(EMPTY_ROOT.toString('hex')).toBe(roots[0]);
    for (let n = 0; n <= 8; n++) {
      expect(rootOf(leaves.slice(0, n)).toString('hex')).toBe(roots[n]);
      expect(mth(inputs.slice(0, n)).toString('hex')).toBe(roots[n]);
    }
  });

  it('reproduces the inclusion proof vectors, and they verify', () => {
    for (const [index, size, want] of inclusionVectors) {
      const proof = inclusionProof(leaves, index, size);
      expect(hex(proof)).toEqual(want);
      expect(hex(path(index, inputs.slice(0, size)))).toEqual(want);
      expect(verifyInclusion(leaves[index]!, index, size, proof, hd(roots[size]!))).toBe(true);
    }
  });

  it('reproduces the consistency proof vectors, and they verify', () => {
    for (const [from, to, want] of consistencyVectors) {
      const proof = consistencyProof(leaves, from, to);
      expect(hex(proof)).toEqual(want);
      expect(verifyConsistency(from, to, proof, hd(roots[from]!), hd(roots[to]!))).toBe(true);
    }
  });

  it('agrees with the reference on random trees, and refuses altered proofs', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 8 }), { minLength: 1, maxLength: 70 }),
        fc.nat(),
        fc.nat(),
        (raw, a, b) => {
          const d = raw.map((u) => Buffer.from(u));
          const ls = d.map(leafHash);
          const n = d.length;
          const root = mth(d);
          const range = new CompactRange();
          for (const l of ls) range.append(l);
          expect(range.root().equals(root)).toBe(true);
          const i = a % n;
          const incl = inclusionProof(ls, i);
          expect(hex(incl)).toEqual(hex(path(i, d)));
          expect(verifyInclusion(ls[i]!, i, n, incl, root)).toBe(true);
          expect(verifyInclusion(ls[(i + 1) % n]!, i, n, incl, root)).toBe(
            n === 1 || ls[(i + 1) % n]!.equals(ls[i]!),
          );
          const m = (b % n) + 1;
          const cons = consistencyProof(ls, m, n);
          expect(hex(cons)).toEqual(m === n ? [] : hex(subproof(m, d, true)));
          expect(verifyConsistency(m, n, cons, mth(d.slice(0, m)), root)).toBe(true);
          if (cons.length > 0) {
            const bad = cons.map((h, j) => (j === 0 ? sha(h) : h));
            expect(verifyConsistency(m, n, bad, mth(d.slice(0, m)), root)).toBe(false);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('gives every inclusion proof at once, equal to the reference path of each leaf', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 8 }), { minLength: 0, maxLength: 40 }), (raw) => {
        const d = raw.map((u) => Buffer.from(u));
        const all = allInclusionProofs(d.map(leafHash));
        expect(all).toHaveLength(d.length);
        for (const [i, p] of all.entries()) expect(hex(p)).toEqual(hex(path(i, d)));
      }),
      { numRuns: 100 },
    );
  });
});

describe('C2SP signed checkpoint', () => {
  const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
  const cp = { origin: 'tenantry.test/audit/platform', size: 8, root: hd(roots[8]!) };

  it('has the tlog-checkpoint body and a signed-note signature that opens with the key', () => {
    const note = signCheckpoint(signer, cp);
    const [body, sig] = note.split('\n\n');
    expect(body).toBe(`tenantry.test/audit/platform\n8\n${hd(roots[8]!).toString('base64')}`);
    expect(sig).toMatch(/^\u2014 tenantry\.test\/audit\/platform [A-Za-z0-9+/]{91}=\n$/);
    expect(openCheckpoint(note, [signer.publicKey])).toEqual(cp);
    expect(noteVerifierKey(cp.origin, signer.publicKey)).toMatch(
      /^tenantry\.test\/audit\/platform\+[0-9a-f]{8}\+/,
    );
  });

  it('refuses a changed size or root, and another key', () => {
    const note = signCheckpoint(signer, cp);
    const other = generateKeyPairSync('ed25519').publicKey;
    expect(() => openCheckpoint(note.replace('\n8\n', '\n9\n'), [signer.publicKey])).toThrow(CheckpointError);
    expect(() => openCheckpoint(note, [other])).toThrow(CheckpointError);
    const forged = signCheckpoint(signer, { ...cp, root: hd(roots[7]!) });
    expect(openCheckpoint(forged, [signer.publicKey]).root.toString('hex')).toBe(roots[7]);
    expect(() =>
      openCheckpoint(`${note.split('\n\n')[0]}\n\n${forged.split('\n\n')[1]}`, [signer.publicKey]),
    ).toThrow(CheckpointError);
  });
});
