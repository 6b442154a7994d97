import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { guardClient, guardPool } from '../../db/connection-errors.js';
import type { AccessControl, AccessGrant } from '../access.js';
import {
  type DesiredResource,
  type ObservedResource,
  ProviderError,
  type ResourceProvider,
} from '../provider.js';
import { type ResourceSecrets, SecretStore } from './secret-store.js';

const { escapeIdentifier: id, escapeLiteral: lit } = pg;
const IDENT = /^[a-z_][a-z0-9_]{0,62}$/;
const SHARED_GROUP = 'tenantry_shared_tenants';

/**
 * The roles a migration or standby opens to read one tenant's schema from another server
 * (`tenantry_<m|r|s>_<12 hex of its id>_<n>[_b]`, src/tenant-migrations/region-dataplane.ts
 * `openReader`): USAGE on the schema and CONNECT on a silo database granted to them are theirs
 * while they live, not drift. They get SELECT and nothing that writes.
 */
export const MIGRATION_READER = /^tenantry_[mrs]_[0-9a-f]{12}_[0-9]+(_b)?$/;

type Isolation = 'shared' | 'pool' | 'silo';

interface Names {
  isolation: Isolation;
  /** The tenant's login role. */
  role: string;
  /** pool: the schema; silo: the database; shared: the shared schema. */
  target: string;
}

/**
 * Database isolation on a data-plane PostgreSQL (DESIGN.md §1, seed 002's models):
 * - `shared`: the tenant's rows live in shared tables (`tenantry_shared.records`) under row-level
 *   security; a login role per scope is bound to its tenant (`tenantry_shared.bindings`), and the
 *   policy lets a session see only its bound tenant's rows.
 * - `pool`: a schema per scope, usable only by the scope's own role.
 * - `silo`: a database per scope, owned by its own role; nobody else may connect.
 * Passwords are generated once and kept in the secret store; status only shows the reference.
 */
export class PostgresDatabaseProvider implements ResourceProvider, AccessControl {
  readonly type = 'database' as const;
  readonly name = 'postgres';
  private readonly pool: pg.Pool;
  private readonly database: string;
  private prepared: Promise<void> | undefined;

