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

/**
 * A record whose free-form values (before, after, decision) are still JSON text, as a `COPY` of the
 * jsonb columns gives them (SQL NULL as `null`): what `verify` reads.
 */
export type AuditDocumentText = Omit<AuditDocument, 'before' | 'after' | 'decision'> & {
  before: string;
  after: string;
  decision: string;
};

/**
 * hashAuditDocument of the document the text stands for, without parsing its JSON. `plainStrings`:
 * the caller knows that no string field holds a quote, a backslash or a control character, so each
 * is written between quotes as it is.
 */
export function hashAuditText(doc: AuditDocumentText, plainStrings = false): string {
  return hash('sha256', canonicalAuditText(doc, plainStrings), 'hex');
}

const str = (s: string | null): string => (s === null ? 'null' : JSON.stringify(s));
const quoted = (s: string | null): string => (s === null ? 'null' : `"${s}"`);

/**
 * `canonicalJson(documentOf(doc))`, written out for the fixed shape of format v1 (keys in sorted
 * order) so that verifying a million records is not dominated by sorting the same keys again;
 * the free-form values (before, after, decision) go through canonicalValue. A property test holds
 * the two equal.
 */
export function canonicalAuditJson(r: AuditDocument): string {
  return canonicalForm(r, canonicalValue, str);
}

/** canonicalAuditJson of the document the text stands for (its values through canonicalJsonText). */
export function canonicalAuditText(r: AuditDocumentText, plainStrings = false): string {
  return canonicalForm(r, canonicalJsonText, plainStrings ? quoted : str);
}

function canonicalForm<T extends AuditDocument | AuditDocumentText>(
  r: T,
  value: (v: T['before']) => string,
  str: (s: string | null) => string,
): string {
  return (
    `{"action":${str(r.action)},"actor":{"kind":${str(r.actor.kind)},"principal":${str(r.actor.principal)}}` +
    `,"after":${value(r.after)},"appId":${str(r.appId)},"before":${value(r.before)},"chain":${str(r.chain)}` +
    `,"correlationId":${str(r.correlationId)},"decision":${value(r.decision)},"id":${str(r.id)}` +
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

/**
 * `canonicalValue(JSON.parse(text))` for the JSON text of a value, computed from the text itself: how
 * `verify` canonicalises jsonb as PostgreSQL prints it (keys ordered by length, `": "` and `", "`
 * between members) without building the value. jsonb escapes strings as JSON.stringify does
 * (`\"`, `\\`, `\b \f \n \r \t`, other control characters as lower-case `\u00xx`), so a
 * string is copied as it is; keys are put back in the canonical (UTF-16) order; numbers are written
 * as JavaScript writes them. Anything out of the ordinary (an escaped key, a key twice) takes the
 * reference path, and so does a string with an escape (normalised through JSON), so the result
 * is that of the reference for any JSON text. A property test holds the two equal.
 */
export function canonicalJsonText(text: string): string {
  src = text;
  at = 0;
  try {
    const out = scanValue();
    skipSpace();
    if (at !== src.length) throw UNUSUAL;
    return out;
  } catch (err) {
    if (err !== UNUSUAL) throw err;
    return canonicalValue(JSON.parse(text));
  } finally {
    src = '';
  }
}

/** The text being scanned by canonicalJsonText, and the position in it. */
let src = '';
let at = 0;
const UNUSUAL = new Error('JSON text outside the fast path');
/** A JSON number as JavaScript prints it already: an integer of at most 15 digits, no sign of zero. */
const PLAIN_INTEGER = /^(?:0|-?[1-9][0-9]{0,14})$/;

function skipSpace(): void {
  for (;;) {
    const c = src.charCodeAt(at);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) at++;
    else return;
  }
}

function scanValue(): string {
  skipSpace();
  switch (src.charCodeAt(at)) {
    case 0x7b: // {
      return scanObject();
    case 0x5b: // [
      return scanArray();
    case 0x22: {
      // "
      const start = at;
      if (scanString()) return JSON.stringify(JSON.parse(src.slice(start, at)));
      return src.slice(start, at);
    }
    case 0x74: // t
      return scanWord('true');
    case 0x66: // f
      return scanWord('false');
    case 0x6e: // n
      return scanWord('null');
    default:
      return scanNumber();
  }
}

function scanWord(word: string): string {
  if (!src.startsWith(word, at)) throw UNUSUAL;
  at += word.length;
  return word;
}

function scanNumber(): string {
  const start = at;
  for (;;) {
    const c = src.charCodeAt(at);
    // digits, + - . e E
    if ((c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45) at++;
    else break;
  }
  const token = src.slice(start, at);
  if (PLAIN_INTEGER.test(token)) return token;
  if (!/^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/.test(token)) throw UNUSUAL;
  return JSON.stringify(Number(token));
}

/** Moves past the string at `at` (its opening quote); whether it holds an escape. */
function scanString(): boolean {
  let escaped = false;
  for (let i = at + 1; ; i++) {
    const c = src.charCodeAt(i);
    if (c === 0x22) {
      at = i + 1;
      return escaped;
    }
    if (c === 0x5c) {
      escaped = true;
      i++;
    } else if (c < 0x20 || Number.isNaN(c)) throw UNUSUAL; // a raw control character, or the end
  }
}

/** Moves past the opening bracket at `at`; whether the closing one (`close`) follows it. */
function opensEmpty(close: number): boolean {
  at++;
  skipSpace();
  if (src.charCodeAt(at) !== close) return false;
  at++;
  return true;
}

function scanArray(): string {
  if (opensEmpty(0x5d)) return '[]';
  let out = '[';
  for (;;) {
    out += scanValue();
    skipSpace();
    const c = src.charCodeAt(at++);
    if (c === 0x5d) return `${out}]`;
    if (c !== 0x2c) throw UNUSUAL;
    out += ',';
  }
}

function scanObject(): string {
  if (opensEmpty(0x7d)) return '{}';
  const keys: string[] = [];
  const values: string[] = [];
  let sorted = true;
  for (;;) {
    skipSpace();
    if (src.charCodeAt(at) !== 0x22) throw UNUSUAL;
    const start = at;
    if (scanString()) throw UNUSUAL;
    const key = src.slice(start + 1, at - 1);
    const last = keys.length === 0 ? undefined : keys[keys.length - 1]!;
    if (last !== undefined && last >= key) sorted = false;
    keys.push(key);
    skipSpace();
    if (src.charCodeAt(at++) !== 0x3a) throw UNUSUAL;
    values.push(scanValue());
    skipSpace();
    const c = src.charCodeAt(at++);
    if (c === 0x7d) break;
    if (c !== 0x2c) throw UNUSUAL;
  }
  // jsonb orders keys by length first: put them in UTF-16 order (insertion sort: objects are small).
  if (!sorted) {
    for (let i = 1; i < keys.length; i++) {
      const key = keys[i]!;
      const value = values[i]!;
      let j = i - 1;
      for (; j >= 0 && keys[j]! > key; j--) {
        keys[j + 1] = keys[j]!;
        values[j + 1] = values[j]!;
      }
      if (j >= 0 && keys[j] === key) throw UNUSUAL; // a key twice: JSON.parse keeps the last
      keys[j + 1] = key;
      values[j + 1] = value;
    }
  }
  let out = `{"${keys[0]}":${values[0]}`;
  for (let i = 1; i < keys.length; i++) out += `,"${keys[i]}":${values[i]}`;
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
