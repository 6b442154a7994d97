import { createHash, randomBytes } from 'node:crypto';
import type { ContainerClient } from '@azure/storage-blob';
import pg from 'pg';
import { AgentKey, type AgentPublicKey, sealForAgent } from '../agent/agent-webhook-secrets.js';
import { type ProviderSet, slotFor } from '../controller/providers.js';
import type { AccessGrant } from '../providers/access.js';
import { AzureBlobProvider, storageBlob } from '../providers/azure-blob/azure-blob-provider.js';
import { MIGRATION_READER } from '../providers/postgres/postgres-database.provider.js';
import {
  type DesiredResource,
  ProviderError,
  type ResourceProvider,
  type ResourceType,
} from '../providers/provider.js';
import { type Arrival, observeArrival } from './arrived-status.js';
import {
  checksums,
  compare,
  continueSequences,
  copyTables,
  createSchema,
  databaseUrl,
  detachSubscription,
  dropSubscription,
  hasSubscription,
  inSecretsTable,
  inventory,
  readerLacks,
  readSequences,
  replicationLag,
  type SchemaInventory,
  type SequenceValues,
  schemaDdl,
  setRolesLogin,
  setSequences,
  stopReplication,
  syncState,
  type TableCheck,
  type Verification,
  waitReceived,
  walLevel,
  withClient,
} from './pg-copy.js';
import {
  type Baseline,
  baseline,
  type Tracked,
  trackedChecksums,
  trackSource,
  trackTarget,
  untrack,
  verifyTracked,
} from './tracked-checksums.js';

const { escapeIdentifier: id, escapeLiteral: lit } = pg;

/** Where one side of a region migration runs: a region's data-plane server and its providers. */
export interface RegionDataPlaneEnv {
  /** The region's data-plane PostgreSQL, as a role that may create roles, databases and subscriptions. */
  dataplaneUrl: () => string;
  providers: ProviderSet;
  /** The region whose providers are meant (an agent has one region's: its defaults). */
  region: string;
  /**
   * `host:port` at which the other region's PostgreSQL (and agent) reach this one's; absent: the
   * data-plane URL's. An agent's TENANTRY_DATAPLANE_PEER_ADDRESS.
   */
  peerAddress?: string | undefined;
  /** The key this side opens what the other side sealed for it with (see SealTo); absent: it opens nothing. */
  opener?: (() => Promise<Opener | undefined>) | undefined;
}

/**
 * Whom a credential one side hands the other (a reader's connection string, a blob reader's SAS URL)
 * is sealed for: the receiving side's public key and cell. The credential never crosses the control
 * plane in clear: it is a JWE (./../agent/agent-webhook-secrets.ts) in the command's result and the
 * next command's input, bound to the receiving cell and the reader, which only the receiving agent's
 * key (in its memory) opens; the control plane clears it from both rows once the hand-over is done
 * (src/agent/agent-commands.ts `clearSealed`).
 */
export interface SealTo {
  key: AgentPublicKey;
  cell: string;
}

/** The receiving side's key pair: an agent's, or this process's for the sides it serves itself. */
export interface Opener {
  key: AgentKey;
  cell: string;
}

/** How a sealed credential starts, in a command's input or result (what `clearSealed` clears). */
export const SEALED = 'sealed:';
/** The cell of the sides the control plane serves itself (its opener is the process's own key). */
const LOCAL = 'control-plane';
let processKey: Promise<AgentKey> | undefined;

/** This process's opener: a key made at first use and kept in memory only. */
export async function localOpener(): Promise<Opener> {
  processKey ??= AgentKey.generate();
  return { key: await processKey, cell: LOCAL };
}

export const sealToOf = (o: Opener): SealTo => ({ key: o.key.publicKey, cell: o.cell });

const blobPurpose = (d: DesiredResource) => `blobs of ${d.id}`;

/** What a blob reader hands over, sealed: the container's SAS URL, or each blob's (by name). */
type BlobsReader = { container: string; marker: string } | { blobs: Record<string, string> };

async function seal(value: string, to: SealTo, purpose: string): Promise<string> {
  return SEALED + (await sealForAgent([value], to.key, { cellId: to.cell, endpointId: purpose }));
}

