import type { KeyObject } from 'node:crypto';
import { type AuditCheckpoint, checkpointPayload } from './audit-checkpoint.js';
import { type AuditRecord, chainOf, GENESIS_HASH, HASH_PATTERN, hashAuditDocument } from './audit-hash.js';
import { CheckpointError, openCheckpoint } from './checkpoint-note.js';
import { type TrustedKeys, verifySignature } from './checkpoint-signer.js';
import { logOrigin } from './log-origin.js';
import { leafHash, verifyInclusion } from './merkle.js';

/** A segment deleted by retention: the chain continues after `throughSeq` from `throughHash`. */
export interface RetentionMark {
  id: string;
  time: string;
  chain: string;
  throughSeq: number;
  throughHash: string;
  checkpointId: string;
  deleted: number;
}

/**
 * The part of a chain an export covers (`tenantry audit export --since --until`): records
 * `fromSeq`..`toSeq`, the first of which links to `prevHash`. Checkpointed heads inside the window
 * anchor it; those outside it are not expected.
 */
export interface AuditWindow {
  chain: string;
  fromSeq: number;
  toSeq: number;
  prevHash: string;
}

/** What the chain checks need of a record once its content is known to match its hash. */
export type LinkedRecord = Pick<AuditRecord, 'id' | 'chain' | 'seq' | 'tenantId' | 'prevHash' | 'hash'> & {
  /** An export's inclusion proof of the record (hex hashes). */
  inclusionProof?: unknown;
};

export type AuditProblemCode =
  | 'record.altered'
  | 'record.link_broken'
  | 'record.missing'
  | 'record.out_of_order'
  | 'record.wrong_chain'
  | 'record.not_included'
  | 'chain.truncated'
  | 'chain.start_missing'
  | 'head.mismatch'
  | 'checkpoint.signature_invalid'
  | 'checkpoint.unknown_key'
  | 'checkpoint.head_mismatch'
  | 'checkpoint.head_missing'
  | 'retention.unverified';

export interface AuditProblem {
  code: AuditProblemCode;
  chain: string | null;
  seq?: number;
  recordId?: string;
  checkpointId?: string;
  message: string;
}

export interface ChainReport {
  chain: string;
  records: number;
  /** First and last seq present (null when retention left none). */
  firstSeq: number | null;
  lastSeq: number | null;
  lastHash: string | null;
  /** Records up to this seq were deleted by retention (or precede the exported window). */
  retainedThrough: number;
  /** The highest seq a valid checkpoint signed and the records confirm; later records are not yet anchored. */
  anchoredThrough: number | null;
  /** Present when only part of the chain was verified (a windowed export). */
  window?: { fromSeq: number; toSeq: number };
  ok: boolean;
  /** The first thing wrong with this chain, by position. */
  firstProblem?: AuditProblem;
}

export interface AuditVerification {
  ok: boolean;
  records: number;
  chains: ChainReport[];
  checkpoints: { total: number; valid: number; latest: string | null };
  /** Every problem found (at most `maxProblems`), the first of each chain first. */
  problems: AuditProblem[];
  firstProblem?: AuditProblem;
  /**
   * Entries written but not yet integrated by the sequencer (no position or hash yet): not part of
   * any tree, not verified; the oldest's time shows whether the sequencer keeps up.
   */
  unsequenced: { records: number; oldest: string | null };
}

/**
 * What a verifier of part of the chains needs to link them as the whole verifier would
 * (AuditVerifier.forPart): the retention floors and the heads valid checkpoints signed.
 */
export interface LinkingBasis {
  chain?: string;
  floors: RetentionMark[];
  signedHeads: { chain: string; seq: number; checkpointId: string; hash: string }[];
}

/** A chain as a part's verifier linked it, with the signed positions it met (AuditVerifier.addLinkedChains). */
export interface LinkedChain {
  state: ChainState;
  seenSeqs: number[];
}

interface ChainState {
  chain: string;
  records: number;
  expectedSeq: number;
  lastHash: string;
  lastId: string | null;
  firstSeq: number | null;
  lastSeq: number | null;
  floorSeq: number;
  floorHash: string;
  anchoredThrough: number | null;
  problems: AuditProblem[];
}

interface Expectation {
  checkpointId: string;
  hash: string;
  seen: boolean;
}

