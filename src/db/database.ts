import { createHmac } from 'node:crypto';
import { Kysely, Migrator, PostgresDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import type { KeyProvider } from '../secrets/key-provider.js';
import { guardClient, guardPool } from './connection-errors.js';
import { deferBegin } from './deferred-begin.js';
import { migrationProvider, migrationProviderWith } from './migrations/index.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;
export type Trx = Transaction<Database>;

// int8 and numeric come back as strings by default; counts and generations fit in a JS number.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => v);

const pools = new WeakMap<Db, pg.Pool>();
const platformDbs = new WeakMap<Db, Db>();

const INT8 = 20;

/**
 * bigint (int8) columns are counters (generations, sequence numbers, versions, counts): parsed once,
 * here, to a number. One past 2^53 cannot be a real count and fails the query instead of losing digits.
 */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`bigint ${text} is beyond the safe integer range`);
  return n;
}
const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8 && format !== 'binary'
      ? parseInt8
      : pg.types.getTypeParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * A Db over `connectionString` (the application role `tenantry_app`: tenant work). With
 * `platformUrl` (the role `tenantry_platform`), work in the platform scope runs over a pool of its
 * own on that role (`inScope`, `platformDb`): the tenant role cannot enter the platform scope
 * whatever it sets (migration 0013), so one SQL injection in a tenant request stays in its tenant.
 * Without it, everything runs over the one connection (which must then be the platform role).
 */
export function createDb(connectionString: string, max = 10, opts: { platformUrl?: string } = {}): Db {
  // A dropped connection must not crash the process: the pool replaces it, and the query in flight
  // rejects (an API request answers 503 database.unavailable). A connect that hangs gives up in 5 s.
  const pool = guardPool(
    new pg.Pool({ connectionString, max, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 5_000, types }),
  );
  // A transaction's `begin` travels with its first statement (src/db/deferred-begin.ts).
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: deferBegin(pool) }) });
  pools.set(db, pool);
  if (opts.platformUrl) {
    const platform = createDb(opts.platformUrl, Math.max(2, Math.ceil(max / 2)));
    platformDbs.set(db, platform);
    const destroy = db.destroy.bind(db);
    db.destroy = async () => {
      await destroy();
      await platform.destroy();
    };
  }
  return db;
}

/** The Db for work in the platform scope: the platform role's pool when there is one. */
export const platformDb = (db: Db): Db => platformDbs.get(db) ?? db;

/** The pg pool behind a Db made by createDb (for pool metrics). */
export const poolOf = (db: Db): pg.Pool | undefined => pools.get(db);

/**
 * Applies every pending migration; a PostgreSQL advisory lock makes concurrent starts safe.
 * `keys`: the key-encryption key, to seal secrets that earlier versions stored in clear.
 */
export async function migrate(ownerUrl: string, opts: { keys?: KeyProvider } = {}): Promise<string[]> {
  const db = new Kysely<unknown>({
    dialect: new PostgresDialect({ pool: guardPool(new pg.Pool({ connectionString: ownerUrl, max: 1 })) }),
  });
  try {
    const migrator = new Migrator({
      db,
      provider: migrationProviderWith(opts.keys),
      migrationTableName: 'tenantry_migrations',
      migrationLockTableName: 'tenantry_migrations_lock',
    });
    const { error, results } = await migrator.migrateToLatest();
    if (error) throw error;
    return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
  } finally {
    await db.destroy();
  }
}

export async function pendingMigrations(db: Kysely<unknown>): Promise<number> {
  const migrator = new Migrator({
    db,
    provider: migrationProvider,
    migrationTableName: 'tenantry_migrations',
    migrationLockTableName: 'tenantry_migrations_lock',
  });
  const all = await migrator.getMigrations();
  return all.filter((m) => !m.executedAt).length;
}

/**
 * The application connects as `tenantry_app`, which owns nothing and is bound by row-level security.
 * Unless an explicit URL is configured, its password is derived from the owner's credentials, so
 * every process with the same DATABASE_URL agrees on it without storing another secret.
 */