/** A credential sealed for `o` and `purpose`, opened; another key's (an agent that restarted since) is a retryable failure. */
export async function openSealed(o: Opener | undefined, sealed: string, purpose: string): Promise<string> {
  try {
    if (!o || !sealed.startsWith(SEALED)) throw new Error('not sealed for this side');
    const [value] = await o.key.open(sealed.slice(SEALED.length), { cellId: o.cell, endpointId: purpose });
    if (typeof value === 'string') return value;
    throw new Error('nothing sealed');
  } catch (err) {
    throw new ProviderError(
      `the credential handed over for ${purpose} does not open here (${(err as Error).message}; sealed for an earlier key of this side?): it is asked for again`,
      'SealedForAnotherKey',
      true,
    );
  }
}

/** One side's database of a resource: the database on that side's server, and the schema. */
export interface SideDatabase {
  database: string;
  schema: string;
}

/** A blob as copied: name, size and MD5 of its content (computed, not trusted from metadata). */
export interface BlobCheck {
  name: string;
  bytes: number;
  md5: string;
}

/** Checks of one side: in full, or from a baseline and the journal since (tracked-checksums.ts). */
type Side = SideDatabase & { tables: string[]; tracked?: { name: string; base: Baseline } };

const tracking = (d: Side): Tracked => ({ name: d.tracked!.name, schema: d.schema, tables: d.tables });

/**
 * The data-plane work of a region migration, its rollback and its retirement, each method on ONE
 * region's data plane (its PostgreSQL server, storage account and Kafka cluster) with plain JSON in
 * and out: the control plane runs a side itself when it serves that region's cell, and a cell's
 * agent runs it as its command `region.<method>` otherwise (src/agent/agent-ops.ts). Nothing here
 * connects to the other region's engines except through what that side handed over: a reader
 * (`openReader`: a PostgreSQL connection string for a role of its own, for one schema, at the
 * peer address) and a blob reader (`blobReader`: SAS URLs of the resource's blobs), each sealed for
 * the receiving side's key (SealTo): the control plane relays ciphertext only. The target's
 * PostgreSQL subscribes with the former; a freeze-time copy pulls with it. Each method is safe to
 * run twice.
 */
export class RegionDataPlane {
  constructor(private readonly env: RegionDataPlaneEnv) {}

  private urlOf(database: string): string {
    return databaseUrl(this.env.dataplaneUrl(), database);
  }

  private get home(): string {
    return decodeURIComponent(new URL(this.env.dataplaneUrl()).pathname.slice(1)) || 'postgres';
  }

  private provider(type: ResourceType): ResourceProvider {
    const slot = slotFor(this.env.providers, type, this.env.region);
    if (!('provider' in slot))
      throw new ProviderError(`region ${this.env.region}: ${slot.missing}`, 'ProviderNotConfigured', false);
    return slot.provider;
  }

  private blobProvider(): AzureBlobProvider {
    const p = this.provider('blob-container');
    if (!(p instanceof AzureBlobProvider))
      throw new ProviderError(
        `region ${this.env.region}: blobs are copied between Azure Blob Storage accounts; this region's blob provider is ${p.name}`,
        'Ineligible',
        false,
      );
    return p;
  }

  private blobs(desired: DesiredResource) {
    return this.blobProvider().blobsOf(desired);
  }