/**
 * The verification engine, shared by the database verifier and the offline verifier of exports.
 * Feed it retention marks and checkpoints first, then each chain's records in seq order (chains may
 * interleave), optionally the stored chain heads, then call finish(). Pure: no I/O.
 */
export class AuditVerifier {
  private readonly chains = new Map<string, ChainState>();
  private readonly floors = new Map<string, RetentionMark>();
  private readonly windows = new Map<string, AuditWindow>();
  private readonly retention: RetentionMark[] = [];
  private readonly checkpoints = new Map<string, { checkpoint: AuditCheckpoint; valid: boolean }>();
  private readonly expectations = new Map<string, Map<number, Expectation[]>>();
  private readonly heads = new Map<string, { seq: number; hash: string }>();
  /** Per chain, records that came before the ones ahead of them in seq (addLinkInAnyOrder), by seq. */
  private readonly held = new Map<string, Map<number, [LinkedRecord, boolean][]>>();
  private readonly globalProblems: AuditProblem[] = [];
  private latestCheckpoint: AuditCheckpoint | undefined;
  private total = 0;
  private unsequenced: AuditVerification['unsequenced'] = { records: 0, oldest: null };
  /** Per chain, the signed tree head of a one-chain export that its records must be included in. */
  private readonly treeHeads = new Map<string, { size: number; root: Buffer }>();

  constructor(
    private readonly keys: TrustedKeys,
    private readonly opts: { chain?: string; maxProblems?: number } = {},
  ) {}

  private inScope(chain: string): boolean {
    return this.opts.chain === undefined || this.opts.chain === chain;
  }

  addRetention(mark: RetentionMark): void {
    if (!this.inScope(mark.chain)) return;
    this.retention.push(mark);
    const floor = this.floors.get(mark.chain);
    if (!floor || mark.throughSeq > floor.throughSeq) this.floors.set(mark.chain, mark);
  }

  /** Verify only this window of the chain (call before its records). */
  addWindow(w: AuditWindow): void {
    if (this.inScope(w.chain)) this.windows.set(w.chain, w);
  }

  addCheckpoint(c: AuditCheckpoint): void {
    const key = this.keys.get(c.keyId);
    let valid = false;
    if (!key) {
      this.globalProblems.push({
        code: 'checkpoint.unknown_key',
        chain: null,
        checkpointId: c.id,
        message: `checkpoint ${c.id} (${c.time}) is signed with key ${c.keyId}, which is not a trusted key`,
      });
    } else if (!verifySignature(key, checkpointPayload(c), c.signature)) {
      this.globalProblems.push({
        code: 'checkpoint.signature_invalid',
        chain: null,
        checkpointId: c.id,
        message: `checkpoint ${c.id} (${c.time}): the signature does not match its content (forged or altered)`,
      });
    } else {
      valid = true;
      if (!this.latestCheckpoint || c.time >= this.latestCheckpoint.time) this.latestCheckpoint = c;
      for (const [chain, head] of Object.entries(c.heads)) this.expect(chain, head.seq, c.id, head.hash);
    }
    this.checkpoints.set(c.id, { checkpoint: c, valid });
  }

  /** A head a valid checkpoint signed: the record at that position must have that hash. */
  private expect(chain: string, seq: number, checkpointId: string, hash: string): void {
    if (!this.inScope(chain)) return;
    let bySeq = this.expectations.get(chain);
    if (!bySeq) {
      bySeq = new Map();
      this.expectations.set(chain, bySeq);
    }
    const list = bySeq.get(seq) ?? [];
    list.push({ checkpointId, hash, seen: false });
    bySeq.set(seq, list);
  }

  /** What a verifier of a part of the chains needs (call after the retention marks and checkpoints). */
  linkingBasis(): LinkingBasis {
    return {
      ...(this.opts.chain !== undefined ? { chain: this.opts.chain } : {}),
      floors: [...this.floors.values()],
      signedHeads: [...this.expectations].flatMap(([chain, bySeq]) =>
        [...bySeq].flatMap(([seq, list]) =>
          list.map((e) => ({ chain, seq, checkpointId: e.checkpointId, hash: e.hash })),
        ),
      ),
    };
  }

