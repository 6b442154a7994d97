import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropDataplane } from '../../test/helpers/controller.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { defaultDataplaneUrl, type ProviderSet } from '../controller/providers.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import type { DesiredResource } from '../providers/provider.js';
import { secretCipherFor } from '../secrets/index.js';
import { localOpener, openSealed, RegionDataPlane, sealToOf } from './region-dataplane.js';

let t: TestDatabase;
let provider: PostgresDatabaseProvider;
let dataplane: string;
const run = randomBytes(6).toString('hex');

beforeAll(async () => {
  t = await createTestDatabase();
  dataplane = defaultDataplaneUrl(t.ownerUrl);
  provider = new PostgresDatabaseProvider(dataplane, new SecretStore(t.db, secretCipherFor(t.db, t.config)));
});
afterAll(async () => {
  await provider?.close();
  await dropDataplane(t);
  await t?.destroy();
});

describe("a region migration's reader", () => {
  it('keeps reading a live pool schema after the provider repairs its drift (which takes foreign grants away)', async () => {
    const scopeSlug = `rd${run}-eu-dev`;
    const desired: DesiredResource = {
      id: randomUUID(),
      type: 'database',
      tenantId: randomUUID(),
      tenantSlug: scopeSlug,
      scopeSlug,
      physicalName: `t_${scopeSlug.replace(/-/g, '_')}`,
      database: { isolation: 'pool' },
    };
    const schema = desired.physicalName;
    await provider.ensure(desired);
    const owner = new pg.Client({ connectionString: dataplane });
    await owner.connect();
    const database = new URL(dataplane).pathname.slice(1);
    // Only the provider's ensure is used: openReader and readerLacks reach nothing else.
    const side = new RegionDataPlane({
      dataplaneUrl: () => dataplane,
      providers: {} as ProviderSet,
      region: 'eu',
    });
    const name = `tenantry_r_${run}_0`;
    try {
      // The pool schema is the provider's (owned by the data plane's role), the table too here.
      await owner.query(`create table ${schema}.orders (id bigint primary key);
        insert into ${schema}.orders select generate_series(1, 5)`);
      const at = { database, schema, name };
      const opener = await localOpener();
      const sealed = await side.openReader({ ...at, publish: false, sealTo: sealToOf(opener) });
      const connection = await openSealed(opener, sealed.connection, name);
      expect((await provider.ensure(desired)).drift).toEqual([]);
      expect(await side.readerLacks({ ...at, tables: ['orders'] })).toEqual({ lacks: [] });
      const reader = new pg.Client({ connectionString: connection });
      await reader.connect();
      try {
        const r = await reader.query(`select count(*)::int as n from ${schema}.orders`);
        expect(r.rows[0].n).toBe(5);
      } finally {
        await reader.end();
      }
      // What it lacks, named, when something takes it away all the same.
      await owner.query(`revoke usage on schema ${schema} from ${name}`);
      await owner.query(`revoke select on ${schema}.orders from ${name}`);
      expect(await side.readerLacks({ ...at, tables: ['orders'] })).toEqual({
        lacks: [`USAGE on schema ${schema}`, `SELECT on ${schema}.orders`],
      });
      await side.closeReader({ ...at, tables: [] });
    } finally {
      await owner.end();
      await provider.delete(desired);
    }
  });
});
