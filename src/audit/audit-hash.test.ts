import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../domain/diff.js';
import {
  type AuditDocument,
  canonicalAuditJson,
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
