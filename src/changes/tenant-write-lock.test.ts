import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { asPlatform } from '../db/database.js';
import { lockTenantsWrites, lockTenantWrites } from './tenant-write-lock.js';

/**
 * lockTenantsWrites (a promotion batch's roll-out): every tenant's write lock in one round trip,
 * held to the transaction's end, exclusive unless asked shared; tenants outside the batch are free.
 */
let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

/** The tenant write locks other sessions hold on `chains`, and how (the lock space of tenant-write-lock.ts). */
const holders = async (chains: string[]) =>
  (
    await t.owner.query<{ chain: string; mode: string }>(
      `select c.chain, l.mode from unnest($1::text[]) as c(chain)
       join pg_locks l on l.locktype = 'advisory' and l.granted and l.classid = x'74656e01'::int
         and l.objid = hashtext(c.chain)::oid order by c.chain`,
      [chains],
    )
  ).rows;

describe('lockTenantsWrites', () => {
  it('takes each tenant’s write lock to the end of the transaction, exclusive; others stay free', async () => {
    const batch = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const other = randomUUID();
    let during: { chain: string; mode: string }[] = [];
    await asPlatform(t.db, async (trx) => {
      // Duplicates and a lock already held count once.
      await lockTenantWrites(trx, batch[0]!);
      await lockTenantsWrites(trx, [...batch, batch[1]!]);
      during = await holders([...batch, other]);
    });
    expect(during).toEqual([...batch].sort().map((chain) => ({ chain, mode: 'ExclusiveLock' })));
    expect(await holders(batch)).toEqual([]);
  });

  it('takes them shared when asked, so two such transactions run side by side', async () => {
    const batch = [randomUUID(), randomUUID()];
    let during: { chain: string; mode: string }[] = [];
    await asPlatform(t.db, (a) =>
      asPlatform(t.db, async (b) => {
        await lockTenantsWrites(a, batch, 'change');
        await lockTenantsWrites(b, batch, 'change');
        during = await holders(batch);
        await sql`select 1`.execute(a);
      }),
    );
    expect(during.map((h) => h.mode)).toEqual(['ShareLock', 'ShareLock', 'ShareLock', 'ShareLock']);
  });
});
