import { createHash } from 'node:crypto';
import pg from 'pg';
import { type DesiredResource, ProviderError, type ResourceProvider } from '../providers/provider.js';
import { type Arrival, observeArrival } from './arrived-status.js';
import { type ChangedRows, copyChangedRows, primaryKeys, trackRows, untrackRows } from './changed-rows.js';
import type { MigrationPlan, ResourcePlan } from './migration-records.js';
import {
  checksums,
  compare,
  connectingRoleLacks,
  copyTables,
  createSchema,
  databaseUrl,
  inSecretsTable,
  inventory,
  replicationLag,
  type SchemaInventory,
  schemaDdl,
  setRolesLogin,
  startReplication,
  stopReplication,
  syncSequences,
  syncState,
  type Verification,
  waitReceived,
  walLevel,
  withClient,
} from './pg-copy.js';
import { MAX_LAG_BYTES, waitSynced } from './sync-wait.js';
import {
  type Baselines,
  checksumBulk,
  type TrackedPair,
  type TrackedVerification,
  untrack,
  untrackPair,
  verifyFrozen,
} from './tracked-checksums.js';

const { escapeIdentifier: id } = pg;

/** Where the data-plane steps of a tenancy-mode migration run: the data-plane server and its database provider. */
export interface IsolationDataPlaneEnv {
  dataplaneUrl: string;
  /** The database provider of this data plane (the target database and its role). */
  provider: () => ResourceProvider;
  verifyTimeoutMs?: number;
}

type Resources = { resources: ResourcePlan[] };

/** A rollback's copy back before its freeze: both sides' checksum baselines and each table's key. */
export interface BackBulk {
  bases: Baselines;
  keys: Record<string, string[]>;
  copiedMs: number;
}
/** The copy back's check: from the journals after a bulk copy, or of every row without one. */
export type BackVerification = (TrackedVerification & ChangedRows) | Verification;
type Owned = Resources & { tenantId: string; tenantSlug: string };

/**
 * The data-plane steps of a tenancy-mode migration (pool → silo) and of its rollback and retirement:
 * every read and write of the data-plane PostgreSQL, with plain JSON in and out, so that the same
 * code runs in the control plane's process (cells it reconciles itself) or in a cell's agent as its
 * commands (src/agent/agent-ops.ts; the control plane never connects to that data plane). Each is
 * safe to run twice. The workflow (./migration-workflows.ts) decides and records; this does.
 */
export class IsolationDataPlane {
  constructor(private readonly env: IsolationDataPlaneEnv) {}

  private urlOf(database: string): string {
    return databaseUrl(this.env.dataplaneUrl, database);
  }

  /** The database of the data-plane URL (where pool schemas and generated credentials live). */
  private get home(): string {
    return decodeURIComponent(new URL(this.env.dataplaneUrl).pathname.slice(1)) || 'postgres';
  }

  /**
   * Which data plane this is: a hash of its server and database (neither they nor credentials
   * leave the agent); two agents of one data plane say the same.
   */
  async identity(_input: Record<string, never>): Promise<{ dataplane: string }> {
    const u = new URL(this.env.dataplaneUrl);
    const where = `${u.hostname}:${u.port || '5432'}/${this.home}`;
    return { dataplane: createHash('sha256').update(where).digest('base64url').slice(0, 22) };
  }

  /** wal_level, and what each source schema holds (a missing one is a retryable SourceMissing). */
  async inspect(input: { schemas: string[] }): Promise<{
    database: string;
    walLevel: string;
    inventories: (SchemaInventory & { schema: string })[];
  }> {
    const read = (database: string) =>
      withClient(this.urlOf(database), async (c) => {
        const level = await walLevel(c);
        const inventories: (SchemaInventory & { schema: string })[] = [];
        for (const schema of input.schemas) {
          const exists = await c.query('select 1 from pg_namespace where nspname = $1', [schema]);
          if ((exists.rowCount ?? 0) === 0)
            throw new ProviderError(`schema ${schema} does not exist yet`, 'SourceMissing', true);
          inventories.push({ schema, ...(await inventory(c, schema)) });
        }
        return { database: this.home, walLevel: level, inventories };
      });
    try {
      return await read(this.home);
    } catch (err) {
      // A data plane no database resource was provisioned on yet has no database of its own: with
      // no schema to read (a tenant without databases), the server's wal_level is read elsewhere.
      if ((err as { code?: string }).code !== '3D000' || input.schemas.length > 0) throw err;
      return read('postgres');
    }
  }

