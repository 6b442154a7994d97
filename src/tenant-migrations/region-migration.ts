import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { type ProviderSet, slotFor } from '../controller/providers.js';
import { desiredResource } from '../controller/reconcilers.js';
import { asPlatform } from '../db/database.js';
import type { AccessGrant } from '../providers/access.js';
import { AzureBlobProvider } from '../providers/azure-blob/azure-blob-provider.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import {
  type DesiredResource,
  ProviderError,
  type ResourceProvider,
  type ResourceType,
} from '../providers/provider.js';
import type { ObjectRow } from '../registry/object.repository.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { type MigrationDeps, migrationRow, workflowKey } from './migration-records.js';
import {
  checksums,
  compare,
  copyTables,
  createSchema,
  databaseUrl,
  inventory,
  replicationLag,
  schemaDdl,
  startReplication,
  stopReplication,
  syncSequences,
  tablesSyncing,
  type Verification,
  walLevel,
  withClient,
} from './pg-copy.js';
import { switchTenantRegion } from './region-switch.js';
import {
  type Baselines,
  checksumBulk,
  type TrackedPair,
  untrackPair,
  verifyFrozen,
} from './tracked-checksums.js';

const { escapeIdentifier: id } = pg;

export const MIGRATE_REGION = 'migration.region';

export interface RegionMigrationInput {
  migrationId: string;
  tenantSlug: string;
  fromRegion: string;
  toRegion: string;
}

/** One database resource's move between the two regions' data-plane servers (same names on both). */
export interface RegionDatabasePlan {
  resourceId: string;
  desired: DesiredResource;
  /** On the source region's server. */
  database: string;
  /** On the target region's: its data-plane database (pool) or the tenant's own (silo). */
  targetDatabase: string;
  schema: string;
  role: string;
  /** The target's credentials are kept under this key until the cut-over makes them the resource's. */
  targetKey: string;
  /** The source's credentials are kept under this key from the cut-over on (until it is retired). */
  sourceKey: string;
  replication: string;
  tables: string[];
}

export interface RegionMigrationPlan {
  kind: 'region';
  mode: 'logical-replication' | 'freeze-copy';
  modeReason: string;
  fromRegion: string;
  toRegion: string;
  databases: RegionDatabasePlan[];
  blobs: { resourceId: string; desired: DesiredResource }[];
  topics: { resourceId: string; desired: DesiredResource }[];
}

/** A blob as copied: name, size and MD5 of its content (computed on both sides, not trusted from metadata). */
interface BlobCheck {
  name: string;
  bytes: number;
  md5: string;
}

export const providerIn = (providers: ProviderSet, type: ResourceType, region: string): ResourceProvider => {
  const slot = slotFor(providers, type, region);
  if (!('provider' in slot))
    throw new ProviderError(`region ${region}: ${slot.missing}`, 'ProviderNotConfigured', false);
  return slot.provider;
};

const sameProvider = (providers: ProviderSet, type: ResourceType, a: string, b: string) =>
  providerIn(providers, type, a) === providerIn(providers, type, b);

/** The data-plane server of `region` (its own, TENANTRY_DATAPLANE_DATABASE_URL_<REGION>, else the default). */
export function dataplaneOf(providers: ProviderSet, region: string): string {
  const p = providerIn(providers, 'database', region);
  if (!(p instanceof PostgresDatabaseProvider))
    throw new ProviderError(`region ${region}: the database provider is not PostgreSQL`, 'Ineligible', false);
  return p.url;
}

function blobsIn(providers: ProviderSet, region: string, desired: DesiredResource) {
  const p = providerIn(providers, 'blob-container', region);
  if (!(p instanceof AzureBlobProvider))
    throw new ProviderError(
      `region ${region}: blobs are copied between Azure Blob Storage accounts; this region's blob provider is ${p.name}`,
      'Ineligible',
      false,
    );
  return p.blobsOf(desired);
}

