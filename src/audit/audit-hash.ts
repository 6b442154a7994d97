import { hash } from 'node:crypto';

/**
 * The hashed form of one audit record (format v1). Every field is part of the hash, including the
 * chain position (`chain`, `seq`) and the previous record's hash, so changing, removing, inserting
 * or reordering a record breaks the chain from that record on. Pure: no I/O.
 *
 * Format v1 is frozen: migrations and exported files depend on it. A new format gets a new `v`.
 */
export interface AuditDocument {
  v: 1;
  id: string;
  /** The tenant id, or 'platform' for records that belong to no tenant. */
  chain: string;
  /** Gap-free position in the chain, from 1. */
  seq: number;
  /** UTC, microseconds: `2026-01-02T03:04:05.123456Z`. */
  time: string;
  tenantId: string | null;
  appId: string | null;
  actor: { principal: string; kind: string };
  sessionId: string | null;
  action: string;
  target: { kind: string; id: string | null; slug: string | null };
  before: unknown;
  after: unknown;
  outcome: AuditOutcome;
  decision: unknown;
  requestId: string;
  correlationId: string;
  prevHash: string;
}

export type AuditOutcome = 'success' | 'failure' | 'denied';

/** A record as stored and exported: the hashed document and its hash. */
export interface AuditRecord extends AuditDocument {
  hash: string;
}

export const PLATFORM_CHAIN = 'platform';
/** The `prevHash` of the first record of every chain. */
export const GENESIS_HASH = '0'.repeat(64);
export const HASH_PATTERN = /^[0-9a-f]{64}$/;

export const chainOf = (tenantId: string | null): string => tenantId ?? PLATFORM_CHAIN;

export function hashAuditDocument(doc: AuditDocument): string {
  return hash('sha256', canonicalAuditJson(doc), 'hex');
}

const str = (s: string | null): string => (s === null ? 'null' : JSON.stringify(s));

/**
 * `canonicalJson(documentOf(doc))`, written out for the fixed shape of format v1 (keys in sorted
 * order) so that verifying a million records is not dominated by sorting the same keys again;
 * the free-form values (before, after, decision) go through canonicalValue. A property test holds
 * the two equal.
 */
export function canonicalAuditJson(r: AuditDocument): string {
  return (
    `{"action":${str(r.action)},"actor":{"kind":${str(r.actor.kind)},"principal":${str(r.actor.principal)}}` +
    `,"after":${canonicalValue(r.after)},"appId":${str(r.appId)},"before":${canonicalValue(r.before)},"chain":${str(r.chain)}` +
    `,"correlationId":${str(r.correlationId)},"decision":${canonicalValue(r.decision)},"id":${str(r.id)}` +
    `,"outcome":${str(r.outcome)},"prevHash":${str(r.prevHash)},"requestId":${str(r.requestId)}` +
    `,"seq":${JSON.stringify(r.seq)},"sessionId":${str(r.sessionId)}` +
    `,"target":{"id":${str(r.target.id)},"kind":${str(r.target.kind)},"slug":${str(r.target.slug)}}` +
    `,"tenantId":${str(r.tenantId)},"time":${str(r.time)},"v":1}`
  );
}

/** Object keys as JSON strings, kept: a verification meets the same few keys a million times. */
const keyTexts = new Map<string, string>();

/**
 * canonicalJson (src/domain/diff.ts), for the free-form values of a record: the same output
 * (the property test above canonicalAuditJson holds them equal), without sorting keys that already
 * come sorted and without stringifying the same key again.
 */
function canonicalValue(value: unknown): string {
  if (typeof value !== 'object' || value === null) return JSON.stringify(value ?? null);
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + canonicalValue(value[i]);
    return `${out}]`;
  }
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object);
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) {
      keys.sort();
      break;
    }
  }
  let out = '{';
  for (const k of keys) {
    const v = object[k];
    if (v === undefined) continue;
    let text = keyTexts.get(k);
    if (text === undefined) {
      text = JSON.stringify(k);
      if (keyTexts.size < 10_000) keyTexts.set(k, text);
    }
    out += `${out.length === 1 ? '' : ','}${text}:${canonicalValue(v)}`;
  }
  return `${out}}`;
}

/** Exactly the fields of format v1, whatever else the value carries (e.g. `hash`). */
export function documentOf(r: AuditDocument): AuditDocument {
  return {
    v: 1,
    id: r.id,
    chain: r.chain,
    seq: r.seq,
    time: r.time,
    tenantId: r.tenantId,
    appId: r.appId,
    actor: { principal: r.actor.principal, kind: r.actor.kind },
    sessionId: r.sessionId,
    action: r.action,
    target: { kind: r.target.kind, id: r.target.id, slug: r.target.slug },
    before: r.before,
    after: r.after,
    outcome: r.outcome,
    decision: r.decision,
    requestId: r.requestId,
    correlationId: r.correlationId,
    prevHash: r.prevHash,
  };
}

/**
 * JSON values as they come back from a jsonb column: what is hashed must be what is stored, so a
 * value is normalised through JSON before hashing (undefined members dropped, dates as strings).
 */
export function jsonValue(value: unknown): unknown {
  if (value === undefined) return null;
  return JSON.parse(JSON.stringify(value));
}