  /** One side of a resource as its provider takes it: the silo (`target`) or the kept pool schema (`source`), under the side's key. */
  private desiredOf(input: Owned, r: ResourcePlan, side: 'target' | 'source'): DesiredResource {
    const target = side === 'target';
    return {
      id: target ? r.targetKey : r.sourceKey,
      type: 'database',
      tenantId: input.tenantId,
      tenantSlug: input.tenantSlug,
      scopeSlug: r.scopeSlug,
      physicalName: target ? r.target.role : r.source.role,
      database: { isolation: target ? 'silo' : 'pool' },
    };
  }

  /** The dedicated databases and their own roles, with new credentials (kept under the target key). */
  async createTarget(input: Owned): Promise<{ databases: string[] }> {
    for (const r of input.resources) await this.env.provider().ensure(this.desiredOf(input, r, 'target'));
    return { databases: input.resources.map((r) => r.target.database) };
  }

  async dropTarget(input: Owned): Promise<{ dropped: string[] }> {
    for (const r of input.resources) await this.env.provider().delete(this.desiredOf(input, r, 'target'));
    return { dropped: input.resources.map((r) => r.target.database) };
  }

  /** The kept source (schema, role, credentials) removed: the end of the rollback window. */
  async dropSource(input: Owned): Promise<{ dropped: string[] }> {
    for (const r of input.resources) await this.env.provider().delete(this.desiredOf(input, r, 'source'));
    return { dropped: input.resources.map((r) => `${r.source.database}.${r.source.schema}`) };
  }

  /**
   * The side a cut-over (`target`) or a rollback (`source`) switches to, observed as each resource
   * will be once it has (./arrived-status.ts), its credentials still under the side's key.
   */
  async observeArrived(input: Owned & { side: 'target' | 'source' }): Promise<Arrival[]> {
    const out: Arrival[] = [];
    for (const r of input.resources)
      out.push(await observeArrival(this.env.provider(), r.resourceId, this.desiredOf(input, r, input.side)));
    return out;
  }

  async copySchema(input: Resources): Promise<{ statements: number }> {
    let statements = 0;
    for (const r of input.resources) {
      const ddl = await withClient(this.urlOf(r.source.database), (c) => schemaDdl(c, r.source.schema));
      await withClient(this.urlOf(r.target.database), (c) =>
        createSchema(c, r.source.schema, r.target.role, ddl),
      );
      statements += ddl.length;
    }
    return { statements };
  }

  async startReplication(input: Resources): Promise<{ replicating: string[] }> {
    for (const r of input.resources)
      await withClient(this.urlOf(r.source.database), (s) =>
        withClient(this.urlOf(r.target.database), (t) =>
          startReplication(s, t, {
            name: r.replication,
            schema: r.source.schema,
            sourceUrl: this.urlOf(r.source.database),
          }),
        ),
      );
    return { replicating: input.resources.map((r) => r.replication) };
  }

  /** Replication and the checksums' change tracking ended on both sides (parts already gone skipped). */
  async stopReplication(input: Resources): Promise<{ stopped: number }> {
    for (const r of input.resources)
      await withClient(this.urlOf(r.source.database), async (s) => {
        const targetExists = await s.query('select 1 from pg_database where datname = $1', [
          r.target.database,
        ]);
        const pair = this.pairOf(r);
        await untrackPair({
          ...pair,
          targetUrl: (targetExists.rowCount ?? 0) > 0 ? pair.targetUrl : undefined,
        });
        if ((targetExists.rowCount ?? 0) > 0)
          await withClient(this.urlOf(r.target.database), (t) => stopReplication(s, t, r.replication));
        else await stopReplication(s, undefined, r.replication);
      });
    return { stopped: input.resources.length };
  }

