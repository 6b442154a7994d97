import fc from 'fast-check';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { auditTime } from './copy-records.js';

let t: TestDatabase;
let client: pg.PoolClient;

beforeAll(async () => {
  t = await createTestDatabase();
  client = await t.owner.connect();
  // As copyRecords reads the time; the session's own zone must not matter to tenantry_audit_time.
  await client.query("set timezone = 'UTC'; set datestyle = 'ISO, YMD'");
});
afterAll(async () => {
  client?.release();
  await t?.destroy();
});

/** [printed, tenantry_audit_time] of each timestamptz literal, from the database. */
async function both(literals: string[]): Promise<[string, string | null][]> {
  const { rows } = await client.query<{ printed: string; hashed: string | null }>(
    'select t::text as printed, tenantry_audit_time(t) as hashed from unnest($1::timestamptz[]) with ordinality u(t, i) order by i',
    [literals],
  );
  return rows.map((r) => [r.printed, r.hashed]);
}

describe('the time verify hashes (auditTime)', () => {
  it('is what tenantry_audit_time gives, from the timestamptz as PostgreSQL prints it in UTC', async () => {
    const edges = [
      '2026-01-02 03:04:05.123456+00',
      '2026-01-02 03:04:05+00', // microseconds 0: no fraction printed
      '2026-01-02 03:04:05.1+00', // trailing zeros dropped
      '2026-01-02 03:04:05.000001+00',
      '2024-02-29 23:59:59.999999+00', // leap year
      '2000-02-29 00:00:00+00',
      '1900-03-01 00:00:00+00',
      '2026-03-29 01:30:00+02', // another zone, converted
      '2026-10-25 02:30:00.5-09:30',
      '1969-12-31 23:59:59.999999+00', // before the epoch
      '1999-12-31 23:59:59.5+14',
      '0999-12-31 23:59:59.999999+00', // a three-digit year
      '0001-01-01 00:00:00+00',
      '0001-12-31 23:59:59+00 BC', // year 0 of the proleptic calendar
      '0044-03-15 12:00:00.25+00 BC',
      '4713-01-01 00:00:00+00 BC', // the earliest timestamptz
      '9999-12-31 23:59:59.999999+00',
      '10000-01-01 00:00:00.12345+00', // five digits of year, five of fraction: as long as the common case
      '294276-12-31 23:59:59.999999+00', // the latest
      'infinity',
      '-infinity',
    ];
    for (const [printed, hashed] of await both(edges)) expect(auditTime(printed), printed).toBe(hashed);
    // Any instant from 4713 BC to 294276 AD: days from 2000-01-01 and microseconds into the day.
    const instants = fc.sample(
      fc.tuple(
        fc.integer({ min: -2_451_000, max: 106_700_000 }),
        fc.integer({ min: 0, max: 86_399_999_999 }),
      ),
      2000,
    );
    const { rows } = await client.query<{ printed: string; hashed: string }>(
      `select t::text as printed, tenantry_audit_time(t) as hashed
       from unnest($1::int[], $2::bigint[]) u(d, us),
         lateral (select timestamptz '2000-01-01 00:00:00+00' + d * interval '1 day' + us * interval '1 microsecond' as t) v`,
      [instants.map(([d]) => d), instants.map(([, us]) => us)],
    );
    expect(rows).toHaveLength(2000);
    for (const r of rows) expect(auditTime(r.printed), r.printed).toBe(r.hashed);
  });
});