async function listBlobs(providers: ProviderSet, region: string, desired: DesiredResource) {
  const b = blobsIn(providers, region, desired);
  const names: string[] = [];
  if (!(await b.container.exists())) return { b, names };
  for await (const x of b.container.listBlobsFlat({ prefix: b.prefix || undefined }))
    if (x.name !== b.marker) names.push(x.name);
  return { b, names: names.sort() };
}

async function md5Of(b: ReturnType<typeof blobsIn>, name: string): Promise<BlobCheck> {
  const body = await b.container.getBlobClient(name).downloadToBuffer();
  return { name, bytes: body.length, md5: createHash('md5').update(body).digest('base64') };
}

/**
 * Copies every blob of the resource from the source region's account to the target's (content,
 * content type and metadata), skipping those already there with the same MD5, removes from the
 * target what the source no longer has, and returns both sides' checksums.
 */
export async function syncBlobs(
  providers: ProviderSet,
  plan: RegionMigrationPlan,
  desired: DesiredResource,
): Promise<{ source: BlobCheck[]; target: BlobCheck[]; copied: number }> {
  const from = await listBlobs(providers, plan.fromRegion, desired);
  const to = await listBlobs(providers, plan.toRegion, desired);
  let copied = 0;
  const source: BlobCheck[] = [];
  for (const name of from.names) {
    const src = from.b.container.getBlobClient(name);
    const props = await src.getProperties();
    const body = await src.downloadToBuffer();
    const md5 = createHash('md5').update(body).digest();
    source.push({ name, bytes: body.length, md5: md5.toString('base64') });
    const dst = to.b.container.getBlockBlobClient(name);
    const there = to.names.includes(name) ? await dst.getProperties() : undefined;
    if (there?.contentMD5 && Buffer.from(there.contentMD5).equals(md5)) continue;
    await dst.uploadData(body, {
      blobHTTPHeaders: {
        blobContentType: props.contentType,
        blobContentMD5: md5,
        blobContentEncoding: props.contentEncoding,
      },
      metadata: props.metadata,
    });
    copied++;
  }
  for (const name of to.names)
    if (!from.names.includes(name)) await to.b.container.deleteBlob(name).catch(() => undefined);
  const target: BlobCheck[] = [];
  for (const name of from.names) target.push(await md5Of(to.b, name));
  return { source, target, copied };
}

/**
 * Region migration (issue 19): the tenant's databases, blobs and topics move to a cell of another
 * region, each region with its own data-plane PostgreSQL, storage account and Kafka cluster (the
 * provider configuration by region). The database goes by logical replication from the source
 * region's server into the target's, so the write freeze covers only the cut-over; blobs are
 * copied and checksummed (again in the freeze, with the source's access revoked); topics are
 * recreated with their ACLs by the target region's Kafka provider. The source stays (its role
 * NOLOGIN) until the migration is retired.
 */