  /**
   * What this side holds: its server (a hash of host and port: neither it nor credentials leave an
   * agent), its data-plane database, wal_level, and what each schema holds (`schemas`, source side;
   * a missing one is a retryable SourceMissing). Also checks that blobs can be copied here.
   */
  async inspect(input: {
    databases: { isolation: 'pool' | 'silo'; name: string }[];
    blobs: DesiredResource[];
    topics: DesiredResource[];
    inventories: boolean;
  }): Promise<{
    server: string;
    home: string;
    walLevel: string;
    blobProvider: string | null;
    topicProvider: string | null;
    inventories: (SchemaInventory & SideDatabase)[];
  }> {
    const u = new URL(this.env.dataplaneUrl());
    const server = createHash('sha256')
      .update(`${u.hostname}:${u.port || '5432'}`)
      .digest('base64url')
      .slice(0, 22);
    for (const b of input.blobs) await this.blobs(b);
    const topicProvider = input.topics.length > 0 ? this.provider('kafka-topic').name : null;
    const inventories: (SchemaInventory & SideDatabase)[] = [];
    let level = '';
    if (input.inventories)
      for (const d of input.databases) {
        const at = this.sideOf(d);
        const inv = await withClient(this.urlOf(at.database), async (c) => {
          level = await walLevel(c);
          const exists = await c.query('select 1 from pg_namespace where nspname = $1', [at.schema]);
          if ((exists.rowCount ?? 0) === 0)
            throw new ProviderError(`schema ${at.schema} does not exist yet`, 'SourceMissing', true);
          return inventory(c, at.schema);
        });
        inventories.push({ ...at, ...inv });
      }
    return {
      server,
      home: this.home,
      walLevel: level,
      blobProvider: input.blobs.length > 0 ? 'azure-blob' : null,
      topicProvider,
      inventories,
    };
  }

  /** Where a pool schema (this side's data-plane database) or a silo database (`public`) is. */
  private sideOf(d: { isolation: 'pool' | 'silo'; name: string }): SideDatabase {
    return d.isolation === 'pool'
      ? { database: this.home, schema: d.name }
      : { database: d.name, schema: 'public' };
  }

  /** The databases and their roles (new credentials, under each desired's id), containers, and topics with their ACLs. */
  async createResources(input: {
    databases: DesiredResource[];
    blobs: DesiredResource[];
    topics: DesiredResource[];
  }): Promise<{ topics: Record<string, unknown> }> {
    for (const d of input.databases) await this.provider('database').ensure(d);
    for (const b of input.blobs) await this.provider('blob-container').ensure(b);
    const topics: Record<string, unknown> = {};
    for (const t of input.topics) {
      const o = await this.provider('kafka-topic').ensure(t);
      if (o.drift.length > 0)
        throw new ProviderError(`topic ${t.physicalName}: ${o.drift.join('; ')}`, 'Drift', true);
      topics[t.physicalName] = o.details;
    }
    return { topics };
  }

  /** Removes resources (databases with the credentials kept under each desired's id). */
  async removeResources(input: {
    databases: DesiredResource[];
    blobs: DesiredResource[];
    topics: DesiredResource[];
  }): Promise<{ removed: number }> {
    for (const d of input.databases) await this.provider('database').delete(d);
    for (const b of input.blobs) await this.provider('blob-container').delete(b);
    for (const t of input.topics) await this.provider('kafka-topic').delete(t);
    return { removed: input.databases.length + input.blobs.length + input.topics.length };
  }

  /** Each topic's existence and drift, by its resource id. */
  async observeTopics(input: {
    topics: { resourceId: string; desired: DesiredResource }[];
  }): Promise<Record<string, { exists: boolean; drift: string[] }>> {
    const out: Record<string, { exists: boolean; drift: string[] }> = {};
    for (const t of input.topics) {
      const o = await this.provider('kafka-topic').observe(t.desired);
      out[t.resourceId] = { exists: o.exists, drift: o.drift };
    }
    return out;
  }

  async schemaDdl(input: SideDatabase): Promise<{ ddl: string[] }> {
    return { ddl: await withClient(this.urlOf(input.database), (c) => schemaDdl(c, input.schema)) };
  }

  async createSchema(input: SideDatabase & { role: string; ddl: string[] }): Promise<{ statements: number }> {
    await withClient(this.urlOf(input.database), (c) => createSchema(c, input.schema, input.role, input.ddl));
    return { statements: input.ddl.length };
  }

