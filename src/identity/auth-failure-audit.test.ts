import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { AuthFailureAudit } from './auth-failure-audit.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

const failure = (source: string, n: number) => ({
  source,
  code: 'token.expired',
  route: 'GET /v1/tenants',
  requestId: `r-${source}-${n}`,
  correlationId: `c-${n}`,
});

describe('audit of failed authentication', () => {
  it('keeps at most N records per source per window, and says how many it left out', async () => {
    let now = 1_000_000;
    const audit = new AuthFailureAudit(t.db, { perSource: 3, windowMs: 60_000, maxSources: 2 }, () => now);
    const flood = [];
    for (let i = 0; i < 50; i++) flood.push(await audit.record(failure('203.0.113.7', i)));
    expect(flood.filter(Boolean)).toHaveLength(3);
    // Another source has a share of its own.
    expect(await audit.record(failure('198.51.100.1', 0))).toBe(true);
    now += 60_000;
    expect(await audit.record(failure('203.0.113.7', 99))).toBe(true);
    const rows = await t.owner.query(
      `select decision from audit_records where action = 'authentication' and decision->>'source' = '203.0.113.7' order by time`,
    );
    expect(rows.rows).toHaveLength(4);
    expect(rows.rows[3].decision).toMatchObject({ code: 'token.expired', suppressed: 47 });
  });
});