export function regionMigrationWorkflow(deps: MigrationDeps): WorkflowDefinition<RegionMigrationInput> {
  const { db, providers } = deps;
  const planOf = (ctx: StepContext<RegionMigrationInput>) =>
    ctx.outputs['check-eligibility'] as RegionMigrationPlan;
  const serverOf = (region: string, database: string) =>
    databaseUrl(dataplaneOf(providers, region), database);
  const srcUrl = (p: RegionMigrationPlan, d: RegionDatabasePlan) => serverOf(p.fromRegion, d.database);
  const dstUrl = (p: RegionMigrationPlan, d: RegionDatabasePlan) => serverOf(p.toRegion, d.targetDatabase);
  const targetDesired = (d: RegionDatabasePlan): DesiredResource => ({ ...d.desired, id: d.targetKey });

  const setLogin = async (url: string, role: string, login: boolean) =>
    withClient(url, async (c) => {
      const exists = await c.query('select 1 from pg_roles where rolname = $1', [role]);
      if ((exists.rowCount ?? 0) === 0) return;
      await c.query(`alter role ${id(role)} ${login ? 'login' : 'nologin'}`);
      if (!login)
        await c.query(
          'select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()',
          [role],
        );
    });

  const setFrozen = (migrationId: string, frozen: boolean) =>
    asPlatform(db, (trx) =>
      sql`update tenant_migrations set writes_frozen = ${frozen}, updated_at = now() where id = ${migrationId}`.execute(
        trx,
      ),
    );

  const pairOf = (p: RegionMigrationPlan, d: RegionDatabasePlan): TrackedPair => ({
    sourceUrl: srcUrl(p, d),
    targetUrl: dstUrl(p, d),
    tracked: { name: d.replication, schema: d.schema, tables: d.tables },
  });

  /** Replication and the checksums' change tracking ended on both sides (parts already gone skipped). */
  const stopReplicationOf = async (p: RegionMigrationPlan, d: RegionDatabasePlan) =>
    withClient(srcUrl(p, d), async (s) => {
      const there = await withClient(serverOf(p.toRegion, 'postgres'), async (c) => {
        const r = await c.query('select 1 from pg_database where datname = $1', [d.targetDatabase]);
        return (r.rowCount ?? 0) > 0;
      });
      await untrackPair({ ...pairOf(p, d), targetUrl: there ? dstUrl(p, d) : undefined });
      if (there) await withClient(dstUrl(p, d), (t) => stopReplication(s, t, d.replication));
      else await stopReplication(s, undefined, d.replication);
    });

  const steps: StepDefinition<RegionMigrationInput>[] = [
    {
      name: 'check-eligibility',
      // Read-only: what the tenant has (databases, blob containers, topics) and how the data can go.
      async run(ctx) {
        const { fromRegion, toRegion, migrationId } = ctx.input;
        const rows = await asPlatform(db, async (trx) => {
          const r = await sql<ObjectRow>`
            select * from integration_resources
            where tenant_id = ${ctx.tenantId} and deleted_at is null order by id`.execute(trx);
          const out: DesiredResource[] = [];
          for (const row of r.rows) out.push((await desiredResource(trx, row)).desired);
          return out;
        });
        const plan: RegionMigrationPlan = {
          kind: 'region',
          mode: 'logical-replication',
          modeReason: '',
          fromRegion,
          toRegion,
          databases: [],
          blobs: [],
          topics: [],
        };
        const withoutIdentity: string[] = [];
        let level = '';
        for (const desired of rows) {
          const { suspended: _s, ...d } = desired;
          // A storage account or Kafka cluster both regions use holds what the tenant has already.
          if (d.type === 'blob-container') {
            blobsIn(providers, fromRegion, d);
            blobsIn(providers, toRegion, d);
            if (!sameProvider(providers, 'blob-container', fromRegion, toRegion))
              plan.blobs.push({ resourceId: d.id, desired: d });
            continue;
          }
          if (d.type === 'kafka-topic') {
            providerIn(providers, 'kafka-topic', toRegion);
            if (!sameProvider(providers, 'kafka-topic', fromRegion, toRegion))
              plan.topics.push({ resourceId: d.id, desired: d });
            continue;
          }
          const isolation = d.database?.isolation;
          if (isolation !== 'pool' && isolation !== 'silo')
            throw new ProviderError(
              `database ${d.physicalName} is ${isolation}: a shared-isolation tenant's rows live in the region's shared tables; move it to pool first`,
              'Ineligible',
              false,
            );
          const sourceServer = dataplaneOf(providers, fromRegion);
          const targetServer = dataplaneOf(providers, toRegion);
          if (new URL(sourceServer).host === new URL(targetServer).host)
            throw new ProviderError(
              `regions ${fromRegion} and ${toRegion} share one data-plane server: set TENANTRY_DATAPLANE_DATABASE_URL_${toRegion.toUpperCase().replace(/-/g, '_')}`,
              'Ineligible',
              false,
            );
          const dpDatabase = decodeURIComponent(new URL(sourceServer).pathname.slice(1)) || 'postgres';
          const database = isolation === 'pool' ? dpDatabase : d.physicalName;
          const targetDatabase =
            isolation === 'pool'
              ? decodeURIComponent(new URL(targetServer).pathname.slice(1)) || 'postgres'
              : d.physicalName;
          const schema = isolation === 'pool' ? d.physicalName : 'public';
          const inv = await withClient(databaseUrl(sourceServer, database), async (c) => {
            level = await walLevel(c);
            const exists = await c.query('select 1 from pg_namespace where nspname = $1', [schema]);
            if ((exists.rowCount ?? 0) === 0)
              throw new ProviderError(`schema ${schema} does not exist yet`, 'SourceMissing', true);
            return inventory(c, schema);
          });
          if (inv.unsupported.length > 0)
            throw new ProviderError(
              `schema ${schema} holds objects the migration does not copy: ${inv.unsupported.join(', ')}`,
              'Ineligible',
              false,
            );
          withoutIdentity.push(...inv.withoutIdentity.map((t) => `${schema}.${t}`));
          plan.databases.push({
            resourceId: d.id,
            desired: d,
            database,
            targetDatabase,
            schema,
            role: d.physicalName,
            targetKey: workflowKey(migrationId, d.id, 'target'),
            sourceKey: workflowKey(migrationId, d.id, 'source'),
            replication: `tenantry_r_${migrationId.replace(/-/g, '').slice(0, 12)}_${plan.databases.length}`,
            tables: inv.tables,
          });
        }
        const logical = level !== '' && level === 'logical' && withoutIdentity.length === 0;
        plan.mode = logical || plan.databases.length === 0 ? 'logical-replication' : 'freeze-copy';
        plan.modeReason =
          plan.databases.length === 0
            ? 'no database to copy'
            : logical
              ? 'wal_level is logical and every table has a replica identity: writes are frozen only for the cut-over'
              : level !== 'logical'
                ? `the source server's wal_level is ${level}, not logical: the data is copied during the write freeze`
                : `tables without a primary key or replica identity (${withoutIdentity.join(', ')}): the data is copied during the write freeze`;
        const m = await migrationRow(db, migrationId);
        if (m.state !== 'Running')
          throw new ProviderError(`migration is ${m.state}`, 'MigrationNotRunning', false);
        return plan;
      },
      async checkpoint(trx, ctx, output) {
        const plan = output as RegionMigrationPlan;
        await sql`update tenant_migrations set plan = ${JSON.stringify(plan)}, mode = ${plan.mode}, updated_at = now()
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
    },
    {
      name: 'create-target',
      // In the target region: the database and its role (new credentials, under the target key),
      // the blob container, and the topics with their ACLs.
      async run(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases)
          await providerIn(providers, 'database', p.toRegion).ensure(targetDesired(d));
        for (const b of p.blobs) await providerIn(providers, 'blob-container', p.toRegion).ensure(b.desired);
        const topics: Record<string, unknown> = {};
        for (const t of p.topics) {
          const o = await providerIn(providers, 'kafka-topic', p.toRegion).ensure(t.desired);
          if (o.drift.length > 0)
            throw new ProviderError(`topic ${t.desired.physicalName}: ${o.drift.join('; ')}`, 'Drift', true);
          topics[t.desired.physicalName] = o.details;
        }
        return { databases: p.databases.map((d) => d.targetDatabase), blobs: p.blobs.length, topics };
      },
      async undo(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases)
          await providerIn(providers, 'database', p.toRegion).delete(targetDesired(d));
        for (const b of p.blobs) await providerIn(providers, 'blob-container', p.toRegion).delete(b.desired);
        for (const t of p.topics) await providerIn(providers, 'kafka-topic', p.toRegion).delete(t.desired);
      },
    },
    {
      name: 'copy-schema',
      async run(ctx) {
        const p = planOf(ctx);
        let statements = 0;
        for (const d of p.databases) {
          const ddl = await withClient(srcUrl(p, d), (c) => schemaDdl(c, d.schema));
          await withClient(dstUrl(p, d), (c) => createSchema(c, d.schema, d.role, ddl));
          statements += ddl.length;
        }
        return { statements };
      },
    },
    {
      name: 'start-replication',
      async run(ctx) {
        const p = planOf(ctx);
        if (p.mode !== 'logical-replication') return { skipped: p.modeReason };
        for (const d of p.databases)
          await withClient(srcUrl(p, d), (s) =>
            withClient(dstUrl(p, d), (t) =>
              startReplication(s, t, { name: d.replication, schema: d.schema, sourceUrl: srcUrl(p, d) }),
            ),
          );
        return { replicating: p.databases.map((d) => d.replication) };
      },
      async undo(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases) await stopReplicationOf(p, d);
      },
    },
    {
      name: 'wait-synced',
      timeoutMs: 30 * 60_000,
      async run(ctx) {
        const p = planOf(ctx);
        if (p.mode !== 'logical-replication') return { skipped: p.modeReason };
        const lag: Record<string, number | null> = {};
        for (const d of p.databases)
          for (;;) {
            const left = await withClient(dstUrl(p, d), (t) =>
              tablesSyncing(t, d.replication, d.tables.length),
            );
            lag[d.replication] = await withClient(srcUrl(p, d), (s) => replicationLag(s, d.replication));
            if (left === 0 && (lag[d.replication] ?? 0) < 16 * 1024 * 1024) break;
            if (ctx.signal.aborted)
              throw new ProviderError('the initial copy is not done in time', 'NotSynced', true);
            await new Promise((res) => setTimeout(res, 200));
          }
        return { lagBytes: lag };
      },
    },
    {
      name: 'checksum-bulk',
      timeoutMs: 30 * 60_000,
      // Every row of both sides hashed while the stream runs, and each side's changes journalled
      // from then on: the freeze verifies with the journals alone (tracked-checksums.ts).
      async run(ctx) {
        const p = planOf(ctx);
        if (p.mode !== 'logical-replication') return { skipped: p.modeReason };
        const out: Record<string, Baselines> = {};
        for (const d of p.databases) out[d.resourceId] = await checksumBulk(pairOf(p, d));
        return out;
      },
      async undo(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases) await stopReplicationOf(p, d);
      },
    },
    {
      name: 'copy-blobs',
      timeoutMs: 30 * 60_000,
      // The bulk of the blobs before the freeze; the freeze copies what changed since.
      async run(ctx) {
        const p = planOf(ctx);
        const out: Record<string, { blobs: number; copied: number }> = {};
        for (const b of p.blobs) {
          const r = await syncBlobs(providers, p, b.desired);
          out[b.resourceId] = { blobs: r.source.length, copied: r.copied };
        }
        return out;
      },
    },
    {
      name: 'freeze-writes',
      // The tenant's database role may not log in, and its blob container's stored access policies
      // (which its SAS tokens are signed against) are taken away, until the cut-over.
      async run(ctx) {
        const p = planOf(ctx);
        const m = await migrationRow(db, ctx.input.migrationId);
        const frozenAt = (m.freeze_started_at ?? new Date()).toISOString();
        await setFrozen(ctx.input.migrationId, true);
        for (const d of p.databases) await setLogin(serverOf(p.fromRegion, 'postgres'), d.role, false);
        // The access taken is recorded before it is taken, so a re-run after a crash (which would
        // observe none) still knows what to give back on an undo.
        const grants: Record<string, AccessGrant> = {};
        for (const b of p.blobs) {
          const src = providerIn(providers, 'blob-container', p.fromRegion) as AzureBlobProvider;
          const kept = await asPlatform(db, (trx) =>
            sql<{ grant: AccessGrant | null }>`select plan->'blobGrants'->${b.resourceId} as grant
              from tenant_migrations where id = ${ctx.input.migrationId}`.execute(trx),
          );
          const grant = kept.rows[0]?.grant ?? (await src.observeAccess(b.desired));
          if (!kept.rows[0]?.grant)
            await asPlatform(db, (trx) =>
              sql`update tenant_migrations set plan = jsonb_set(plan, '{blobGrants}',
                    coalesce(plan->'blobGrants', '{}'::jsonb) || jsonb_build_object(${b.resourceId}::text, ${JSON.stringify(grant)}::jsonb))
                  where id = ${ctx.input.migrationId}`.execute(trx),
            );
          await src.revokeAccess(b.desired, grant);
          grants[b.resourceId] = grant;
        }
        return { frozenAt, grants };
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set freeze_started_at = coalesce(freeze_started_at, ${(output as { frozenAt: string }).frozenAt}::timestamptz)
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
      async undo(ctx, output) {
        const p = planOf(ctx);
        for (const d of p.databases) await setLogin(serverOf(p.fromRegion, 'postgres'), d.role, true);
        const grants = (output as { grants?: Record<string, AccessGrant> }).grants ?? {};
        for (const b of p.blobs) {
          const grant = grants[b.resourceId];
          if (grant)
            await (providerIn(providers, 'blob-container', p.fromRegion) as AzureBlobProvider).restoreAccess(
              b.desired,
              grant,
            );
        }
        await asPlatform(db, (trx) =>
          sql`update tenant_migrations set writes_frozen = false, freeze_ended_at = now(),
                freeze_ms = (extract(epoch from now() - freeze_started_at) * 1000)::int
              where id = ${ctx.input.migrationId}`.execute(trx),
        );
      },
    },
    {
      name: 'sync-and-verify',
      timeoutMs: 30 * 60_000,
      // Databases: the frozen source all in the target, sequences set, row counts and checksums
      // equal. Blobs: the last changes copied, every blob's MD5 equal on both sides. Topics: no drift.
      async run(ctx) {
        const p = planOf(ctx);
        const databases: Record<string, Verification> = {};
        for (const d of p.databases) {
          await withClient(srcUrl(p, d), (s) =>
            withClient(dstUrl(p, d), async (t) => {
              if (p.mode === 'freeze-copy')
                await copyTables(s, t, { fromSchema: d.schema, toSchema: d.schema, tables: d.tables });
              else await caughtUp(s, t, d.replication);
            }),
          );
          const deadline = Date.now() + (deps.verifyTimeoutMs ?? 60_000);
          const bases = (ctx.outputs['checksum-bulk'] as Record<string, Baselines> | undefined)?.[
            d.resourceId
          ];
          let v: Verification;
          if (bases) v = await verifyFrozen(pairOf(p, d), bases, deps.verifyTimeoutMs ?? 60_000);
          else
            for (;;) {
              const [a, b] = await Promise.all([
                withClient(srcUrl(p, d), (s) => checksums(s, d.schema, d.tables)),
                withClient(dstUrl(p, d), (t) => checksums(t, d.schema, d.tables)),
              ]);
              v = compare(a, b);
              if (v.equal || Date.now() > deadline) break;
              await new Promise((res) => setTimeout(res, 50));
            }
          await withClient(srcUrl(p, d), (s) =>
            withClient(dstUrl(p, d), (t) => syncSequences(s, t, d.schema, d.schema)),
          );
          databases[d.resourceId] = v;
          if (!v.equal)
            throw new ProviderError(
              `verification of ${d.schema} failed: ${v.tables
                .filter((t) => t.sourceChecksum !== t.targetChecksum || t.sourceRows !== t.targetRows)
                .map((t) => `${t.table} ${t.sourceRows}/${t.targetRows} rows`)
                .join(', ')}`,
              'VerificationFailed',
              false,
            );
        }
        const blobs: Record<
          string,
          { equal: boolean; blobs: number; bytes: number; copiedInFreeze: number }
        > = {};
        for (const b of p.blobs) {
          const r = await syncBlobs(providers, p, b.desired);
          const equal = JSON.stringify(r.source) === JSON.stringify(r.target);
          blobs[b.resourceId] = {
            equal,
            blobs: r.source.length,
            bytes: r.source.reduce((n, x) => n + x.bytes, 0),
            copiedInFreeze: r.copied,
          };
          if (!equal)
            throw new ProviderError(
              `blob checksums differ in ${b.desired.physicalName}`,
              'VerificationFailed',
              false,
            );
        }
        const topics: Record<string, { exists: boolean; drift: string[] }> = {};
        for (const t of p.topics) {
          const o = await providerIn(providers, 'kafka-topic', p.toRegion).observe(t.desired);
          topics[t.resourceId] = { exists: o.exists, drift: o.drift };
          if (!o.exists || o.drift.length > 0)
            throw new ProviderError(
              `topic ${t.desired.physicalName} in ${p.toRegion}: ${o.drift.join('; ') || 'missing'}`,
              'VerificationFailed',
              false,
            );
        }
        return { databases, blobs, topics };
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set verification = ${JSON.stringify(output)}, updated_at = now()
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
    },
    {
      name: 'detach-target',
      async run(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases) await stopReplicationOf(p, d);
        return { detached: p.databases.length };
      },
    },
    {
      name: 'cut-over',
      // The target's role may log in; the registry switches region in the checkpoint.
      async run(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases) await setLogin(serverOf(p.toRegion, 'postgres'), d.role, true);
        return { cutOverAt: new Date().toISOString() };
      },
      async checkpoint(trx, ctx) {
        await switchTenantRegion(trx, ctx.tenantId, ctx.input.migrationId, planOf(ctx), 'forward');
      },
    },
  ];

  return {
    type: MIGRATE_REGION,
    steps,
    compensated: async (trx, ctx, reason) => {
      await sql`update tenant_migrations set state = case when state = 'Running' then 'Failed' else state end,
          writes_frozen = false, error = ${reason.slice(0, 2000)}, updated_at = now()
        where id = ${ctx.input.migrationId}`.execute(trx);
    },
  };
}

/** Waits (at most 3 s) until the subscription has received the source's WAL up to now; the checksums decide. */
async function caughtUp(s: pg.ClientBase, t: pg.ClientBase, name: string): Promise<void> {
  const lsn = (await s.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!.lsn;
  const deadline = Date.now() + 3_000;
  while (Date.now() < deadline) {
    const q = await t.query<{ done: boolean }>(
      `select coalesce(bool_and(received_lsn >= $2::pg_lsn), false) as done
       from pg_stat_subscription where subname = $1 and relid is null`,
      [name, lsn],
    );
    if (q.rows[0]?.done) return;
    await new Promise((res) => setTimeout(res, 20));
  }
}

/**
 * Retiring a region migration: the source region's database (schema or database, and role), blob
 * container and topics go, and the source's kept credentials with them.
 */
export async function retireRegionSource(
  providers: ProviderSet,
  plan: RegionMigrationPlan,
): Promise<string[]> {
  const gone: string[] = [];
  for (const d of plan.databases) {
    await providerIn(providers, 'database', plan.fromRegion).delete({ ...d.desired, id: d.sourceKey });
    gone.push(`database ${plan.fromRegion}/${d.database}.${d.schema}`);
  }
  for (const b of plan.blobs) {
    await providerIn(providers, 'blob-container', plan.fromRegion).delete(b.desired);
    gone.push(`blobs ${plan.fromRegion}/${b.desired.physicalName}`);
  }
  for (const t of plan.topics) {
    await providerIn(providers, 'kafka-topic', plan.fromRegion).delete(t.desired);
    gone.push(`topic ${plan.fromRegion}/${t.desired.physicalName}`);
  }
  return gone;
}