  /**
   * A verifier that links a part of the chains (each chain whole) as the one that gave `basis`
   * would: fed that part's records (addLink), its linkedChains() go to that one's addLinkedChains.
   * It checks no signature (the whole verifier did) and knows no heads, exports or windows.
   */
  static forPart(basis: LinkingBasis): AuditVerifier {
    const v = new AuditVerifier(new Map(), basis.chain !== undefined ? { chain: basis.chain } : {});
    for (const f of basis.floors) v.floors.set(f.chain, f);
    for (const h of basis.signedHeads) v.expect(h.chain, h.seq, h.checkpointId, h.hash);
    return v;
  }

  /** The chains this verifier linked (of a part: see forPart). */
  linkedChains(): LinkedChain[] {
    this.linkHeld();
    return [...this.chains.values()].map((state) => ({
      state,
      seenSeqs: [...(this.expectations.get(state.chain) ?? [])]
        .filter(([, list]) => list.some((e) => e.seen))
        .map(([seq]) => seq),
    }));
  }

  /** Chains linked by the verifier of a part (forPart), as if their records had come here. */
  addLinkedChains(chains: readonly LinkedChain[]): void {
    for (const { state, seenSeqs } of chains) {
      if (!this.inScope(state.chain)) continue;
      if (this.chains.has(state.chain)) throw new Error(`chain ${state.chain} was linked twice`);
      this.chains.set(state.chain, state);
      this.total += state.records;
      const bySeq = this.expectations.get(state.chain);
      for (const seq of seenSeqs) for (const e of bySeq?.get(seq) ?? []) e.seen = true;
    }
  }

  /**
   * A chain's signed tree head (C2SP note, as a one-chain export carries it): each of its records
   * must then come with an inclusion proof into that tree, and the chain must reach its size.
   */
  addTreeHead(chain: string, note: string, keys: readonly KeyObject[]): void {
    if (!this.inScope(chain)) return;
    try {
      const c = openCheckpoint(note, keys);
      if (c.origin !== logOrigin(chain)) throw new CheckpointError(`it is the checkpoint of ${c.origin}`);
      this.treeHeads.set(chain, { size: c.size, root: c.root });
    } catch (err) {
      this.globalProblems.push({
        code: 'checkpoint.signature_invalid',
        chain,
        message: `the tree head of chain ${chain} does not verify: ${(err as Error).message}`,
      });
    }
  }

  /** Entries not yet sequenced (counted, not verified). */
  addUnsequenced(records: number, oldest: string | null): void {
    this.unsequenced = { records, oldest };
  }

  /** The stored head of a chain (audit_chain_heads), checked against the last record. */
  addHead(chain: string, seq: number, hash: string): void {
    if (this.inScope(chain)) this.heads.set(chain, { seq, hash });
  }

  private state(chain: string): ChainState {
    let s = this.chains.get(chain);
    if (!s) {
      const floor = this.floors.get(chain);
      const window = this.windows.get(chain);
      const floorSeq = window ? window.fromSeq - 1 : (floor?.throughSeq ?? 0);
      const floorHash = window ? window.prevHash : (floor?.throughHash ?? GENESIS_HASH);
      s = {
        chain,
        records: 0,
        expectedSeq: floorSeq + 1,
        lastHash: floorHash,
        lastId: null,
        firstSeq: null,
        lastSeq: null,
        floorSeq,
        floorHash,
        anchoredThrough: null,
        problems: [],
      };
      this.chains.set(chain, s);
    }
    return s;
  }

  addRecord(r: AuditRecord): void {
    if (!this.inScope(r.chain)) return;
    this.addLink(r, hashAuditDocument(r) === r.hash);
  }