  /**
   * Whether the initial copy is done and the stream caught up, looking for at most `waitMs`; a
   * subscription whose workers keep failing fails it (sync-wait.ts), counted from `errorsSeen`
   * (the previous answer's, when the caller asks again).
   */
  async waitSynced(input: Resources & { waitMs: number; errorsSeen?: Record<string, number> }): Promise<{
    synced: boolean;
    lagBytes: Record<string, number | null>;
    errorsSeen: Record<string, number>;
  }> {
    const until = Date.now() + input.waitMs;
    const lag: Record<string, number | null> = {};
    const errorsSeen = { ...input.errorsSeen };
    for (const r of input.resources) {
      const sourceUrl = this.urlOf(r.source.database);
      const w = await waitSynced(
        {
          syncing: () =>
            withClient(this.urlOf(r.target.database), (t) => syncState(t, r.replication, r.tables.length)),
          lagBytes: () => withClient(sourceUrl, (s) => replicationLag(s, r.replication)),
          // The subscription connects to the source as this data plane's own role (startReplication).
          readerLacks: () => connectingRoleLacks(sourceUrl, r.source.schema, r.tables),
        },
        {
          subscription: `the subscription ${r.replication} in database ${r.target.database}`,
          reader: `the role it reads database ${r.source.database} as`,
          log: 'the data-plane PostgreSQL',
          maxLagBytes: MAX_LAG_BYTES,
          until,
          errorsSeen: errorsSeen[r.replication],
        },
      );
      lag[r.replication] = w.lagBytes;
      errorsSeen[r.replication] = w.errorsSeen;
      if (!w.synced) return { synced: false, lagBytes: lag, errorsSeen };
    }
    return { synced: true, lagBytes: lag, errorsSeen };
  }

  async checksumBulk(input: Resources): Promise<Record<string, Baselines>> {
    const out: Record<string, Baselines> = {};
    for (const r of input.resources) out[r.resourceId] = await checksumBulk(this.pairOf(r));
    return out;
  }

  /** NOLOGIN (or LOGIN) for roles, and their open sessions ended when taken away. */
  async setLogin(input: { roles: string[]; login: boolean }): Promise<{ roles: string[] }> {
    if (input.roles.length === 0) return { roles: [] };
    await withClient(this.urlOf(this.home), (c) => setRolesLogin(c, input.roles, input.login));
    return { roles: input.roles };
  }

  /**
   * The frozen source, all of it in the target (streamed, or copied now), sequences set, and the
   * verification of each resource (the caller decides what an unequal one means).
   */
  async syncAndVerify(input: {
    mode: MigrationPlan['mode'];
    resources: ResourcePlan[];
    baselines?: Record<string, Baselines>;
  }): Promise<Record<string, Verification>> {
    const out: Record<string, Verification> = {};
    for (const r of input.resources) {
      if (input.mode === 'freeze-copy')
        await withClient(this.urlOf(r.source.database), (s) =>
          withClient(this.urlOf(r.target.database), (t) =>
            copyTables(s, t, { fromSchema: r.source.schema, toSchema: r.source.schema, tables: r.tables }),
          ),
        );
      if (input.mode === 'logical-replication') await this.caughtUp(r);
      const bases = input.baselines?.[r.resourceId];
      const timeout = this.env.verifyTimeoutMs ?? 60_000;
      const v = bases
        ? await verifyFrozen(this.pairOf(r), bases, timeout)
        : await this.verifyUntilEqual(r, r.source.schema, timeout);
      await withClient(this.urlOf(r.source.database), (s) =>
        withClient(this.urlOf(r.target.database), (t) =>
          syncSequences(s, t, r.source.schema, r.source.schema),
        ),
      );
      out[r.resourceId] = v;
      if (!v.equal) break;
    }
    return out;
  }

