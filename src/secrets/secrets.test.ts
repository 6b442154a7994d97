import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Kysely, Migrator, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { asPlatform, createDb, ensureAppRole, ensurePlatformRole } from '../db/database.js';
import { migrationProviderWith } from '../db/migrations/index.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { openSecrets } from '../webhooks/webhook-secret-sealing.js';
import { kekIdsInUse } from './data-keys.js';
import { LocalFileKeyProvider } from './local-file-key-provider.js';
import { rewrapDataKeys } from './rotate-kek.js';
import { isSealed, SecretCipher } from './secret-cipher.js';

let t: TestDatabase;
let dir: string;
beforeAll(async () => {
  t = await createTestDatabase();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-kek-'));
});
afterAll(async () => {
  await t?.destroy();
  await fs.rm(dir, { recursive: true, force: true });
});

const cipherOf = (keys: LocalFileKeyProvider) =>
  new SecretCipher(keys, (work) => asPlatform(t.db, (trx) => work(trx)));

describe('the local key file', () => {
  it('is generated once, mode 0600, and two processes starting together share it', async () => {
    const file = path.join(dir, 'first', 'kek.json');
    const [a, b] = [new LocalFileKeyProvider(file), new LocalFileKeyProvider(file)];
    const [ida, idb] = await Promise.all([a.currentKeyId(), b.currentKeyId()]);
    expect(ida).toBe(idb);
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    const doc = JSON.parse(await fs.readFile(file, 'utf8'));
    expect(Buffer.from(doc.keys[ida], 'base64')).toHaveLength(32);
  });
});

describe('envelope encryption', () => {
  const A = randomUUID();
  const B = randomUUID();
  let cipher: SecretCipher;
  beforeAll(() => {
    cipher = cipherOf(new LocalFileKeyProvider(path.join(dir, 'env', 'kek.json')));
  });

  it('seals with AES-256-GCM under a data key of the tenant, and opens again', async () => {
    const sealed = await cipher.seal('hunter2-secret', { tenantId: A, row: 'resource_secrets/r1' });
    expect(isSealed(sealed)).toBe(true);
    expect(sealed).not.toContain('hunter2');
    expect(await cipher.open(sealed, { tenantId: A, row: 'resource_secrets/r1' })).toBe('hunter2-secret');
    // Two seals of one value differ (a fresh IV each).
    expect(await cipher.seal('hunter2-secret', { tenantId: A, row: 'resource_secrets/r1' })).not.toBe(sealed);
    // One data key per tenant, wrapped, readable only in the platform scope.
    await cipher.seal('x', { tenantId: B, row: 'resource_secrets/r2' });
    await cipher.seal('x', { tenantId: null, row: 'webhook_endpoints/p/x' });
    const keys = await t.owner.query(
      `select tenant_id, length(wrapped) as n from data_keys order by tenant_id`,
    );
    expect(keys.rows.map((r) => r.tenant_id).sort()).toEqual([A, B, null].sort());
    expect(keys.rows.every((r) => r.n === 12 + 16 + 32)).toBe(true);
  });

  it('refuses a ciphertext copied to another row, another tenant, or altered', async () => {
    const sealed = await cipher.seal('s3cr3t', { tenantId: A, row: 'resource_secrets/r1' });
    await expect(cipher.open(sealed, { tenantId: A, row: 'resource_secrets/r9' })).rejects.toThrow();
    await expect(cipher.open(sealed, { tenantId: B, row: 'resource_secrets/r1' })).rejects.toThrow();
    await expect(cipher.open(sealed, { tenantId: null, row: 'resource_secrets/r1' })).rejects.toThrow();
    const body = sealed.split('.')[2]!;
    const flipped = Buffer.from(body, 'base64url');
    flipped[flipped.length - 1]! ^= 1;
    const altered = sealed.replace(body, flipped.toString('base64url'));
    await expect(cipher.open(altered, { tenantId: A, row: 'resource_secrets/r1' })).rejects.toThrow();
    // B's data key id spliced into A's ciphertext: the key belongs to another tenant.
    const ofB = await cipher.seal('s3cr3t', { tenantId: B, row: 'resource_secrets/r1' });
    const spliced = `tenc1.${ofB.split('.')[1]}.${body}`;
    await expect(cipher.open(spliced, { tenantId: A, row: 'resource_secrets/r1' })).rejects.toThrow();
  });

  it('refuses a wrapped data key moved to another tenant', async () => {
    const keys = new LocalFileKeyProvider(path.join(dir, 'env', 'kek.json'));
    const sealed = await cipher.seal('moved', { tenantId: A, row: 'x/1' });
    await t.owner.query(
      `update data_keys set wrapped = (select wrapped from data_keys where tenant_id = $1) where tenant_id = $2`,
      [A, B],
    );
    const fresh = cipherOf(keys); // nothing cached
    await expect(fresh.seal('y', { tenantId: B, row: 'x/2' })).rejects.toThrow();
    expect(await fresh.open(sealed, { tenantId: A, row: 'x/1' })).toBe('moved');
  });
});