  /**
   * A record whose content was already hashed and compared with its stored hash (`contentMatches`),
   * as addRecord does: by a worker thread of the database verifier (verify-worker.ts).
   */
  addLink(r: LinkedRecord, contentMatches: boolean): void {
    if (!this.inScope(r.chain)) return;
    this.total++;
    const s = this.state(r.chain);
    const p = (code: AuditProblemCode, message: string) =>
      s.problems.push({ code, chain: r.chain, seq: r.seq, recordId: r.id, message });
    if (r.chain !== chainOf(r.tenantId)) {
      p(
        'record.wrong_chain',
        `record ${r.id} (seq ${r.seq}) of tenant ${r.tenantId ?? 'none'} is in chain ${r.chain}`,
      );
    }
    let linked = true;
    if (r.seq > s.expectedSeq) {
      linked = false;
      const missing = r.seq - 1 === s.expectedSeq ? `${s.expectedSeq}` : `${s.expectedSeq}-${r.seq - 1}`;
      const code = s.records === 0 && s.floorSeq === 0 ? 'chain.start_missing' : 'record.missing';
      p(
        code,
        `record seq ${missing} of chain ${r.chain} is missing (deleted) before record ${r.id} (seq ${r.seq})`,
      );
    } else if (r.seq < s.expectedSeq) {
      linked = false;
      p('record.out_of_order', `record ${r.id} has seq ${r.seq} but follows seq ${s.expectedSeq - 1}`);
    }
    if (!contentMatches) {
      p('record.altered', `record ${r.id} (seq ${r.seq}) does not match its hash: its content was changed`);
    }
    if (linked && r.prevHash !== s.lastHash) {
      const culprit = s.lastId
        ? `record ${s.lastId} (seq ${r.seq - 1}) was changed and re-hashed or replaced`
        : `the chain does not start from ${s.floorSeq === 0 ? 'genesis' : `the retained head at seq ${s.floorSeq}`}`;
      p(
        'record.link_broken',
        `record ${r.id} (seq ${r.seq}) does not follow the record before it (prev_hash differs): ${culprit}`,
      );
    }
    const tree = this.treeHeads.get(r.chain);
    if (tree && r.seq <= tree.size) {
      const raw = r.inclusionProof;
      const proof = Array.isArray(raw) ? raw.map((h) => Buffer.from(String(h), 'hex')) : undefined;
      if (
        proof &&
        HASH_PATTERN.test(r.hash) &&
        verifyInclusion(leafHash(Buffer.from(r.hash, 'hex')), r.seq - 1, tree.size, proof, tree.root)
      )
        s.anchoredThrough = Math.max(s.anchoredThrough ?? 0, r.seq);
      else
        p(
          'record.not_included',
          `record ${r.id} (seq ${r.seq}) is not in the signed tree of size ${tree.size} (no or a wrong inclusion proof)`,
        );
    }
    const expected = this.expectations.get(r.chain)?.get(r.seq);
    for (const e of expected ?? []) {
      e.seen = true;
      if (e.hash !== r.hash)
        p(
          'checkpoint.head_mismatch',
          `record ${r.id} (seq ${r.seq}) is not the record checkpoint ${e.checkpointId} signed at that position (rewritten history)`,
        );
      else s.anchoredThrough = Math.max(s.anchoredThrough ?? 0, r.seq);
    }
    s.records++;
    s.firstSeq ??= r.seq;
    s.lastSeq = r.seq;
    s.lastHash = r.hash;
    s.lastId = r.id;
    s.expectedSeq = Math.max(s.expectedSeq, r.seq + 1);
  }

  /**
   * addLink for records that may come out of seq order (as a hash join gives them): a record is
   * linked once the ones before it in its chain have been, the others are held until then, and
   * what is still held at the end (after a gap) is linked in seq order: the outcome is that of
   * the records in seq order. Held records cost memory only while their chain comes out of order.
   */
  addLinkInAnyOrder(r: LinkedRecord, contentMatches: boolean): void {
    if (!this.inScope(r.chain)) return;
    const s = this.state(r.chain);
    let held = this.held.get(r.chain);
    if (r.seq > s.expectedSeq) {
      if (!held) {
        held = new Map();
        this.held.set(r.chain, held);
      }
      const list = held.get(r.seq);
      if (list) list.push([r, contentMatches]);
      else held.set(r.seq, [[r, contentMatches]]);
      return;
    }
    this.addLink(r, contentMatches);
    for (let next = held?.get(s.expectedSeq); next; next = held?.get(s.expectedSeq)) {
      held!.delete(s.expectedSeq);
      for (const [h, m] of next) this.addLink(h, m);
    }
  }

  /** Links what addLinkInAnyOrder still holds: each chain's rest, in seq order, after its gap. */
  private linkHeld(): void {
    for (const held of this.held.values())
      for (const seq of [...held.keys()].sort((a, b) => a - b))
        for (const [r, m] of held.get(seq)!) this.addLink(r, m);
    this.held.clear();
  }