  /** `url`: the data-plane database (created if missing) as a role that may create roles and databases. */
  constructor(
    /** The data-plane server (a region migration copies from one region's to another's). */
    readonly url: string,
    private readonly secrets: ResourceSecrets,
  ) {
    this.database = decodeURIComponent(new URL(url).pathname.slice(1)) || 'postgres';
    this.pool = guardPool(new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 5_000 }));
  }

  private names(desired: DesiredResource): Names {
    const isolation = desired.database?.isolation;
    if (!isolation) throw new ProviderError('the resource has no database isolation', 'InvalidSpec', false);
    const role = isolation === 'shared' ? `s_${desired.scopeSlug.replace(/-/g, '_')}` : desired.physicalName;
    if (!IDENT.test(role)) {
      throw new ProviderError(
        `"${role}" is not usable as a PostgreSQL name (lowercase, at most 63 characters)`,
        'InvalidName',
        false,
      );
    }
    return { isolation, role, target: isolation === 'shared' ? 'tenantry_shared' : role };
  }

  /**
   * The scope's login role. `ensure` gives every role it manages LOGIN while the tenant is active,
   * so an existing role is what a suspension takes LOGIN from and a resume gives it back to (the
   * reconcile may already have set NOLOGIN once the tenant's lifecycle said Suspended).
   */
  async observeAccess(desired: DesiredResource): Promise<AccessGrant> {
    const n = this.names(desired);
    return this.guard(async () => {
      const r = await this.pool.query('select 1 from pg_roles where rolname = $1', [n.role]);
      return { provider: this.name, role: n.role, login: (r.rowCount ?? 0) > 0 };
    });
  }

  /** NOLOGIN, then ends the role's open sessions, so neither new nor existing connections work. */
  async revokeAccess(desired: DesiredResource, grant: AccessGrant): Promise<void> {
    if (grant.login !== true) return;
    const n = this.names(desired);
    await this.guard(async () => {
      const exists = await this.pool.query('select 1 from pg_roles where rolname = $1', [n.role]);
      if ((exists.rowCount ?? 0) === 0) return;
      await this.pool.query(`alter role ${id(n.role)} nologin`);
      await this.pool.query(
        'select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()',
        [n.role],
      );
    });
  }

  /** LOGIN again, when the role had it and still exists. */
  async restoreAccess(desired: DesiredResource, grant: AccessGrant): Promise<void> {
    if (grant.login !== true) return;
    const n = this.names(desired);
    await this.guard(async () => {
      const exists = await this.pool.query('select 1 from pg_roles where rolname = $1', [n.role]);
      if ((exists.rowCount ?? 0) > 0) await this.pool.query(`alter role ${id(n.role)} login`);
    });
  }

  async observe(desired: DesiredResource): Promise<ObservedResource> {
    const n = this.names(desired);
    return this.guard(async () => {
      await this.prepare();
      const role = await this.pool.query<{ rolcanlogin: boolean }>(
        'select rolcanlogin from pg_roles where rolname = $1',
        [n.role],
      );
      const drift: string[] = [];
      let exists = (role.rowCount ?? 0) > 0;
      if (!exists) drift.push(`role ${n.role} is missing`);
      else if (desired.suspended && role.rows[0]?.rolcanlogin)
        drift.push(`role ${n.role} may log in while its tenant is suspended`);
      if (n.isolation === 'pool') {
        const r = await this.pool.query<{
          schema: boolean;
          usable: boolean;
          public_usage: boolean;
          foreign: string[];
        }>(
          `select exists (select from pg_namespace where nspname = $1) as schema,
                  ${FOREIGN_GRANTEES('schema')} as foreign,
                  coalesce((select has_schema_privilege($2, $1, 'USAGE, CREATE') where exists
                    (select from pg_roles where rolname = $2) and exists (select from pg_namespace where nspname = $1)), false) as usable,
                  coalesce((select exists (select from pg_namespace n, aclexplode(n.nspacl) a
                    where n.nspname = $1 and a.grantee = 0)), false) as public_usage`,
          [n.target, n.role],
        );
        const f = r.rows[0]!;
        if (!f.schema) drift.push(`schema ${n.target} is missing`);
        else if (exists && !f.usable) drift.push(`role ${n.role} lacks USAGE, CREATE on schema ${n.target}`);
        if (f.public_usage) drift.push(`PUBLIC has privileges on schema ${n.target}`);
        for (const g of f.foreign)
          drift.push(`${g} has privileges on schema ${n.target} that Tenantry did not grant`);
        exists = exists && f.schema;
      } else if (n.isolation === 'silo') {
        const r = await this.pool.query<{ owner: string; public_connect: boolean; foreign: string[] }>(
          `select pg_get_userbyid(datdba) as owner,
                  ${FOREIGN_GRANTEES('database')} as foreign,
                  datacl is null or exists (select from aclexplode(datacl) a where a.grantee = 0 and a.privilege_type = 'CONNECT') as public_connect
           from pg_database where datname = $1`,
          [n.target, n.role],
        );
        const d = r.rows[0];
        if (!d) drift.push(`database ${n.target} is missing`);
        else {
          if (d.owner !== n.role) drift.push(`database ${n.target} is owned by ${d.owner}, not ${n.role}`);
          if (d.public_connect) drift.push(`PUBLIC may connect to database ${n.target}`);
          for (const g of d.foreign)
            drift.push(`${g} has privileges on database ${n.target} that Tenantry did not grant`);
        }
        exists = exists && d !== undefined;
      } else {
        const r = await this.pool.query<{ tenant_id: string; member: boolean }>(
          `select b.tenant_id, pg_has_role(b.role_name, $2, 'MEMBER') as member
           from tenantry_shared.bindings b where b.role_name = $1 and exists (select from pg_roles where rolname = $1)`,
          [n.role, SHARED_GROUP],
        );
        const b = r.rows[0];
        if (exists && !b) drift.push(`role ${n.role} is not bound to tenant ${desired.tenantId}`);
        else if (b && b.tenant_id !== desired.tenantId)
          drift.push(`role ${n.role} is bound to another tenant`);
        else if (b && !b.member) drift.push(`role ${n.role} is not a member of ${SHARED_GROUP}`);
        exists = exists && b !== undefined;
      }
      // What the catalog says is not the whole contract: the tenant's own session must work. A
      // suspended tenant's role may not log in, as wanted: it has no session to check (probing it
      // made a drift of the refusal, which no ensure repairs, reconciled again and again while a
      // migration froze the tenant's writes).
      const refused = desired.suspended && !role.rows[0]?.rolcanlogin;
      if (exists && !refused) drift.push(...(await this.probe(desired, n)));
      return { exists, drift: [...new Set(drift)], details: this.details(desired, n) };
    });
  }

  /**
   * Logs in as the resource's role with its stored secret and checks what the tenant gets: CONNECT
   * on its database, USAGE and CREATE on (or ownership of) its schema, its search_path, and no
   * access to any other schema or any other private database (another tenant's). A grant left
   * half done (e.g. by a failed concurrent catalog change) is drift, and ensure repairs it.
   */
  private async probe(desired: DesiredResource, n: Names): Promise<string[]> {
    const secret = await this.secrets.get(desired.id);
    if (!secret?.password) return [`no stored secret for role ${n.role}`];
    const url = new URL(this.url);
    url.username = n.role;
    url.password = secret.password;
    const database = n.isolation === 'silo' ? n.target : this.database;
    url.pathname = `/${encodeURIComponent(database)}`;
    const c = guardClient(
      new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 5_000 }),
    );
    try {
      await c.connect();
    } catch (err) {
      await c.end().catch(() => undefined);
      const code = (err as { code?: string }).code;
      if (code === '28P01' || code === '28000')
        return [`role ${n.role} cannot log in with its stored secret`];
      if (code === '42501') return [`role ${n.role} lacks CONNECT on database ${database}`];
      throw err;
    }
    try {
      const own = n.isolation === 'silo' ? 'public' : n.target;
      const { rows } = await c.query<{
        search_path: string;
        schema_ok: boolean;
        foreign_schemas: string[];
        foreign_databases: string[];
      }>(
        `select current_setting('search_path') as search_path,
                coalesce((select pg_get_userbyid(nspowner) = current_user or has_schema_privilege(oid, 'USAGE, CREATE')
                          from pg_namespace where nspname = $1), false) as schema_ok,
                array(select nspname::text from pg_namespace
                      where nspname <> all (array[$1, 'public', 'information_schema'])
                        and nspname not like 'pg_%' and has_schema_privilege(oid, 'USAGE')
                      order by 1) as foreign_schemas,
                array(select datname::text from pg_database
                      where datname <> current_database() and not datistemplate
                        and datdba <> (select oid from pg_roles where rolname = current_user)
                        and datacl is not null
                        and not exists (select from aclexplode(datacl) a where a.grantee = 0 and a.privilege_type = 'CONNECT')
                        and has_database_privilege(oid, 'CONNECT')
                      order by 1) as foreign_databases`,
        [own],
      );
      const r = rows[0]!;
      const drift: string[] = [];
      if (!r.schema_ok) drift.push(`role ${n.role} lacks USAGE, CREATE on schema ${own}`);
      if (n.isolation !== 'silo' && r.search_path !== n.target && r.search_path !== id(n.target))
        drift.push(`role ${n.role} has search_path ${r.search_path}, not ${n.target}`);
      if (r.foreign_schemas.length > 0)
        drift.push(`role ${n.role} may use other schemas: ${r.foreign_schemas.join(', ')}`);
      if (r.foreign_databases.length > 0)
        drift.push(`role ${n.role} may connect to other databases: ${r.foreign_databases.join(', ')}`);
      return drift;
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async ensure(desired: DesiredResource): Promise<ObservedResource> {
    const n = this.names(desired);
    // First: an agent keeps the secrets in the data-plane database this creates.
    await this.guard(() => this.prepare());
    const secret = await this.guard(() =>
      this.secrets.getOrCreate({ tenantId: desired.tenantId, resourceId: desired.id, name: n.role }, () => ({
        username: n.role,
        password: randomBytes(24).toString('base64url'),
      })),
    );
    await this.guard(async () => {
      await this.prepare();
      await this.withCatalogLock(async (c) => {
        await this.ensureRole(c, n.role, secret.password ?? '', n.isolation === 'shared', !desired.suspended);
        // CONNECT on any other database, granted behind Tenantry's back, is taken back.
        const own = n.isolation === 'silo' ? n.target : this.database;
        const others = await c.query<{ datname: string }>(
          `select distinct d.datname from pg_database d, aclexplode(d.datacl) a
           where a.grantee = (select oid from pg_roles where rolname = $1) and d.datname <> $2`,
          [n.role, own],
        );
        for (const { datname } of others.rows)
          await c.query(`revoke all on database ${id(datname)} from ${id(n.role)} cascade`);
        if (n.isolation === 'pool') {
          await ignore(c.query(`create schema if not exists ${id(n.target)}`), ['42P06', '23505']);
          await c.query(`revoke all on schema ${id(n.target)} from public`);
          await revokeForeign(c, 'schema', n);
          await c.query(`grant usage, create on schema ${id(n.target)} to ${id(n.role)}`);
          await c.query(`grant connect on database ${id(this.database)} to ${id(n.role)}`);
          await c.query(`alter role ${id(n.role)} set search_path = ${id(n.target)}`);
        } else if (n.isolation === 'silo') {
          await ignore(c.query(`create database ${id(n.target)} owner ${id(n.role)}`), ['42P04', '23505']);
          await c.query(`alter database ${id(n.target)} owner to ${id(n.role)}`);
          await c.query(`revoke connect, temporary on database ${id(n.target)} from public`);
          await revokeForeign(c, 'database', n);
          await c.query(`grant connect on database ${id(n.target)} to ${id(n.role)}`);
        } else {
          await c.query(`grant ${id(SHARED_GROUP)} to ${id(n.role)}`);
          await c.query(`grant connect on database ${id(this.database)} to ${id(n.role)}`);
          await c.query(
            `insert into tenantry_shared.bindings (role_name, tenant_id) values ($1, $2)
             on conflict (role_name) do update set tenant_id = excluded.tenant_id`,
            [n.role, desired.tenantId],
          );
          await c.query(`alter role ${id(n.role)} set search_path = tenantry_shared`);
        }
      });
    });
    return this.observe(desired);
  }

  async delete(desired: DesiredResource): Promise<void> {
    const n = this.names(desired);
    await this.guard(async () => {
      await this.prepare();
      await this.withCatalogLock(async (c) => {
        if (n.isolation === 'pool') await c.query(`drop schema if exists ${id(n.target)} cascade`);
        if (n.isolation === 'silo') await c.query(`drop database if exists ${id(n.target)} with (force)`);
        if (n.isolation === 'shared') {
          // The tenant's rows stay under the retention rules; only the binding and the role go.
          await c.query('delete from tenantry_shared.bindings where role_name = $1', [n.role]);
        }
        const role = await c.query('select 1 from pg_roles where rolname = $1', [n.role]);
        if ((role.rowCount ?? 0) > 0) {
          await c.query(`drop owned by ${id(n.role)}`);
          await ignore(c.query(`drop role if exists ${id(n.role)}`), ['42704']);
        }
      });
    });
    await this.guard(() => this.secrets.delete(desired.id));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private details(desired: DesiredResource, n: Names): Record<string, unknown> {
    const u = new URL(this.url);
    return {
      isolation: n.isolation,
      host: u.hostname,
      port: Number(u.port || 5432),
      database: n.isolation === 'silo' ? n.target : this.database,
      ...(n.isolation === 'silo' ? {} : { schema: n.target }),
      role: n.role,
      secretRef: SecretStore.ref(desired.id),
    };
  }

  /** `login` false while the tenant is suspended: a LOGIN given behind Tenantry's back is taken back. */
  private async ensureRole(
    c: pg.PoolClient,
    role: string,
    password: string,
    inherit: boolean,
    login: boolean,
  ): Promise<void> {
    const exists = await c.query('select 1 from pg_roles where rolname = $1', [role]);
    const attrs = `${login ? 'login' : 'nologin'} nosuperuser nocreatedb nocreaterole nobypassrls ${inherit ? 'inherit' : 'noinherit'}`;
    if ((exists.rowCount ?? 0) === 0) {
      await ignore(c.query(`create role ${id(role)} ${attrs} password ${lit(password)}`), ['42710', '23505']);
    }
    await c.query(`alter role ${id(role)} ${attrs} password ${lit(password)}`);
  }

  /**
   * Runs catalog changes (roles, schemas, grants, role settings, databases) on one connection that
   * holds this data-plane database's catalog lock, a session advisory lock (session, not
   * transaction: CREATE DATABASE cannot run in one). PostgreSQL does not serialise concurrent
   * GRANTs or ALTER ROLE … SET on one catalog row: without the lock, two controllers provisioning at
   * once fail with `tuple concurrently updated`, or leave a grant half done. A connection that
   * breaks releases the lock with its session and is dropped from the pool.
   */
  private async withCatalogLock<T>(work: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const key = `tenantry.catalog:${this.database}`;
    const c = await this.pool.connect();
    let unlockFailed: Error | undefined;
    try {
      await c.query('select pg_advisory_lock(hashtext($1))', [key]);
      try {
        return await work(c);
      } finally {
        await c.query('select pg_advisory_unlock(hashtext($1))', [key]).catch((err: Error) => {
          unlockFailed = err;
        });
      }
    } finally {
      // A session that may still hold the lock never goes back to the pool (release(err) ends it).
      c.release(unlockFailed);
    }
  }

  /** The data-plane database and the shared-isolation tables, created once per process. */
  private prepare(): Promise<void> {
    this.prepared ??= this.createDataPlane().catch((err) => {
      this.prepared = undefined;
      throw err;
    });
    return this.prepared;
  }

  private async createDataPlane(): Promise<void> {
    const server = new URL(this.url);
    server.pathname = '/postgres';
    const admin = guardClient(
      new pg.Client({ connectionString: server.toString(), connectionTimeoutMillis: 5_000 }),
    );
    await admin.connect();
    try {
      const found = await admin.query('select 1 from pg_database where datname = $1', [this.database]);
      if ((found.rowCount ?? 0) === 0) {
        await ignore(admin.query(`create database ${id(this.database)}`), ['42P04', '23505']);
      }
      await ignore(admin.query(`create role ${id(SHARED_GROUP)} nologin`), ['42710', '23505']);
      // The server's maintenance databases are open to PUBLIC as PostgreSQL ships: a tenant's role
      // would reach them. Taken back where the provider's role may (owner or superuser; on a managed
      // server whose admin may not, they stay as its operator left them).
      // Serialised: concurrent GRANT/REVOKE on one database fail with "tuple concurrently updated".
      await admin.query('begin');
      await admin.query(`select pg_advisory_xact_lock(hashtext('tenantry.maintenance_acl'))`);
      for (const maintenance of ['postgres', 'template1']) {
        await admin.query('savepoint acl');
        try {
          await admin.query(`revoke connect, temporary on database ${id(maintenance)} from public`);
        } catch (err) {
          if (!['42501', '3D000'].includes((err as { code?: string }).code ?? '')) throw err;
          await admin.query('rollback to savepoint acl');
        }
      }
      await admin.query('commit');
    } finally {
      await admin.end();
    }
    const c = await this.pool.connect();
    try {
      await c.query('begin');
      await c.query(`select pg_advisory_xact_lock(hashtext('tenantry.shared_isolation'))`);
      await c.query(`
        revoke connect on database ${id(this.database)} from public;
        create schema if not exists tenantry_shared;
        revoke all on schema tenantry_shared from public;
        create table if not exists tenantry_shared.bindings (role_name name primary key, tenant_id uuid not null);
        create or replace function tenantry_shared.current_tenant() returns uuid
          language sql stable security definer set search_path = pg_catalog
          as $$ select tenant_id from tenantry_shared.bindings where role_name = session_user $$;
        revoke all on function tenantry_shared.current_tenant() from public;
        create table if not exists tenantry_shared.records (
          tenant_id uuid not null default tenantry_shared.current_tenant(),
          key text not null,
          value jsonb not null default '{}',
          primary key (tenant_id, key)
        );
        alter table tenantry_shared.records enable row level security;
        drop policy if exists tenant_rows on tenantry_shared.records;
        create policy tenant_rows on tenantry_shared.records
          using (tenant_id = tenantry_shared.current_tenant())
          with check (tenant_id = tenantry_shared.current_tenant());
        grant usage on schema tenantry_shared to ${id(SHARED_GROUP)};
        grant select, insert, update, delete on tenantry_shared.records to ${id(SHARED_GROUP)};
        grant execute on function tenantry_shared.current_tenant() to ${id(SHARED_GROUP)};
      `);
      await c.query('commit');
    } catch (err) {
      await c.query('rollback').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  /** Maps driver and server errors to provider errors: an unreachable server is retried. */
  private async guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof ProviderError) throw err;
      const e = err as Error & { code?: string };
      const code = e.code ?? '';
      const unreachable =
        [
          'ECONNREFUSED',
          'ENOTFOUND',
          'ETIMEDOUT',
          'ECONNRESET',
          'EHOSTUNREACH',
          '57P03',
          '28P01',
          '3D000',
        ].includes(code) ||
        code.startsWith('08') ||
        /timeout|terminated/i.test(e.message);
      throw new ProviderError(
        `data-plane PostgreSQL: ${e.message || code}`,
        unreachable ? 'DataPlaneUnavailable' : 'DataPlaneError',
        true,
        { cause: err },
      );
    }
  }
}