describe('KEK rotation', () => {
  it('re-wraps every data key without re-encrypting; old ciphertexts stay readable, running ciphers too', async () => {
    await t.owner.query('delete from data_keys');
    const file = path.join(dir, 'rot', 'kek.json');
    const keys = new LocalFileKeyProvider(file);
    const running = cipherOf(keys);
    const tenants = [randomUUID(), randomUUID(), randomUUID()];
    const sealed = await Promise.all(
      tenants.map((id) => running.seal(`pw-${id}`, { tenantId: id, row: 'r/1' })),
    );
    const before = await keys.currentKeyId();
    const wrappedBefore = await t.owner.query('select id, wrapped from data_keys order by id');

    // Another process (the CLI) rotates: a new current KEK in the file, then re-wraps.
    const ops = new LocalFileKeyProvider(file);
    const after = await ops.rotate();
    expect(after).not.toBe(before);
    const result = await rewrapDataKeys(ops, (work) => withOwner(work));
    expect(result).toEqual({ keyId: after, rewrapped: 3, inUse: [after] });
    const wrappedAfter = await t.owner.query('select id, key_id, wrapped from data_keys order by id');
    expect(wrappedAfter.rows.every((r) => r.key_id === after)).toBe(true);
    expect(wrappedAfter.rows.map((r) => r.wrapped.toString('hex'))).not.toEqual(
      wrappedBefore.rows.map((r) => r.wrapped.toString('hex')),
    );
    // Running again re-wraps nothing.
    expect((await rewrapDataKeys(ops, (work) => withOwner(work))).rewrapped).toBe(0);

    // The running process (its KEK file loaded before the rotation) keeps opening and sealing;
    // after the old KEK is retired, a process started now (nothing cached) opens the old ciphertexts.
    for (const [i, id] of tenants.entries())
      expect(await running.open(sealed[i]!, { tenantId: id, row: 'r/1' })).toBe(`pw-${id}`);
    const newTenant = randomUUID();
    const later = await running.seal('later', { tenantId: newTenant, row: 'r/1' });
    const retired = await ops.retire(await withOwner((db) => kekIdsInUse(db)));
    expect(retired).toEqual([before]);
    expect(
      await cipherOf(new LocalFileKeyProvider(file)).open(later, { tenantId: newTenant, row: 'r/1' }),
    ).toBe('later');
    const restarted = cipherOf(new LocalFileKeyProvider(file));
    for (const [i, id] of tenants.entries())
      expect(await restarted.open(sealed[i]!, { tenantId: id, row: 'r/1' })).toBe(`pw-${id}`);
    expect(Object.keys(JSON.parse(await fs.readFile(file, 'utf8')).keys)).toEqual([after]);
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
  });
});

const dialectOf = (url: string) =>
  new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) });
async function withOwner<T>(work: (db: Kysely<unknown>) => Promise<T>): Promise<T> {
  const db = new Kysely<unknown>({ dialect: dialectOf(t.ownerUrl) });
  try {
    return await work(db);
  } finally {
    await db.destroy();
  }
}

describe('migration 0019 on a database with secrets in clear', () => {
  const name = `test_sec_${randomBytes(5).toString('hex')}`;
  let ownerUrl: string;
  let owner: pg.Pool;
  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: inject('serverUrl') });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    const url = new URL(inject('serverUrl'));
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

  async function migrateTo(target: string, keys: LocalFileKeyProvider | undefined) {
    const db = new Kysely<unknown>({ dialect: dialectOf(ownerUrl) });
    try {
      const migrator = new Migrator({
        db,
        provider: migrationProviderWith(keys),
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

  it('seals every stored secret, refuses to run without the key, and the application opens them', async () => {
    await migrateTo('0016-workflow-freezes', undefined);
    const tenant = randomUUID();
    const resource = randomUUID();
    const endpoint = randomUUID();
    const password = `pw-${randomBytes(12).toString('hex')}`;
    const whsec = `whsec_${randomBytes(32).toString('base64')}`;
    await owner.query(
      `insert into resource_secrets (tenant_id, resource_id, name, value) values ($1, $2, 'r', $3)`,
      [tenant, resource, JSON.stringify({ username: 'r', password })],
    );
    await owner.query(
      `insert into webhook_endpoints (id, tenant_id, name, slug, spec, secrets) values ($1, null, 'ops', 'ops', '{}', $2)`,
      [endpoint, JSON.stringify([{ secret: whsec, fingerprint: 'ref:sha256:1', notAfter: null }])],
    );
    await expect(migrateTo('latest', undefined)).rejects.toThrow(/key-encryption key/);
    const file = path.join(dir, 'mig', 'kek.json');
    await migrateTo('latest', new LocalFileKeyProvider(file));

    const dump = await owner.query(`select row_to_json(r)::text as j from resource_secrets r
      union all select row_to_json(w)::text from webhook_endpoints w`);
    const text = dump.rows.map((r) => r.j).join('\n');
    expect(text).not.toContain(password);
    expect(text).not.toContain(whsec.slice('whsec_'.length));
    const db = createDb(await ensureAppRole(ownerUrl), 2, {
      platformUrl: await ensurePlatformRole(ownerUrl),
    });
    try {
      const cipher = new SecretCipher(new LocalFileKeyProvider(file), (work) =>
        asPlatform(db, (trx) => work(trx)),
      );
      expect(await new SecretStore(db, cipher).get(resource)).toEqual({ username: 'r', password });
      const stored = await asPlatform(db, (trx) =>
        sql<{ secrets: never[] }>`select secrets from webhook_endpoints where id = ${endpoint}`.execute(trx),
      );
      const opened = await openSecrets(cipher, stored.rows[0]!.secrets, {
        tenantId: null,
        slug: 'ops',
      });
      expect(opened.map((s) => s.secret)).toEqual([whsec]);
    } finally {
      await db.destroy();
    }
  });
});
