import { createHash } from 'node:crypto';

/**
 * The Merkle tree of a transparency log, RFC 9162 §2.1 (SHA-256, as in RFC 6962): leaf hashes are
 * SHA-256(0x00 || entry), interior nodes SHA-256(0x01 || left || right), a tree of n > 1 leaves
 * splits at the largest power of two below n. Pure: no I/O.
 *
 * Hand-written rather than a dependency: no npm package implements RFC 9162 proofs with upkeep
 * comparable to transparency-dev/merkle (Go); the algorithms are short and are checked in the tests
 * against that project's test vectors and against an independent recursive implementation.
 */

export type Hash = Buffer;

const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

export const EMPTY_ROOT: Hash = createHash('sha256').digest();

export function leafHash(entry: Uint8Array): Hash {
  return createHash('sha256').update(LEAF).update(entry).digest();
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Hash {
  return createHash('sha256').update(NODE).update(left).update(right).digest();
}

/** The largest power of two strictly below n (n ≥ 2). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * The compact range of a tree: the roots of its perfect subtrees, largest (leftmost) first. Enough
 * to compute the root and to append leaves without the leaves before them.
 */
export class CompactRange {
  constructor(
    public size = 0,
    /** Perfect subtree roots, left to right: one per set bit of `size`, highest first. */
    public readonly peaks: Hash[] = [],
  ) {}

  append(leaf: Hash): void {
    let h = leaf;
    let s = this.size;
    // Merge with the peaks of equal height: one per trailing set bit of the old size.
    while (s & 1) {
      h = nodeHash(this.peaks.pop()!, h);
      s = Math.floor(s / 2);
    }
    this.peaks.push(h);
    this.size++;
  }

  root(): Hash {
    if (this.peaks.length === 0) return EMPTY_ROOT;
    let h = this.peaks[this.peaks.length - 1]!;
    for (let i = this.peaks.length - 2; i >= 0; i--) h = nodeHash(this.peaks[i]!, h);
    return h;
  }
}

/** The root of the tree over `leaves` (leaf hashes). */
export function rootOf(leaves: readonly Hash[]): Hash {
  const r = new CompactRange();
  for (const l of leaves) r.append(l);
  return r.root();
}

/** MTH(D[lo:hi]) over leaf hashes, hi > lo. */
function subtreeRoot(leaves: readonly Hash[], lo: number, hi: number): Hash {
  if (hi - lo === 1) return leaves[lo]!;
  const k = split(hi - lo);
  return nodeHash(subtreeRoot(leaves, lo, lo + k), subtreeRoot(leaves, lo + k, hi));
}

/** PATH(m, D[n]) (RFC 9162 §2.1.3.1): the inclusion proof of leaf `index` in the first `size` leaves. */
export function inclusionProof(leaves: readonly Hash[], index: number, size = leaves.length): Hash[] {
  if (!(index >= 0 && index < size && size <= leaves.length))
    throw new RangeError(`leaf ${index} is not in a tree of size ${size}`);
  const path: Hash[] = [];
  const walk = (m: number, lo: number, hi: number): void => {
    if (hi - lo === 1) return;
    const k = split(hi - lo);
    if (m < k) {
      walk(m, lo, lo + k);
      path.push(subtreeRoot(leaves, lo + k, hi));
    } else {
      walk(m - k, lo + k, hi);
      path.push(subtreeRoot(leaves, lo, lo + k));
    }
  };
  walk(index, 0, size);
  return path;
}

/**
 * The inclusion proofs of every leaf of the tree of `size`, each as inclusionProof() gives it, in
 * O(n log n) (inclusionProof recomputes subtrees: O(n) each). For exports that prove every record.
 */
export function allInclusionProofs(leaves: readonly Hash[], size = leaves.length): Hash[][] {
  if (size > leaves.length) throw new RangeError(`a tree of size ${size} needs ${size} leaves`);
  const proofs: Hash[][] = Array.from({ length: size }, () => []);
  // Returns MTH(D[lo:hi]); the siblings of a subtree's leaves are pushed after those below them.
  const build = (lo: number, hi: number): Hash => {
    if (hi - lo === 1) return leaves[lo]!;
    const k = split(hi - lo);
    const left = build(lo, lo + k);
    const right = build(lo + k, hi);
    for (let i = lo; i < lo + k; i++) proofs[i]!.push(right);
    for (let i = lo + k; i < hi; i++) proofs[i]!.push(left);
    return nodeHash(left, right);
  };
  if (size > 0) build(0, size);
  return proofs;
}

/** PROOF(m, D[n]) (RFC 9162 §2.1.4.1): proves the tree of size `from` is a prefix of the tree of size `to`. */
export function consistencyProof(leaves: readonly Hash[], from: number, to = leaves.length): Hash[] {
  if (!(from >= 0 && from <= to && to <= leaves.length))
    throw new RangeError(`no consistency proof from size ${from} to size ${to}`);
  if (from === 0 || from === to) return [];
  const proof: Hash[] = [];
  const subproof = (m: number, lo: number, hi: number, complete: boolean): void => {
    const n = hi - lo;
    if (m === n) {
      if (!complete) proof.push(subtreeRoot(leaves, lo, hi));
      return;
    }
    const k = split(n);
    if (m <= k) {
      subproof(m, lo, lo + k, complete);
      proof.push(subtreeRoot(leaves, lo + k, hi));
    } else {
      subproof(m - k, lo + k, hi, false);
      proof.push(subtreeRoot(leaves, lo, lo + k));
    }
  };
  subproof(from, 0, to, true);
  return proof;
}

/** RFC 9162 §2.1.3.2: whether `proof` shows `leaf` at `index` in the tree of `size` with `root`. */
export function verifyInclusion(
  leaf: Hash,
  index: number,
  size: number,
  proof: readonly Hash[],
  root: Hash,
): boolean {
  if (index >= size || index < 0) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

/** RFC 9162 §2.1.4.2: whether `proof` shows the tree (size1, root1) is a prefix of (size2, root2). */
export function verifyConsistency(
  size1: number,
  size2: number,
  proof: readonly Hash[],
  root1: Hash,
  root2: Hash,
): boolean {
  if (size1 > size2 || size1 < 0) return false;
  if (size1 === size2) return proof.length === 0 && root1.equals(root2);
  if (size1 === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  let path = [...proof];
  // A power-of-two size1 is itself a node of the larger tree: prepend its root.
  if ((size1 & (size1 - 1)) === 0) path = [root1, ...path];
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && fr.equals(root1) && sr.equals(root2);
}