export const ensureAppRole = (ownerUrl: string): Promise<string> => ensureRole(ownerUrl, 'tenantry_app');

/** The platform role `tenantry_platform` (migration 0013), its password derived the same way. */
export const ensurePlatformRole = (ownerUrl: string): Promise<string> =>
  ensureRole(ownerUrl, 'tenantry_platform');

async function ensureRole(ownerUrl: string, role: 'tenantry_app' | 'tenantry_platform'): Promise<string> {
  const url = new URL(ownerUrl);
  // Roles belong to the cluster, not to one database: derive from the server and owner only.
  const cluster = `${url.username}:${url.password}@${url.host}`;
  const password = createHmac('sha256', cluster).update(role).digest('base64url');
  url.username = role;
  url.password = password;
  const appUrl = url.toString();
  const probe = guardClient(new pg.Client({ connectionString: appUrl }));
  try {
    await probe.connect();
    await probe.end();
    return appUrl;
  } catch {
    await probe.end().catch(() => undefined);
  }
  const owner = guardClient(new pg.Client({ connectionString: ownerUrl }));
  await owner.connect();
  try {
    await owner.query('begin');
    await owner.query(`select pg_advisory_xact_lock(hashtext('tenantry.app_role'))`);
    await owner.query(`alter role ${role} with login password '${password}'`);
    await owner.query('commit');
  } finally {
    await owner.end();
  }
  return appUrl;
}

/**
 * Only the roles that work in the control-plane database may connect to it (issue 15): CONNECT is
 * taken from PUBLIC and given to the application and platform roles. On a server shared with the
 * data plane (the embedded default), a tenant's database role would otherwise reach the control
 * plane's database through PUBLIC. The owner keeps its own CONNECT; superusers need none.
 */
export async function restrictConnect(ownerUrl: string, roles: string[]): Promise<void> {
  const owner = guardClient(new pg.Client({ connectionString: ownerUrl }));
  await owner.connect();
  try {
    const { rows } = await owner.query<{ name: string }>('select current_database() as name');
    const database = pg.escapeIdentifier(rows[0]!.name);
    await owner.query('begin');
    await owner.query(`select pg_advisory_xact_lock(hashtext('tenantry.app_role'))`);
    await owner.query(`revoke connect on database ${database} from public`);
    for (const role of roles)
      await owner.query(`grant connect on database ${database} to ${pg.escapeIdentifier(role)}`);
    await owner.query('commit');
  } finally {
    await owner.end();
  }
}

export type Scope = { kind: 'platform' } | { kind: 'tenant'; tenantId: string };
export const PLATFORM: Scope = { kind: 'platform' };

/**
 * Runs one unit of work in one transaction with the row-level-security scope set for that
 * transaction only: as a platform operator (sees every row) or as one tenant (sees its own rows).
 */
export async function inScope<T>(db: Db, scope: Scope, work: (trx: Trx) => Promise<T>): Promise<T> {
  const key = scope.kind === 'tenant' ? await scopeKeyOf(db) : undefined;
  return (scope.kind === 'platform' ? platformDb(db) : db).transaction().execute(async (trx) => {
    if (scope.kind === 'platform') await enterPlatform(trx);
    else await enterTenant(trx, scope.tenantId, key!);
    return work(trx);
  });
}

/**
 * Sets the scope of a transaction begun elsewhere (on `platformDb(db)` for the platform, on `db`
 * for a tenant). A tenant scope is entered with a proof (migration 0020), never by a setting.
 */
export async function setScope(trx: Trx, scope: Scope, db: Db): Promise<void> {
  if (scope.kind === 'platform') await enterPlatform(trx);
  else await enterTenant(trx, scope.tenantId, await scopeKeyOf(db));
}

/** The platform scope (on the platform role's connection; on the tenant role it shows nothing). */
async function enterPlatform(trx: Trx): Promise<void> {
  await sql`select set_config('tenantry.platform', 'on', true), set_config('tenantry.tenant_id', '', true)`.execute(
    trx,
  );
}

const scopeKeys = new WeakMap<Db, Promise<Buffer>>();