  /** The copy stands alone: replication ended, and its schema becomes the database's `public`. */
  async detachTarget(input: Resources): Promise<{ detached: number }> {
    for (const r of input.resources) {
      await this.stopReplication({ resources: [r] });
      await withClient(this.urlOf(r.target.database), async (t) => {
        const staged = await t.query('select 1 from pg_namespace where nspname = $1', [r.source.schema]);
        if ((staged.rowCount ?? 0) === 0 || r.source.schema === r.target.schema) return;
        await t.query('begin');
        await t.query(`drop schema if exists ${id(r.target.schema)}`);
        await t.query(`alter schema ${id(r.source.schema)} rename to ${id(r.target.schema)}`);
        await t.query('commit');
      });
    }
    return { detached: input.resources.length };
  }

  /**
   * Before a rollback's freeze, while the tenant writes on the silo: its changed rows journalled from
   * now on, every table copied back whole, and both sides' checksums baselined (hash journals,
   * tracked-checksums.ts), so that the freeze moves and reads only what changed since.
   */
  async copyBackBulk(input: Resources): Promise<Record<string, BackBulk>> {
    const out: Record<string, BackBulk> = {};
    for (const r of input.resources) {
      const t0 = performance.now();
      const back = this.backPair(r);
      // A previous attempt's hash tracking goes first: the copy below replaces the pool's rows.
      await untrackPair(back);
      const keys = await withClient(back.sourceUrl, async (silo) => {
        await trackRows(silo, back.tracked);
        return primaryKeys(silo, r.target.schema, r.tables);
      });
      await withClient(back.sourceUrl, (silo) =>
        withClient(back.targetUrl, (pool) =>
          copyTables(silo, pool, {
            fromSchema: r.target.schema,
            toSchema: r.source.schema,
            tables: r.tables,
          }),
        ),
      );
      const bases = await checksumBulk(back);
      out[r.resourceId] = { bases, keys, copiedMs: Math.round(performance.now() - t0) };
    }
    return out;
  }

  /**
   * Everything the tenant holds now (writes since the cut-over included) back into the source,
   * verified: the rows changed since the bulk copy (`bulk`, copyBackBulk's answer), or, without
   * one, every row.
   */
  async copyBack(
    input: Resources & { bulk?: Record<string, BackBulk | undefined> },
  ): Promise<Record<string, BackVerification>> {
    const out: Record<string, BackVerification> = {};
    for (const r of input.resources) {
      const b = input.bulk?.[r.resourceId];
      if (b?.bases) {
        const back = this.backPair(r);
        const moved = await withClient(back.sourceUrl, (silo) =>
          withClient(back.targetUrl, (pool) =>
            copyChangedRows(silo, pool, {
              name: back.tracked.name,
              liveSchema: r.target.schema,
              intoSchema: r.source.schema,
              tables: r.tables,
              keys: b.keys,
            }),
          ),
        );
        out[r.resourceId] = { ...(await verifyFrozen(back, b.bases, 0, moved.recopied)), ...moved };
        continue;
      }
      await withClient(this.urlOf(r.target.database), (t) =>
        withClient(this.urlOf(r.source.database), (s) =>
          copyTables(t, s, { fromSchema: r.target.schema, toSchema: r.source.schema, tables: r.tables }),
        ),
      );
      out[r.resourceId] = await this.verifyUntilEqual(r, r.target.schema, 0);
    }
    return out;
  }

  /** The copy back's hash tracking gone from the kept pool schema (before the tenant writes there). */
  async untrackPool(input: Resources): Promise<{ untracked: number }> {
    for (const r of input.resources)
      await withClient(this.urlOf(r.source.database), (pool) =>
        untrack(pool, { ...this.backPair(r).tracked, schema: r.source.schema }),
      );
    return { untracked: input.resources.length };
  }

  /** The copy back's change tracking gone from both sides (the silo may be gone already). */
  async untrackBack(input: Resources): Promise<{ untracked: number }> {
    await this.untrackPool(input);
    for (const r of input.resources) {
      const back = this.backPair(r);
      const silo = await withClient(back.targetUrl, (c) =>
        c.query('select 1 from pg_database where datname = $1', [r.target.database]),
      );
      if ((silo.rowCount ?? 0) === 0) continue;
      await withClient(back.sourceUrl, async (c) => {
        await untrackRows(c, back.tracked);
        await untrack(c, back.tracked);
      });
    }
    return { untracked: input.resources.length };
  }