  finish(): AuditVerification {
    this.linkHeld();
    for (const chain of [
      ...this.heads.keys(),
      ...this.expectations.keys(),
      ...this.floors.keys(),
      ...this.windows.keys(),
    ])
      this.state(chain);
    // Retention marks must end at a head that a valid checkpoint signed.
    for (const m of this.retention) {
      const cp = this.checkpoints.get(m.checkpointId);
      const head = cp?.checkpoint.heads[m.chain];
      if (!cp?.valid || !head || head.seq !== m.throughSeq || head.hash !== m.throughHash) {
        this.state(m.chain).problems.unshift({
          code: 'retention.unverified',
          chain: m.chain,
          seq: m.throughSeq,
          checkpointId: m.checkpointId,
          message: `retention ${m.id} claims chain ${m.chain} was deleted through seq ${m.throughSeq}, but no valid checkpoint signed that head`,
        });
      }
    }
    for (const s of this.chains.values()) {
      const lastSeq = s.lastSeq ?? s.floorSeq;
      const window = this.windows.get(s.chain);
      // Checkpointed heads that never came by: the chain was truncated (or the checkpoint is beyond it).
      for (const [seq, list] of this.expectations.get(s.chain) ?? []) {
        for (const e of list) {
          if (e.seen || (window && seq > window.toSeq)) continue;
          if (seq < s.floorSeq || (seq === s.floorSeq && e.hash === s.floorHash)) continue;
          if (seq === s.floorSeq) {
            s.problems.push({
              code: 'checkpoint.head_mismatch',
              chain: s.chain,
              seq,
              checkpointId: e.checkpointId,
              message: `checkpoint ${e.checkpointId} signed chain ${s.chain} at seq ${seq} with another hash than retention kept`,
            });
          } else if (seq > lastSeq) {
            s.problems.push({
              code: 'chain.truncated',
              chain: s.chain,
              seq: lastSeq + 1,
              checkpointId: e.checkpointId,
              message: `chain ${s.chain} ends at seq ${lastSeq}, but checkpoint ${e.checkpointId} signed it up to seq ${seq}: records ${lastSeq + 1}-${seq} were deleted`,
            });
          }
          // seq within the chain but not seen: a gap, already reported as record.missing.
        }
      }
      const tree = this.treeHeads.get(s.chain);
      if (tree && !window && tree.size > lastSeq)
        s.problems.push({
          code: 'chain.truncated',
          chain: s.chain,
          seq: lastSeq + 1,
          message: `chain ${s.chain} ends at seq ${lastSeq}, but its signed tree head has ${tree.size} entries: records ${lastSeq + 1}-${tree.size} were deleted`,
        });
      const head = this.heads.get(s.chain);
      if (head && (head.seq !== lastSeq || head.hash !== s.lastHash)) {
        s.problems.push({
          code: 'head.mismatch',
          chain: s.chain,
          seq: head.seq,
          message:
            head.seq > lastSeq
              ? `chain ${s.chain} ends at seq ${lastSeq}, but its head says seq ${head.seq}: records ${lastSeq + 1}-${head.seq} were deleted`
              : `chain ${s.chain}'s head (seq ${head.seq}) does not match its last record (seq ${lastSeq})`,
        });
      }
    }
    const max = this.opts.maxProblems ?? 1000;
    const states = [...this.chains.values()].sort((a, b) =>
      a.chain < b.chain ? -1 : a.chain > b.chain ? 1 : 0,
    );
    const chains: ChainReport[] = states.map((s) => {
      const ordered = [...s.problems].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
      s.problems = ordered;
      return {
        chain: s.chain,
        records: s.records,
        firstSeq: s.firstSeq,
        lastSeq: s.lastSeq,
        lastHash: s.lastSeq === null ? null : s.lastHash,
        retainedThrough: s.floorSeq,
        anchoredThrough: s.anchoredThrough,
        ...(this.windows.has(s.chain)
          ? { window: { fromSeq: s.floorSeq + 1, toSeq: this.windows.get(s.chain)!.toSeq } }
          : {}),
        ok: ordered.length === 0,
        ...(ordered[0] ? { firstProblem: ordered[0] } : {}),
      };
    });
    const problems = [...this.globalProblems, ...states.flatMap((s) => s.problems)].slice(0, max);
    const valid = [...this.checkpoints.values()].filter((c) => c.valid).length;
    return {
      ok: problems.length === 0,
      records: this.total,
      chains,
      checkpoints: { total: this.checkpoints.size, valid, latest: this.latestCheckpoint?.id ?? null },
      problems,
      ...(problems[0] ? { firstProblem: problems[0] } : {}),
      unsequenced: this.unsequenced,
    };
  }
}