const CATALOG = {
  schema: { catalog: 'pg_namespace', name: 'nspname', acl: 'nspacl', owner: 'nspowner', read: 'USAGE' },
  database: { catalog: 'pg_database', name: 'datname', acl: 'datacl', owner: 'datdba', read: 'CONNECT' },
} as const;

/**
 * The roles, other than PUBLIC, the owner and the scope's own role ($2), holding any privilege on the
 * schema or database named $1: grants Tenantry did not give (SQL text for a select list). A
 * migration's reader (MIGRATION_READER) holding only the privilege it reads through is not one.
 */
const FOREIGN_GRANTEES = (what: keyof typeof CATALOG) => {
  const { catalog, name, acl, owner, read } = CATALOG[what];
  return `
  coalesce((select array_agg(distinct pg_get_userbyid(a.grantee)::text order by pg_get_userbyid(a.grantee)::text)
            from ${catalog} o, aclexplode(o.${acl}) a
            where o.${name} = $1 and a.grantee <> 0 and a.grantee <> o.${owner}
              and a.grantee <> coalesce((select oid from pg_roles where rolname = $2), 0)
              and not (a.privilege_type = '${read}'
                       and pg_get_userbyid(a.grantee) ~ ${lit(MIGRATION_READER.source)})), '{}')`;
};

/** Revokes every grant on the scope's schema or database that Tenantry did not give (see FOREIGN_GRANTEES). */
async function revokeForeign(c: pg.PoolClient, what: 'schema' | 'database', n: Names): Promise<void> {
  const { rows } = await c.query<{ foreign: string[] }>(`select ${FOREIGN_GRANTEES(what)} as foreign`, [
    n.target,
    n.role,
  ]);
  for (const g of rows[0]?.foreign ?? [])
    await c.query(`revoke all on ${what} ${id(n.target)} from ${id(g)} cascade`);
}

async function ignore(p: Promise<unknown>, codes: string[]): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!codes.includes((err as { code?: string }).code ?? '')) throw err;
  }
}
