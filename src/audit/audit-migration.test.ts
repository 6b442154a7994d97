import { randomBytes, randomUUID } from 'node:crypto';
import { Kysely, Migrator, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDb, ensureAppRole, ensurePlatformRole } from '../db/database.js';
import { migrationProvider } from '../db/migrations/index.js';
import { verifyAudit } from './verify-audit.js';

const name = `test_mig_${randomBytes(5).toString('hex')}`;
let ownerUrl: string;
let owner: pg.Pool;

beforeAll(async () => {
  const serverUrl = inject('serverUrl');
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  ownerUrl = url.toString();
  owner = new pg.Pool({ connectionString: ownerUrl, max: 2 });
});
afterAll(async () => {
  await owner?.end();
  const admin = new pg.Client({ connectionString: inject('serverUrl') });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
});

async function migrateTo(target: string | 'latest') {
  const db = new Kysely<unknown>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: ownerUrl, max: 1 }) }),
  });
  try {
    const migrator = new Migrator({
      db,
      provider: migrationProvider,
      migrationTableName: 'tenantry_migrations',
      migrationLockTableName: 'tenantry_migrations_lock',
    });
    const { error } =
      target === 'latest' ? await migrator.migrateToLatest() : await migrator.migrateTo(target);
    if (error) throw error;
  } finally {
    await db.destroy();
  }
}

describe('migration 0002 on a database with audit records', () => {
  it('chains the records written before it, per tenant, in time order', async () => {
    await migrateTo('0001-registry');
    const tenant = randomUUID();
    for (const [i, t] of [tenant, null, tenant, tenant, null].entries()) {
      await owner.query(
        `insert into audit_records (id, time, tenant_id, actor_principal, actor_kind, action, target_kind, target_id,
           before, after, outcome, request_id, correlation_id)
         values ($1, now() + make_interval(secs => $2), $3, 'legacy', 'user', 'tenant.update', 'Tenant', $3,
           'null', $4, 'success', 'r', 'c')`,
        [randomUUID(), i, t, JSON.stringify({ i, nested: { z: 1, a: [1.5, 'x'] } })],
      );
    }
    await migrateTo('latest');
    const { rows } = await owner.query(
      `select p.chain, p.seq::int from audit_records a join audit_positions p on p.record_id = a.id order by a.time`,
    );
    expect(rows).toEqual([
      { chain: tenant, seq: 1 },
      { chain: 'platform', seq: 1 },
      { chain: tenant, seq: 2 },
      { chain: tenant, seq: 3 },
      { chain: 'platform', seq: 2 },
    ]);
    const db = createDb(await ensureAppRole(ownerUrl), 2, {
      platformUrl: await ensurePlatformRole(ownerUrl),
    });
    try {
      const v = await verifyAudit(db, { publicKeys: [] });
      expect(v.problems).toEqual([]);
      expect(v.records).toBe(5);
    } finally {
      await db.destroy();
    }
  });
});
