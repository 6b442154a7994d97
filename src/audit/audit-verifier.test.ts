import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GENESIS_HASH } from './audit-hash.js';
import { AuditVerifier, type LinkedRecord } from './audit-verifier.js';

const hex = (n: number) => n.toString(16).padStart(64, '0');

/** Chains of linked records (fake hashes: the link checks only compare them), then tampered with. */
const tamperedChains = fc
  .record({
    lengths: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 4 }),
    drop: fc.array(fc.nat(), { maxLength: 3 }),
    relink: fc.array(fc.nat(), { maxLength: 2 }),
    altered: fc.array(fc.nat(), { maxLength: 2 }),
  })
  .map(({ lengths, drop, relink, altered }) => {
    let n = 0;
    let records: [LinkedRecord, boolean][] = lengths.flatMap((length, c) => {
      let prev = GENESIS_HASH;
      return Array.from({ length }, (_, i) => {
        const hash = hex(++n);
        const r = { id: `r${n}`, chain: `c${c}`, seq: i + 1, tenantId: `c${c}`, prevHash: prev, hash };
        prev = hash;
        return [r, true] as [LinkedRecord, boolean];
      });
    });
    for (const i of relink) records[i % records.length]![0].prevHash = hex(1e6 + i);
    for (const i of altered) records[i % records.length]![1] = false;
    const dropped = new Set(drop.map((i) => i % records.length));
    records = records.filter((_, i) => !dropped.has(i));
    return records;
  });

function verified(feed: (v: AuditVerifier) => void) {
  const v = new AuditVerifier(new Map());
  v.addHead('c0', 3, hex(3));
  feed(v);
  return v.finish();
}

describe('AuditVerifier', () => {
  it('links records that come in any order as it links them in seq order', () => {
    fc.assert(
      fc.property(
        tamperedChains.chain((records) =>
          fc.tuple(fc.constant(records), fc.shuffledSubarray(records, { minLength: records.length })),
        ),
        ([ordered, shuffled]) => {
          const expected = verified((v) => {
            for (const [r, m] of ordered) v.addLink(r, m);
          });
          expect(
            verified((v) => {
              for (const [r, m] of shuffled) v.addLinkInAnyOrder(r, m);
            }),
          ).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('finds a record twice at one position whatever the order', () => {
    const a = { id: 'a', chain: 'c0', seq: 1, tenantId: 'c0', prevHash: GENESIS_HASH, hash: hex(1) };
    const b = { ...a, id: 'b', seq: 2, prevHash: hex(1), hash: hex(2) };
    const twin = { ...b, id: 'b2', hash: hex(22) };
    for (const order of [
      [a, b, twin],
      [twin, b, a],
      [b, a, twin],
    ]) {
      const v = new AuditVerifier(new Map());
      for (const r of order) v.addLinkInAnyOrder(r, true);
      const result = v.finish();
      expect(result.ok).toBe(false);
      expect(result.problems.map((p) => p.code)).toEqual(['record.out_of_order']);
    }
  });
});