  /**
   * A reader of one schema for the other region: a role of its own (`name`, LOGIN REPLICATION, a new
   * password each time this runs, SELECT on the schema's tables and sequences, nothing that writes)
   * and, with `publish`, the publication and the logical replication slot `name`. Returns the
   * connection string the other side uses, at the peer address, sealed for `sealTo` (purpose: the
   * reader's name): it travels in the command's result and the next command's input as ciphertext
   * only the receiving side opens, cleared from both once handed over; its role reads one schema
   * and is dropped by closeReader. Its name is a MIGRATION_READER's: the provider's drift repair, which
   * takes other roles' grants on a live tenant's schema or database away (a rollback reads the live
   * target), leaves its USAGE and CONNECT alone.
   */
  async openReader(
    input: SideDatabase & { name: string; publish: boolean; sealTo: SealTo },
  ): Promise<{ connection: string }> {
    if (!MIGRATION_READER.test(input.name))
      throw new ProviderError(`"${input.name}" is not a migration reader's name`, 'InvalidName', false);
    const password = randomBytes(24).toString('base64url');
    await withClient(this.urlOf(input.database), async (c) => {
      const exists = await c.query('select 1 from pg_roles where rolname = $1', [input.name]);
      await c.query(
        `${(exists.rowCount ?? 0) > 0 ? 'alter' : 'create'} role ${id(input.name)} login replication password ${lit(password)}`,
      );
      // The rows as their owner sees them, row-level security or not, where this server lets it be
      // given (a table's owner bypasses its policies unless they are forced).
      await c.query(`alter role ${id(input.name)} bypassrls`).catch((err: { code?: string }) => {
        if (err.code !== '42501') throw err;
      });
      // No role's privileges (an earlier version made it a member of the schema's owner, which writes).
      const memberOf = await c.query<{ name: string }>(
        `select r.rolname as name from pg_auth_members m join pg_roles r on r.oid = m.roleid
         where m.member = (select oid from pg_roles where rolname = $1)`,
        [input.name],
      );
      for (const { name } of memberOf.rows) await c.query(`revoke ${id(name)} from ${id(input.name)}`);
      await c.query(`grant connect on database ${id(input.database)} to ${id(input.name)}`);
      await c.query(`grant usage on schema ${id(input.schema)} to ${id(input.name)}`);
      await c.query(`grant select on all tables in schema ${id(input.schema)} to ${id(input.name)}`);
      await c.query(`grant select on all sequences in schema ${id(input.schema)} to ${id(input.name)}`);
      if (!input.publish) return;
      const pub = await c.query('select 1 from pg_publication where pubname = $1', [input.name]);
      if (pub.rowCount === 0)
        await c.query(`create publication ${id(input.name)} for tables in schema ${id(input.schema)}`);
      const slot = await c.query('select 1 from pg_replication_slots where slot_name = $1', [input.name]);
      if (slot.rowCount === 0)
        await c.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [input.name]);
    });
    const u = new URL(this.urlOf(input.database));
    if (this.env.peerAddress) u.host = this.env.peerAddress;
    u.username = input.name;
    u.password = password;
    return { connection: await seal(u.toString(), input.sealTo, input.name) };
  }

  /** The reader gone: its slot (once the walsender lets go), publication, role, and the source's change tracking. */
  async closeReader(input: SideDatabase & { name: string; tables: string[] }): Promise<{ closed: string }> {
    const there = await withClient(this.urlOf(this.home), async (c) => {
      const r = await c.query('select 1 from pg_database where datname = $1', [input.database]);
      return (r.rowCount ?? 0) > 0;
    });
    if (there)
      await withClient(this.urlOf(input.database), async (c) => {
        await untrack(c, { name: input.name, schema: input.schema, tables: input.tables });
        await stopReplication(c, undefined, input.name);
        const role = await c.query('select 1 from pg_roles where rolname = $1', [input.name]);
        if ((role.rowCount ?? 0) === 0) return;
        await c.query(`select pg_terminate_backend(pid) from pg_stat_activity where usename = $1`, [
          input.name,
        ]);
        await c.query(`drop owned by ${id(input.name)}`);
        await c.query(`drop role ${id(input.name)}`);
      });
    return { closed: input.name };
  }

  /** The subscription to the other side's reader (sealed for this side; it copies the rows, then streams the changes). */
  async subscribe(
    input: SideDatabase & { name: string; connection: string },
  ): Promise<{ subscribed: string }> {
    const connection = await openSealed(await this.env.opener?.(), input.connection, input.name);
    await withClient(this.urlOf(input.database), async (t) => {
      // Again (after a crash): the reader's password is new, the subscription's connection follows.
      if (await hasSubscription(t, input.name))
        await t.query(`alter subscription ${id(input.name)} connection ${lit(connection)}`);
      else
        await t.query(
          `create subscription ${id(input.name)} connection ${lit(connection)} publication ${id(input.name)}
           with (create_slot = false, slot_name = ${lit(input.name)}, copy_data = true)`,
        );
    });
    return { subscribed: input.name };
  }

  /** The subscription and this side's change tracking gone (the database may be gone already). */
  async unsubscribe(input: SideDatabase & { name: string; tables: string[] }): Promise<{ stopped: string }> {
    const there = await withClient(this.urlOf(this.home), async (c) => {
      const r = await c.query('select 1 from pg_database where datname = $1', [input.database]);
      return (r.rowCount ?? 0) > 0;
    });
    if (there)
      await withClient(this.urlOf(input.database), async (t) => {
        await untrack(t, { name: input.name, schema: input.schema, tables: input.tables });
        await dropSubscription(t, input.name);
      });
    return { stopped: input.name };
  }

  /**
   * One measurement of a standby's primary (this side): the schema's row counts and sequence values
   * in one snapshot, then the WAL position, then how far the slot `name` is behind it after waiting
   * up to `waitMs` for the standby to confirm it (0: caught up; null: no such slot). The counts are
   * what the standby held at least once it confirmed that position.
   */
  async measure(input: SideDatabase & { name: string; tables: string[]; waitMs: number }): Promise<{
    rows: Record<string, number>;
    sequences: Record<string, string>;
    behind: number | null;
  }> {
    return withClient(this.urlOf(input.database), async (s) => {
      await s.query('begin isolation level repeatable read read only');
      const rows: Record<string, number> = {};
      for (const t of input.tables)
        rows[t] = Number(
          (await s.query<{ n: string }>(`select count(*)::text as n from ${id(input.schema)}.${id(t)}`))
            .rows[0]!.n,
        );
      const seqs = await s.query<{ name: string; last: string | null }>(
        'select sequencename as name, last_value::text as last from pg_sequences where schemaname = $1',
        [input.schema],
      );
      await s.query('commit');
      const lsn = (await s.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!.lsn;
      const deadline = Date.now() + input.waitMs;
      let behind: number | null = null;
      for (;;) {
        const q = await s.query<{ behind: string | null }>(
          `select greatest(pg_wal_lsn_diff($2::pg_lsn, confirmed_flush_lsn), 0)::text as behind
           from pg_replication_slots where slot_name = $1`,
          [input.name, lsn],
        );
        behind = q.rows[0]?.behind == null ? null : Number(q.rows[0].behind);
        if (behind === 0 || behind === null || Date.now() > deadline) break;
        await new Promise((res) => setTimeout(res, 50));
      }
      const sequences: Record<string, string> = {};
      for (const x of seqs.rows) if (x.last !== null) sequences[x.name] = x.last;
      return { rows, sequences, behind };
    });
  }

  /**
   * A failover's promotion of this side's standby (its primary may be gone): the subscription
   * `name` detached here alone, and every sequence set past the data and the primary's last known
   * values (`lastKnown`); what each sequence was set to.
   */
  async promote(
    input: SideDatabase & { name: string; lastKnown: Record<string, string> },
  ): Promise<{ detached: boolean; sequences: Record<string, string> }> {
    return withClient(this.urlOf(input.database), async (t) => ({
      detached: await detachSubscription(t, input.name),
      sequences: await continueSequences(t, input.schema, input.lastKnown),
    }));
  }

  /** Tables of the subscription still in their initial copy, and its workers' failed attempts so far. */
  async syncing(
    input: SideDatabase & { name: string; tables: string[] },
  ): Promise<{ left: number; syncErrors: number; applyErrors: number }> {
    return withClient(this.urlOf(input.database), (t) => syncState(t, input.name, input.tables.length));
  }

  /** The slot's lag in bytes, and the current WAL position. */
  async walPosition(
    input: SideDatabase & { name: string },
  ): Promise<{ lagBytes: number | null; lsn: string }> {
    return withClient(this.urlOf(input.database), async (s) => ({
      lagBytes: await replicationLag(s, input.name),
      lsn: (await s.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!.lsn,
    }));
  }

  /** What the reader `name` lacks to replicate the tables (see readerLacks): why a table sync may fail. */
  async readerLacks(input: SideDatabase & { name: string; tables: string[] }): Promise<{ lacks: string[] }> {
    return {
      lacks: await withClient(this.urlOf(input.database), (c) =>
        readerLacks(c, input.name, input.schema, input.tables),
      ),
    };
  }

  /**
   * Change tracking installed on this side's copy of the tables (as the source, or as a subscriber),
   * and its baseline: every row hashed in one snapshot, brought up to date by the journal from then on.
   */
  async trackBaseline(
    input: Side & { name: string; as: 'source' | 'target' },
  ): Promise<{ base: Baseline; ms: number }> {
    const t0 = performance.now();
    const t: Tracked = { name: input.name, schema: input.schema, tables: input.tables };
    const base = await withClient(this.urlOf(input.database), async (c) => {
      await (input.as === 'source' ? trackSource(c, t) : trackTarget(c, t));
      return baseline(c, t);
    });
    return { base, ms: Math.round(performance.now() - t0) };
  }

  /** This side's row counts and checksums now (from its baseline and journal, or in full). */
  async checks(input: Side): Promise<{ checks: TableCheck[]; rehashed: string[] }> {
    return withClient(this.urlOf(input.database), (c) => this.checksOn(c, input, []));
  }

  private checksOn(c: pg.ClientBase, d: Side, rehash: string[]) {
    return d.tracked
      ? trackedChecksums(
          c,
          tracking(d),
          d.tracked.base,
          (cc, tables) => checksums(cc, d.schema, tables),
          rehash,
        )
      : checksums(c, d.schema, d.tables).then((checks) => ({ checks, rehashed: [] as string[] }));
  }

  /**
   * This side compared with the other's checks (taken frozen), again until equal or `timeoutMs`
   * passes (the stream's last transactions may still be applying); with `lsn`, first waits (at most
   * 3 s) until the subscription has received the other side's WAL up to it.
   */
  async verifyAgainst(
    input: Side & {
      source: { checks: TableCheck[]; rehashed: string[] };
      timeoutMs: number;
      subscription?: { name: string; lsn: string };
    },
  ): Promise<Verification> {
    return withClient(this.urlOf(input.database), async (c) => {
      if (input.subscription) await waitReceived(c, input.subscription.name, input.subscription.lsn);
      if (input.tracked)
        return verifyTracked({
          source: async () => input.source,
          target: (also) => this.checksOn(c, input, also),
          timeoutMs: input.timeoutMs,
        });
      const end = Date.now() + input.timeoutMs;
      for (;;) {
        const v = compare(input.source.checks, (await this.checksOn(c, input, [])).checks);
        if (v.equal || Date.now() > end) return v;
        await new Promise((res) => setTimeout(res, 50));
      }
    });
  }

  /** Every table's rows (replacing what is here) and the sequences, from the other side's reader `name` (sealed for this side). */
  async pull(
    input: SideDatabase & { name: string; from: string; tables: string[] },
  ): Promise<{ tables: number }> {
    const from = await openSealed(await this.env.opener?.(), input.from, input.name);
    await withClient(from, (s) =>
      withClient(this.urlOf(input.database), (t) =>
        copyTables(s, t, { fromSchema: input.schema, toSchema: input.schema, tables: input.tables }),
      ),
    );
    return { tables: input.tables.length };
  }

  /** The schema's sequences' values (logical replication does not carry them). */
  async sequences(input: SideDatabase): Promise<{ values: SequenceValues }> {
    return { values: await withClient(this.urlOf(input.database), (c) => readSequences(c, input.schema)) };
  }

  async setSequences(input: SideDatabase & { values: SequenceValues }): Promise<{ set: number }> {
    return {
      set: await withClient(this.urlOf(input.database), (c) => setSequences(c, input.schema, input.values)),
    };
  }

  /** NOLOGIN (or LOGIN) for roles, and their open sessions ended when taken away. */
  async setLogin(input: { roles: string[]; login: boolean }): Promise<{ roles: string[] }> {
    if (input.roles.length === 0) return { roles: [] };
    await withClient(this.urlOf(this.home), (c) => setRolesLogin(c, input.roles, input.login));
    return { roles: input.roles };
  }

  /**
   * The databases this region's side of a switch makes the resources' (each desired's id the key
   * its credentials are kept under until then), observed as the resources will be (./arrived-status.ts).
   */
  async observeArrived(input: {
    databases: { resourceId: string; desired: DesiredResource }[];
  }): Promise<Arrival[]> {
    const out: Arrival[] = [];
    for (const d of input.databases)
      out.push(await observeArrival(this.provider('database'), d.resourceId, d.desired));
    return out;
  }

  async observeAccess(input: { desired: DesiredResource }): Promise<AccessGrant> {
    return this.blobProvider().observeAccess(input.desired);
  }

  async revokeAccess(input: { desired: DesiredResource; grant: AccessGrant }): Promise<{ revoked: boolean }> {
    await this.blobProvider().revokeAccess(input.desired, input.grant);
    return { revoked: true };
  }

  async restoreAccess(input: {
    desired: DesiredResource;
    grant: AccessGrant;
  }): Promise<{ restored: boolean }> {
    await this.blobProvider().restoreAccess(input.desired, input.grant);
    return { restored: true };
  }

  /**
   * A reader of the resource's blobs for the other region, sealed for `sealTo` (see openReader):
   * SAS URLs signed with the account key (not against the container's stored policies, so a
   * freeze's revocation leaves them working), valid for `hours`. The container layout: one SAS of
   * the container (the resource's own), read and list. The prefix layout (one container shared by
   * many resources): a SAS of each of the resource's blobs, read only: a container SAS would read
   * every resource's blobs, and a SAS of a folder (`sr=d`) exists only with a hierarchical
   * namespace (neither Azurite nor a flat-namespace account has one). Null when there is no container.
   */
  async blobReader(input: {
    desired: DesiredResource;
    hours: number;
    sealTo: SealTo;
  }): Promise<{ reader: string | null }> {
    const b = await this.blobs(input.desired);
    if (!(await b.container.exists())) return { reader: null };
    const { BlobSASPermissions, ContainerSASPermissions } = await storageBlob.load();
    const expiresOn = new Date(Date.now() + input.hours * 3600_000);
    let reader: BlobsReader;
    if (!b.prefix)
      reader = {
        container: await b.container.generateSasUrl({
          permissions: ContainerSASPermissions.parse('rl'),
          expiresOn,
        }),
        marker: b.marker,
      };
    else {
      const blobs: Record<string, string> = {};
      for await (const x of b.container.listBlobsFlat({ prefix: b.prefix }))
        if (x.name !== b.marker)
          blobs[x.name] = await b.container
            .getBlobClient(x.name)
            .generateSasUrl({ permissions: BlobSASPermissions.parse('r'), expiresOn });
      reader = { blobs };
    }
    return { reader: await seal(JSON.stringify(reader), input.sealTo, blobPurpose(input.desired)) };
  }

  /**
   * Every blob of the other side's reader (sealed for this side) copied into this side's container
   * (content, content type and metadata), skipping those already here with the same MD5; what the
   * other side no longer has removed here; both sides' checksums computed from the content.
   */
  async pullBlobs(input: {
    desired: DesiredResource;
    from: { reader: string | null };
  }): Promise<{ source: BlobCheck[]; target: BlobCheck[]; copied: number }> {
    const to = await this.blobs(input.desired);
    const list = async (c: ContainerClient, prefix: string, marker: string, own = false) => {
      const names: string[] = [];
      if (own && !(await c.exists())) return names;
      for await (const x of c.listBlobsFlat({ prefix: prefix || undefined }))
        if (x.name !== marker) names.push(x.name);
      return names.sort();
    };
    const reader: BlobsReader = input.from.reader
      ? JSON.parse(await openSealed(await this.env.opener?.(), input.from.reader, blobPurpose(input.desired)))
      : { blobs: {} };
    // The container's SAS lists and reads (no container properties); the blobs' each reads one.
    const { BlobClient, ContainerClient } = await storageBlob.load();
    const fromContainer = 'container' in reader ? new ContainerClient(reader.container) : undefined;
    const fromNames =
      'container' in reader
        ? await list(fromContainer!, '', reader.marker)
        : Object.keys(reader.blobs).sort();
    const sourceBlob = (name: string) =>
      'container' in reader ? fromContainer!.getBlobClient(name) : new BlobClient(reader.blobs[name]!);
    const toNames = await list(to.container, to.prefix, to.marker, true);
    // The same resource has the same names on both sides (prefix layout: the scope's folder).
    const md5 = (body: Buffer) => createHash('md5').update(body).digest();
    let copied = 0;
    const source: BlobCheck[] = [];
    for (const name of fromNames) {
      const src = sourceBlob(name);
      const props = await src.getProperties();
      const body = await src.downloadToBuffer();
      const sum = md5(body);
      source.push({ name, bytes: body.length, md5: sum.toString('base64') });
      const dst = to.container.getBlockBlobClient(name);
      const there = toNames.includes(name) ? await dst.getProperties() : undefined;
      if (there?.contentMD5 && Buffer.from(there.contentMD5).equals(sum)) continue;
      await dst.uploadData(body, {
        blobHTTPHeaders: {
          blobContentType: props.contentType,
          blobContentMD5: sum,
          blobContentEncoding: props.contentEncoding,
        },
        metadata: props.metadata,
      });
      copied++;
    }
    for (const name of toNames)
      if (!fromNames.includes(name)) await to.container.deleteBlob(name).catch(() => undefined);
    const target: BlobCheck[] = [];
    for (const name of fromNames) {
      const body = await to.container.getBlobClient(name).downloadToBuffer();
      target.push({ name, bytes: body.length, md5: md5(body).toString('base64') });
    }
    return { source, target, copied };
  }

  /**
   * The generated credentials an agent keeps (`tenantry_resource_secrets` of its data-plane
   * database), renamed as the registry switches: each `from` becomes `to` where `from` is still
   * there (so running it twice changes nothing). The control plane's own are switched in its
   * table, in the cut-over's transaction (./region-switch.ts).
   */
  async renameSecrets(input: {
    moves: { from: string; to: string }[];
    /** Kept credentials no role has any more (a failover's standby's first ones, replaced by the rotated ones). */
    drop?: string[];
  }): Promise<{ renamed: number }> {
    let renamed = 0;
    await inSecretsTable(this.urlOf(this.home), async (c) => {
      if (input.drop?.length)
        await c.query('delete from tenantry_resource_secrets where resource_id = any($1::uuid[])', [
          input.drop,
        ]);
      for (const m of input.moves) {
        const r = await c.query(
          `update tenantry_resource_secrets set resource_id = $2 where resource_id = $1
             and not exists (select 1 from tenantry_resource_secrets where resource_id = $2)`,
          [m.from, m.to],
        );
        renamed += r.rowCount ?? 0;
      }
    });
    return { renamed };
  }
}

/** The methods by name, as a cell's agent runs them (ops `region.<name>`). */
export const REGION_DATAPLANE_STEPS = [
  'inspect',
  'createResources',
  'removeResources',
  'observeTopics',
  'schemaDdl',
  'createSchema',
  'openReader',
  'closeReader',
  'subscribe',
  'unsubscribe',
  'syncing',
  'walPosition',
  'measure',
  'promote',
  'readerLacks',
  'trackBaseline',
  'checks',
  'verifyAgainst',
  'pull',
  'sequences',
  'setSequences',
  'setLogin',
  'observeAccess',
  'revokeAccess',
  'restoreAccess',
  'blobReader',
  'pullBlobs',
  'renameSecrets',
  'observeArrived',
] as const satisfies readonly (keyof RegionDataPlane)[];
export type RegionStep = (typeof REGION_DATAPLANE_STEPS)[number];
