import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../domain/diff.js';
import {
  type AuditDocument,
  canonicalAuditJson,
  canonicalAuditText,
  canonicalJsonText,
  documentOf,
  GENESIS_HASH,
  hashAuditDocument,
} from './audit-hash.js';

const json = fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);
const text = fc.string({ unit: 'binary', maxLength: 40 });
const nullable = fc.option(text, { nil: null });
const doc: fc.Arbitrary<AuditDocument> = fc.record({
  v: fc.constant(1 as const),
  id: fc.uuid(),
  chain: text,
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  time: text,
  tenantId: fc.option(fc.uuid(), { nil: null }),
  appId: nullable,
  actor: fc.record({ principal: text, kind: text }),
  sessionId: nullable,
  action: text,
  target: fc.record({ kind: text, id: fc.option(fc.uuid(), { nil: null }), slug: nullable }),
  before: json,
  after: json,
  outcome: fc.constantFrom('success' as const, 'failure' as const, 'denied' as const),
  decision: json,
  requestId: text,
  correlationId: text,
  prevHash: fc.constant(GENESIS_HASH),
});

describe('audit record hashing (format v1)', () => {
  it('the fast canonical form equals canonicalJson of the document', () => {
    fc.assert(
      fc.property(doc, (d) => {
        expect(canonicalAuditJson(d)).toBe(canonicalJson(documentOf(d)));
      }),
      { numRuns: 500 },
    );
  });

  it('canonicalises JSON text as canonicalJson does the parsed value, printed as jsonb prints it or otherwise', () => {
    const anyJson = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);
    fc.assert(
      fc.property(anyJson, (v) => {
        for (const text of [jsonbText(v), JSON.stringify(v), JSON.stringify(v, null, 2)])
          expect(canonicalJsonText(text)).toBe(canonicalJson(JSON.parse(text)));
      }),
      { numRuns: 1000 },
    );
    for (const text of [
      // Numbers as PostgreSQL prints numeric, and as JSON may write them.
      '[1000000000000000000000, 1.50, -0, 0.000001, 1E2, 1e-7, 123456789012345678, -0.0, 1e400, 9007199254740993]',
      // Escapes: kept as JSON.stringify writes them, whatever form they came in.
      '["\\u00e9\\/\\"\\\\\\b\\u001f\\n", "\\ud83d\\ude00", "é\\t"]',
      // An escaped key, a key twice (the last wins), keys jsonb orders by length.
      '{"b\\u0061": 1, "a": 2}',
      '{"a": 1, "a": 2, "b": 3}',
      '{"bb": 1, "a": {"ccc": [], "dd": {}}, "": null, "é": true, "z": false}',
      ' { "x" : [ 1 , { } ] } ',
    ])
      expect(canonicalJsonText(text), text).toBe(canonicalJson(JSON.parse(text)));
    for (const bad of ['', '{', '{"a" 1}', '[1,]', '"\u0001"', 'nul', '01', '{"a":1}x'])
      expect(() => canonicalJsonText(bad), bad).toThrow(SyntaxError);
  });

  it('hashes a record of JSON text as the record of the parsed values', () => {
    fc.assert(
      fc.property(doc, (d) => {
        const text = {
          ...d,
          before: jsonbText(d.before),
          after: jsonbText(d.after),
          decision: jsonbText(d.decision),
        };
        expect(canonicalAuditText(text)).toBe(canonicalAuditJson(d));
        // Strings with nothing JSON escapes (what copyRecords checks of a row) are quoted as they are.
        const clear = <T extends string | null>(s: T): T =>
          // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it removes
          (s === null ? s : s.replace(/["\\\u0000-\u001f\ud800-\udfff]/g, '')) as T;
        const p: AuditDocument = {
          ...d,
          chain: clear(d.chain),
          time: clear(d.time),
          appId: clear(d.appId),
          actor: { principal: clear(d.actor.principal), kind: clear(d.actor.kind) },
          sessionId: clear(d.sessionId),
          action: clear(d.action),
          target: { kind: clear(d.target.kind), id: d.target.id, slug: clear(d.target.slug) },
          requestId: clear(d.requestId),
          correlationId: clear(d.correlationId),
        };
        const plain = {
          ...p,
          before: jsonbText(p.before),
          after: jsonbText(p.after),
          decision: jsonbText(p.decision),
        };
        expect(canonicalAuditText(plain, true)).toBe(canonicalAuditJson(p));
      }),
      { numRuns: 300 },
    );
  });

  it('is stable: a known record has a known hash', () => {
    const d: AuditDocument = {
      v: 1,
      id: '6846a7a4-4e09-41a8-918c-9c8e2aa938ac',
      chain: 'platform',
      seq: 1,
      time: '2026-01-02T03:04:05.123456Z',
      tenantId: null,
      appId: 'tenantry',
      actor: { principal: 'alice', kind: 'user' },
      sessionId: null,
      action: 'customer.create',
      target: { kind: 'Customer', id: '6846a7a4-4e09-41a8-918c-9c8e2aa938ac', slug: 'acme' },
      before: null,
      after: { spec: { b: 1, a: [true, null, 'x'] } },
      outcome: 'success',
      decision: null,
      requestId: 'r',
      correlationId: 'c',
      prevHash: GENESIS_HASH,
    };
    expect(canonicalAuditJson(d)).toBe(
      '{"action":"customer.create","actor":{"kind":"user","principal":"alice"},"after":{"spec":{"a":[true,null,"x"],"b":1}},' +
        '"appId":"tenantry","before":null,"chain":"platform","correlationId":"c","decision":null,"id":"6846a7a4-4e09-41a8-918c-9c8e2aa938ac",' +
        `"outcome":"success","prevHash":"${GENESIS_HASH}","requestId":"r","seq":1,"sessionId":null,` +
        '"target":{"id":"6846a7a4-4e09-41a8-918c-9c8e2aa938ac","kind":"Customer","slug":"acme"},"tenantId":null,' +
        '"time":"2026-01-02T03:04:05.123456Z","v":1}',
    );
    expect(hashAuditDocument(d)).toMatch(/^[0-9a-f]{64}$/);
    // Every field counts.
    for (const change of [
      { seq: 2 },
      { id: randomUUID() },
      { chain: 'x' },
      { time: '2026-01-02T03:04:05.123457Z' },
      { tenantId: randomUUID() },
      { appId: 'other' },
      { actor: { principal: 'alice', kind: 'service' } },
      { sessionId: 's' },
      { action: 'customer.update' },
      { target: { kind: 'Customer', id: null, slug: 'acme' } },
      { before: {} },
      { outcome: 'denied' as const },
      { decision: { allowed: true } },
      { requestId: 'r2' },
      { correlationId: 'c2' },
    ])
      expect(hashAuditDocument({ ...d, ...change }), JSON.stringify(change)).not.toBe(hashAuditDocument(d));
    expect(hashAuditDocument({ ...d, prevHash: 'f'.repeat(64) })).not.toBe(hashAuditDocument(d));
    expect(hashAuditDocument({ ...d, after: { spec: { a: [true, null, 'x'], b: 2 } } })).not.toBe(
      hashAuditDocument(d),
    );
  });
});

/**
 * A value printed as PostgreSQL prints jsonb: object keys ordered by length, then bytes; `": "`
 * and `", "` between members. (What verify meets; src/audit/audit-tamper.test.ts reads the real thing.)
 */
function jsonbText(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(jsonbText).join(', ')}]`;
  if (typeof v !== 'object' || v === null) return JSON.stringify(v);
  const bytes = (k: string) => Buffer.from(k, 'utf8');
  const keys = Object.keys(v).sort(
    (a, b) => bytes(a).length - bytes(b).length || Buffer.compare(bytes(a), bytes(b)),
  );
  return `{${keys.map((k) => `${JSON.stringify(k)}: ${jsonbText((v as Record<string, unknown>)[k])}`).join(', ')}}`;
}