/**
 * The key that proves tenant scopes (migration 0020), read once per Db over the platform role's
 * pool: the tenant role cannot read it, so a statement on a tenant connection cannot prove a scope.
 */
function scopeKeyOf(db: Db): Promise<Buffer> {
  let key = scopeKeys.get(db);
  if (!key) {
    key = sql<{ key: Buffer }>`select key from tenantry_scope_key where id = 1`
      .execute(platformDb(db))
      .then((r) => {
        if (!r.rows[0]) throw new Error('no tenant scope key (migration 0020)');
        return r.rows[0].key;
      });
    // A failed read (database down) is not kept: the next transaction reads again.
    key.catch(() => scopeKeys.delete(db));
    scopeKeys.set(db, key);
  }
  return key;
}

/** How long a tenant scope proof is valid: it is used at once, by the transaction it was made for. */
const PROOF_SECONDS = 300;

/** HMAC-SHA256 under the scope key over `<tenant>|<expires>`, what tenantry_enter_tenant checks. */
export const tenantScopeProof = (key: Buffer, tenantId: string, expires: number): Buffer =>
  createHmac('sha256', key).update(`${tenantId}|${expires}`).digest();

/**
 * Binds this transaction to one tenant (migration 0020): every policy then shows that tenant's rows
 * only, whatever a later statement in the transaction sets.
 */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function enterTenant(trx: Trx, tenant: string, key: Buffer): Promise<void> {
  const tenantId = tenant.toLowerCase();
  const expires = Math.floor(Date.now() / 1000) + PROOF_SECONDS;
  const proof = tenantScopeProof(key, tenantId, expires);
  // Without parameters when the id is a UUID (all three values are then literals that cannot carry
  // SQL), so the statement travels with the transaction's `begin` (src/db/deferred-begin.ts).
  if (UUID.test(tenantId)) {
    await sql`select set_config('tenantry.platform', '', true), tenantry_enter_tenant(${sql.lit(tenantId)}::uuid, ${sql.lit(expires)}::bigint, ${sql.raw(`'\\x${proof.toString('hex')}'`)}::bytea)`.execute(
      trx,
    );
    return;
  }
  await sql`select set_config('tenantry.platform', '', true), tenantry_enter_tenant(${tenantId}::uuid, ${expires}::bigint, ${proof})`.execute(
    trx,
  );
}

export const asPlatform = <T>(db: Db, work: (trx: Trx) => Promise<T>): Promise<T> =>
  inScope(db, PLATFORM, work);
export const asTenant = <T>(db: Db, tenantId: string, work: (trx: Trx) => Promise<T>): Promise<T> =>
  inScope(db, { kind: 'tenant', tenantId }, work);

/**
 * Reads the rows of `table` with this id (or the live row with this slug) in one statement, in the
 * scope of `scope`, as `inScope` would in a transaction of four round trips: the scope is entered by
 * `tenantry_read_object` (migration 0036) in the statement's own transaction, on the same pool and
 * with the same proof, so row-level security decides exactly as it does there.
 */
export async function readInScope<R>(
  db: Db,
  scope: Scope,
  table: string,
  ref: { id: string; includeDeleted?: boolean } | { slug: string },
): Promise<R | undefined> {
  const id = 'id' in ref ? ref.id : null;
  const slug = 'slug' in ref ? ref.slug : null;
  const includeDeleted = 'id' in ref && ref.includeDeleted === true;
  let proof = sql`null::uuid, null::bigint, null::bytea`;
  if (scope.kind === 'tenant') {
    const tenantId = scope.tenantId.toLowerCase();
    const expires = Math.floor(Date.now() / 1000) + PROOF_SECONDS;
    proof = sql`${tenantId}::uuid, ${expires}::bigint, ${tenantScopeProof(await scopeKeyOf(db), tenantId, expires)}`;
  }
  const r = await sql<R>`
    select * from tenantry_read_object(null::${sql.table(table)}, ${id}::uuid, ${slug}::text,
      ${includeDeleted}, ${proof})`.execute(scope.kind === 'platform' ? platformDb(db) : db);
  return r.rows[0];
}