  /**
   * The generated credentials of the data plane (src/providers/postgres/secret-store.ts, the
   * `tenantry_resource_secrets` table of its database) switched as the registry switches: the
   * resource's id now finds the other side's, the ones it had are kept under `away`. Done only while
   * `home` still holds credentials, so running it twice changes nothing.
   */
  async switchSecrets(input: { moves: { resourceId: string; away: string; home: string }[] }): Promise<{
    switched: number;
  }> {
    let switched = 0;
    if (input.moves.length === 0) return { switched };
    await inSecretsTable(this.urlOf(this.home), async (c) => {
      for (const m of input.moves) {
        const pending = await c.query(
          'select 1 from tenantry_resource_secrets where resource_id = $1 for update',
          [m.home],
        );
        if ((pending.rowCount ?? 0) === 0) continue;
        await c.query('delete from tenantry_resource_secrets where resource_id = $1', [m.away]);
        await c.query('update tenantry_resource_secrets set resource_id = $2 where resource_id = $1', [
          m.resourceId,
          m.away,
        ]);
        await c.query('update tenantry_resource_secrets set resource_id = $2 where resource_id = $1', [
          m.home,
          m.resourceId,
        ]);
        switched++;
      }
    });
    return { switched };
  }

  private pairOf(r: ResourcePlan): TrackedPair {
    return {
      sourceUrl: this.urlOf(r.source.database),
      targetUrl: this.urlOf(r.target.database),
      tracked: { name: r.replication, schema: r.source.schema, tables: r.tables },
    };
  }

  /**
   * The copy back of a rollback: the silo's schema (live) into the kept pool schema. Their names
   * differ (`public` and `t_…`), so logical replication, which maps tables by qualified name, does
   * not carry it; changed-rows.ts journals the silo's changed rows instead.
   */
  private backPair(r: ResourcePlan): TrackedPair {
    return {
      sourceUrl: this.urlOf(r.target.database),
      targetUrl: this.urlOf(r.source.database),
      tracked: { name: `${r.replication}_back`, schema: r.target.schema, tables: r.tables },
      targetSchema: r.source.schema,
    };
  }

  private async verifyUntilEqual(
    r: ResourcePlan,
    targetSchema: string,
    timeoutMs: number,
  ): Promise<Verification> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Both sides at once, each in one snapshot: the freeze lasts as long as this takes.
      const [source, target] = await Promise.all([
        withClient(this.urlOf(r.source.database), (s) => checksums(s, r.source.schema, r.tables)),
        withClient(this.urlOf(r.target.database), (t) => checksums(t, targetSchema, r.tables)),
      ]);
      const v = compare(source, target);
      if (v.equal || Date.now() > deadline) return v;
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  private async caughtUp(r: ResourcePlan): Promise<void> {
    const lsn = await withClient(this.urlOf(r.source.database), async (s) => {
      return (await s.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!.lsn;
    });
    await withClient(this.urlOf(r.target.database), (t) => waitReceived(t, r.replication, lsn));
  }
}

/** The data-plane steps by name, as a cell's agent runs them (ops `migration.<name>`). */
export const ISOLATION_DATAPLANE_STEPS = [
  'identity',
  'inspect',
  'createTarget',
  'dropTarget',
  'dropSource',
  'copySchema',
  'startReplication',
  'stopReplication',
  'waitSynced',
  'checksumBulk',
  'setLogin',
  'syncAndVerify',
  'detachTarget',
  'copyBackBulk',
  'copyBack',
  'untrackPool',
  'untrackBack',
  'switchSecrets',
  'observeArrived',
] as const satisfies readonly (keyof IsolationDataPlane)[];
export type IsolationStep = (typeof ISOLATION_DATAPLANE_STEPS)[number];
