import { sql } from 'kysely';
import { clearSealedOf } from '../agent/agent-commands.js';
import { type ProviderSet, slotFor } from '../controller/providers.js';
import { desiredResource } from '../controller/reconcilers.js';
import { asPlatform } from '../db/database.js';
import type { AccessGrant } from '../providers/access.js';
import { PostgresDatabaseProvider } from '../providers/postgres/postgres-database.provider.js';
import {
  type DesiredResource,
  ProviderError,
  type ResourceProvider,
  type ResourceType,
} from '../providers/provider.js';
import type { ObjectRow } from '../registry/object.repository.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { agentExecutor, localExecutor, remoteAgentCellsOf } from './isolation-executor.js';
import {
  copiable,
  copyMode,
  type MigrationDeps,
  migrationRow,
  recordFreezeStart,
  recordFreezeUndone,
  savePlan,
  workflowKey,
} from './migration-records.js';
import type { Verification } from './pg-copy.js';
import {
  type BlobCheck,
  localOpener,
  REGION_DATAPLANE_STEPS,
  RegionDataPlane,
  type RegionStep,
  type SealTo,
  sealToOf,
} from './region-dataplane.js';
import { type Switched, switchTenantRegion } from './region-switch.js';
import { MAX_LAG_BYTES, waitSynced } from './sync-wait.js';
import type { Baselines } from './tracked-checksums.js';

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

export interface RegionMigrationPlan extends RegionAgents {
  kind: 'region';
  mode: 'logical-replication' | 'freeze-copy';
  modeReason: string;
  fromRegion: string;
  toRegion: string;
  databases: RegionDatabasePlan[];
  blobs: { resourceId: string; desired: DesiredResource }[];
  topics: { resourceId: string; desired: DesiredResource }[];
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

/** A data plane of `region` this process reaches: the control plane's provider configuration for it. */
export const localRegion = (providers: ProviderSet, region: string) =>
  localExecutor(
    new RegionDataPlane({
      dataplaneUrl: () => dataplaneOf(providers, region),
      providers,
      region,
      opener: localOpener,
    }),
    REGION_DATAPLANE_STEPS,
  );
export type RegionSide = ReturnType<typeof localRegion>;

/**
 * Copies every blob of the resource from one region's account to the other's (content, content
 * type and metadata; the target's extra blobs removed) and returns both sides' checksums, the
 * source handing the target SAS URLs, sealed for it (./region-dataplane.ts `blobReader`).
 */
export async function syncBlobs(
  providers: ProviderSet,
  plan: { fromRegion: string; toRegion: string },
  desired: DesiredResource,
): Promise<{ source: BlobCheck[]; target: BlobCheck[]; copied: number }> {
  return copyBlobs(
    localRegion(providers, plan.fromRegion),
    localRegion(providers, plan.toRegion),
    desired,
    sealToOf(await localOpener()),
  );
}

/**
 * One container's blobs from `from`'s side to `to`'s, checksummed on both (see syncBlobs); the
 * reader's SAS URLs sealed for `to` (`sealTo`, the receiving side's key), valid for an hour (the copy
 * asks for them just before; each blob's download starts within it, a longer copy that runs out
 * fails retryably and the step asks for new ones, skipping what is copied already).
 */
export async function copyBlobs(from: RegionSide, to: RegionSide, desired: DesiredResource, sealTo: SealTo) {
  return to.pullBlobs({ desired, from: await from.blobReader({ desired, hours: 1, sealTo }) });
}

/** The plan's cells held by agents of other processes (absent: the control plane serves that side). */
export interface RegionAgents {
  /** The cell whose agent runs the source region's side. */
  sourceAgent?: string;
  /** The cell whose agent runs the target region's side. */
  targetAgent?: string;
}

/**
 * The two sides of a region move: each region's data-plane work runs here (the control plane
 * serves that cell) or as commands of the agent holding its cell, keyed by the workflow step and
 * `part` (a resource, when a step asks the same method once per resource).
 */
export function regionSides(
  deps: Pick<MigrationDeps, 'db' | 'providers'>,
  p: { fromRegion: string; toRegion: string } & RegionAgents,
  ctx: { workflowId: string; signal: AbortSignal },
  step: string,
) {
  const side = (which: 'source' | 'target', part = '') => {
    const agent = which === 'source' ? p.sourceAgent : p.targetAgent;
    return agent
      ? agentExecutor<RegionDataPlane, RegionStep>(
          REGION_DATAPLANE_STEPS,
          'region',
          deps.db,
          agent,
          `${ctx.workflowId}:${step}:${which}${part ? `:${part}` : ''}`,
          ctx.signal,
        )
      : localRegion(deps.providers, which === 'source' ? p.fromRegion : p.toRegion);
  };
  /** Whom what is handed to a side is sealed for: the agent of its cell (its current key), or this process. */
  const sealFor = async (which: 'source' | 'target'): Promise<SealTo> => {
    const agent = which === 'source' ? p.sourceAgent : p.targetAgent;
    if (!agent) return sealToOf(await localOpener());
    const r = await asPlatform(deps.db, (trx) =>
      sql<{
        key: string | null;
      }>`select command_key as key from cell_agents where cell_id = ${agent}`.execute(trx),
    );
    const x = r.rows[0]?.key;
    if (!x)
      throw new ProviderError(
        `the agent of the ${which} cell has not said its key yet (it does with its next command request)`,
        'AgentPending',
        true,
      );
    return { key: { kty: 'OKP', crv: 'X25519', x }, cell: agent };
  };
  return {
    source: (part?: string) => side('source', part),
    target: (part?: string) => side('target', part),
    sealFor,
  };
}

/** One side's database of a planned resource: the source's or the target's, its schema and tables. */
export const sideOf = (d: RegionDatabasePlan, side: 'source' | 'target') => ({
  database: side === 'source' ? d.database : d.targetDatabase,
  schema: d.schema,
  tables: d.tables,
});

type Sides = ReturnType<typeof regionSides>;
type Streamed = Pick<RegionMigrationPlan, 'databases'>;

/** Each database's schema (DDL read on the source side) created on the target side; the statements run. */
export async function copySchemas(p: Streamed, s: Sides): Promise<number> {
  let statements = 0;
  for (const d of p.databases) {
    const { ddl } = await s.source(d.resourceId).schemaDdl(sideOf(d, 'source'));
    await s.target(d.resourceId).createSchema({ ...sideOf(d, 'target'), role: d.role, ddl });
    statements += ddl.length;
  }
  return statements;
}

/**
 * The source hands out a reader per database (its own role, publication and slot) at its peer
 * address, sealed for the target side; the target's PostgreSQL subscribes with it.
 */
export async function openStreams(p: Streamed, s: Sides): Promise<string[]> {
  const sealTo = await s.sealFor('target');
  for (const d of p.databases) {
    const { connection } = await s
      .source(d.resourceId)
      .openReader({ ...sideOf(d, 'source'), name: d.replication, publish: true, sealTo });
    await s.target(d.resourceId).subscribe({ ...sideOf(d, 'target'), name: d.replication, connection });
  }
  return p.databases.map((d) => d.replication);
}

/** Replication, the readers and the checksums' change tracking ended on both sides (parts already gone skipped). */
export async function closeStreams(p: Streamed, s: Sides): Promise<void> {
  for (const d of p.databases) {
    await s.target(d.resourceId).unsubscribe({ ...sideOf(d, 'target'), name: d.replication });
    await s.source(d.resourceId).closeReader({ ...sideOf(d, 'source'), name: d.replication });
  }
}

/** Every subscription past its initial copy and (within `maxLagBytes`) caught up; the lag of each. */
export async function waitStreamsSynced(
  p: Streamed & { fromRegion: string; toRegion: string },
  s: Sides,
  signal: AbortSignal,
  maxLagBytes?: number,
): Promise<Record<string, number | null>> {
  const lag: Record<string, number | null> = {};
  for (const d of p.databases) {
    const [source, target] = [sideOf(d, 'source'), sideOf(d, 'target')];
    const r = await waitSynced(
      {
        syncing: () => s.target().syncing({ ...target, name: d.replication }),
        lagBytes: async () => (await s.source().walPosition({ ...source, name: d.replication })).lagBytes,
        readerLacks: async () => (await s.source().readerLacks({ ...source, name: d.replication })).lacks,
      },
      {
        subscription: `the subscription ${d.replication} in ${p.toRegion}`,
        reader: `its reader in ${p.fromRegion}`,
        log: `the ${p.toRegion} data-plane PostgreSQL`,
        ...(maxLagBytes === undefined ? {} : { maxLagBytes }),
        signal,
      },
    );
    lag[d.replication] = r.lagBytes;
  }
  return lag;
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
  const sides = (ctx: StepContext<RegionMigrationInput>, step: string) =>
    regionSides(deps, planOf(ctx), ctx, step);
  const targetDesired = (d: RegionDatabasePlan): DesiredResource => ({ ...d.desired, id: d.targetKey });
  const targetResources = (p: RegionMigrationPlan) => ({
    databases: p.databases.map(targetDesired),
    blobs: p.blobs.map((b) => b.desired),
    topics: p.topics.map((t) => t.desired),
  });

  const setFrozen = (migrationId: string, frozen: boolean) =>
    asPlatform(db, (trx) =>
      sql`update tenant_migrations set writes_frozen = ${frozen}, updated_at = now() where id = ${migrationId}`.execute(
        trx,
      ),
    );

  const steps: StepDefinition<RegionMigrationInput>[] = [
    {
      name: 'check-eligibility',
      // Read-only: what the tenant has (databases, blob containers, topics), how the data can go,
      // and who runs each region's side (here, or the agent holding its cell).
      async run(ctx) {
        const { fromRegion, toRegion, migrationId } = ctx.input;
        const m = await migrationRow(db, migrationId);
        const [sourceAgent, targetAgent] = await remoteAgentCellsOf(db, [
          m.source.cellUuid,
          m.target.cellUuid,
        ]);
        const agents: RegionAgents = {
          ...(sourceAgent ? { sourceAgent: sourceAgent.id } : {}),
          ...(targetAgent ? { targetAgent: targetAgent.id } : {}),
        };
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
          ...agents,
          databases: [],
          blobs: [],
          topics: [],
        };
        // A storage account or Kafka cluster both regions use (one provider here) holds what the
        // tenant has already; an agent's are its own.
        const shared = (type: ResourceType) =>
          !sourceAgent && !targetAgent && sameProvider(providers, type, fromRegion, toRegion);
        const databases: { d: DesiredResource; isolation: 'pool' | 'silo' }[] = [];
        for (const desired of rows) {
          const { suspended: _s, ...d } = desired;
          if (d.type === 'blob-container') {
            if (!shared('blob-container')) plan.blobs.push({ resourceId: d.id, desired: d });
            continue;
          }
          if (d.type === 'kafka-topic') {
            if (!shared('kafka-topic')) plan.topics.push({ resourceId: d.id, desired: d });
            continue;
          }
          const isolation = d.database?.isolation;
          if (isolation !== 'pool' && isolation !== 'silo')
            throw new ProviderError(
              `database ${d.physicalName} is ${isolation}: a shared-isolation tenant's rows live in the region's shared tables; move it to pool first`,
              'Ineligible',
              false,
            );
          databases.push({ d, isolation });
        }
        const ask = {
          databases: databases.map((x) => ({ isolation: x.isolation, name: x.d.physicalName })),
          blobs: plan.blobs.map((b) => b.desired),
        };
        const sides = regionSides(deps, plan, ctx, 'check-eligibility');
        const [source, target] = await Promise.all([
          sides.source().inspect({ ...ask, topics: [], inventories: true }),
          sides.target().inspect({ ...ask, topics: plan.topics.map((t) => t.desired), inventories: false }),
        ]);
        if (databases.length > 0 && source.server === target.server)
          throw new ProviderError(
            `regions ${fromRegion} and ${toRegion} share one data-plane server: set TENANTRY_DATAPLANE_DATABASE_URL_${toRegion.toUpperCase().replace(/-/g, '_')} (or give each region's agent its own)`,
            'Ineligible',
            false,
          );
        const withoutIdentity: string[] = [];
        for (const [i, { d, isolation }] of databases.entries()) {
          const inv = source.inventories[i]!;
          withoutIdentity.push(...copiable(inv));
          plan.databases.push({
            resourceId: d.id,
            desired: d,
            database: inv.database,
            targetDatabase: isolation === 'pool' ? target.home : d.physicalName,
            schema: inv.schema,
            role: d.physicalName,
            targetKey: workflowKey(migrationId, d.id, 'target'),
            sourceKey: workflowKey(migrationId, d.id, 'source'),
            replication: `tenantry_r_${migrationId.replace(/-/g, '').slice(0, 12)}_${plan.databases.length}`,
            tables: inv.tables,
          });
        }
        const how =
          plan.databases.length === 0
            ? { mode: 'logical-replication' as const, modeReason: 'no database to copy' }
            : copyMode('the source server', source.walLevel, withoutIdentity);
        plan.mode = how.mode;
        plan.modeReason = how.modeReason;
        if (m.state !== 'Running')
          throw new ProviderError(`migration is ${m.state}`, 'MigrationNotRunning', false);
        return plan;
      },
      async checkpoint(trx, ctx, output) {
        await savePlan(trx, ctx.input.migrationId, output as RegionMigrationPlan);
      },
    },
    {
      name: 'create-target',
      // In the target region: the database and its role (new credentials, under the target key),
      // the blob container, and the topics with their ACLs.
      async run(ctx) {
        const p = planOf(ctx);
        const { topics } = await sides(ctx, 'create-target').target().createResources(targetResources(p));
        return { databases: p.databases.map((d) => d.targetDatabase), blobs: p.blobs.length, topics };
      },
      async undo(ctx) {
        await sides(ctx, 'create-target:undo')
          .target()
          .removeResources(targetResources(planOf(ctx)));
      },
    },
    {
      name: 'copy-schema',
      async run(ctx) {
        return { statements: await copySchemas(planOf(ctx), sides(ctx, 'copy-schema')) };
      },
    },
    {
      name: 'start-replication',
      // The source hands out a reader (its own role, publication and slot) at its peer address;
      // the target's PostgreSQL subscribes with it.
      async run(ctx) {
        const p = planOf(ctx);
        if (p.mode !== 'logical-replication') return { skipped: p.modeReason };
        return { replicating: await openStreams(p, sides(ctx, 'start-replication')) };
      },
      async undo(ctx) {
        await stopReplicationOf(ctx, 'start-replication:undo');
      },
    },
    {
      name: 'wait-synced',
      timeoutMs: 30 * 60_000,
      async run(ctx) {
        const p = planOf(ctx);
        if (p.mode !== 'logical-replication') return { skipped: p.modeReason };
        return { lagBytes: await waitStreamsSynced(p, sides(ctx, 'wait-synced'), ctx.signal, MAX_LAG_BYTES) };
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
        const s = sides(ctx, 'checksum-bulk');
        const out: Record<string, Baselines> = {};
        for (const d of p.databases) {
          const t0 = performance.now();
          const [source, target] = await Promise.all([
            s
              .source(d.resourceId)
              .trackBaseline({ ...sideOf(d, 'source'), name: d.replication, as: 'source' }),
            s
              .target(d.resourceId)
              .trackBaseline({ ...sideOf(d, 'target'), name: d.replication, as: 'target' }),
          ]);
          out[d.resourceId] = {
            source: source.base,
            target: target.base,
            ms: Math.round(performance.now() - t0),
          };
        }
        return out;
      },
      async undo(ctx) {
        await stopReplicationOf(ctx, 'checksum-bulk:undo');
      },
    },
    {
      name: 'copy-blobs',
      timeoutMs: 30 * 60_000,
      // The bulk of the blobs before the freeze; the freeze copies what changed since.
      async run(ctx) {
        const p = planOf(ctx);
        const s = sides(ctx, 'copy-blobs');
        const out: Record<string, { blobs: number; copied: number }> = {};
        const sealTo = await s.sealFor('target');
        for (const b of p.blobs) {
          const r = await copyBlobs(s.source(b.resourceId), s.target(b.resourceId), b.desired, sealTo);
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
        const s = sides(ctx, 'freeze-writes');
        const m = await migrationRow(db, ctx.input.migrationId);
        const frozenAt = (m.freeze_started_at ?? new Date()).toISOString();
        await setFrozen(ctx.input.migrationId, true);
        await s.source().setLogin({ roles: p.databases.map((d) => d.role), login: false });
        // The access taken is recorded before it is taken, so a re-run after a crash (which would
        // observe none) still knows what to give back on an undo.
        const grants: Record<string, AccessGrant> = {};
        for (const b of p.blobs) {
          const kept = await asPlatform(db, (trx) =>
            sql<{ grant: AccessGrant | null }>`select plan->'blobGrants'->${b.resourceId} as grant
              from tenant_migrations where id = ${ctx.input.migrationId}`.execute(trx),
          );
          const grant =
            kept.rows[0]?.grant ?? (await s.source(b.resourceId).observeAccess({ desired: b.desired }));
          if (!kept.rows[0]?.grant)
            await asPlatform(db, (trx) =>
              sql`update tenant_migrations set plan = jsonb_set(plan, '{blobGrants}',
                    coalesce(plan->'blobGrants', '{}'::jsonb) || jsonb_build_object(${b.resourceId}::text, ${JSON.stringify(grant)}::jsonb))
                  where id = ${ctx.input.migrationId}`.execute(trx),
            );
          await s.source(b.resourceId).revokeAccess({ desired: b.desired, grant });
          grants[b.resourceId] = grant;
        }
        return { frozenAt, grants };
      },
      async checkpoint(trx, ctx, output) {
        await recordFreezeStart(trx, ctx.input.migrationId, output);
      },
      async undo(ctx, output) {
        const p = planOf(ctx);
        const s = sides(ctx, 'freeze-writes:undo');
        await s.source().setLogin({ roles: p.databases.map((d) => d.role), login: true });
        const grants = (output as { grants?: Record<string, AccessGrant> }).grants ?? {};
        for (const b of p.blobs) {
          const grant = grants[b.resourceId];
          if (grant) await s.source(b.resourceId).restoreAccess({ desired: b.desired, grant });
        }
        await recordFreezeUndone(db, ctx.input.migrationId);
      },
    },
    {
      name: 'sync-and-verify',
      timeoutMs: 30 * 60_000,
      // Databases: the frozen source all in the target, sequences set, row counts and checksums
      // equal. Blobs: the last changes copied, every blob's MD5 equal on both sides. Topics: no drift.
      async run(ctx) {
        const p = planOf(ctx);
        const s = sides(ctx, 'sync-and-verify');
        const logical = p.mode === 'logical-replication';
        const bulk = ctx.outputs['checksum-bulk'] as Record<string, Baselines> | undefined;
        const databases: Record<string, Verification> = {};
        const sealTo = await s.sealFor('target');
        for (const d of p.databases) {
          const [source, target] = [s.source(d.resourceId), s.target(d.resourceId)];
          // The rows by the subscription, or (freeze-copy) pulled now through a reader of their own.
          if (!logical) {
            const reader = await source.openReader({
              ...sideOf(d, 'source'),
              name: d.replication,
              publish: false,
              sealTo,
            });
            await target.pull({ ...sideOf(d, 'target'), name: d.replication, from: reader.connection });
          }
          const bases = bulk?.[d.resourceId];
          const tracked = (side: 'source' | 'target') =>
            bases?.source ? { tracked: { name: d.replication, base: bases[side] } } : {};
          const frozen = await source.checks({ ...sideOf(d, 'source'), ...tracked('source') });
          const { lsn } = logical
            ? await source.walPosition({ ...sideOf(d, 'source'), name: d.replication })
            : { lsn: '' };
          const v = await target.verifyAgainst({
            ...sideOf(d, 'target'),
            ...tracked('target'),
            source: frozen,
            timeoutMs: deps.verifyTimeoutMs ?? 60_000,
            ...(logical ? { subscription: { name: d.replication, lsn } } : {}),
          });
          const { values } = await source.sequences(sideOf(d, 'source'));
          await target.setSequences({ ...sideOf(d, 'target'), values });
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
          const r = await copyBlobs(s.source(b.resourceId), s.target(b.resourceId), b.desired, sealTo);
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
        const topics = p.topics.length > 0 ? await s.target().observeTopics({ topics: p.topics }) : {};
        for (const t of p.topics) {
          const o = topics[t.resourceId];
          if (!o?.exists || o.drift.length > 0)
            throw new ProviderError(
              `topic ${t.desired.physicalName} in ${p.toRegion}: ${o?.drift.join('; ') || 'missing'}`,
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
        await stopReplicationOf(ctx, 'detach-target');
        return { detached: planOf(ctx).databases.length };
      },
    },
    {
      name: 'cut-over',
      // The target's role may log in, its databases are observed (credentials still under its key)
      // for the status the switch writes; the agents' kept credentials are switched (just before: a
      // re-run finds them switched); the registry switches region in the checkpoint.
      async run(ctx) {
        const p = planOf(ctx);
        const s = sides(ctx, 'cut-over');
        await s.target().setLogin({ roles: p.databases.map((d) => d.role), login: true });
        const arrived = await s.target().observeArrived({
          databases: p.databases.map((d) => ({ resourceId: d.resourceId, desired: targetDesired(d) })),
        });
        await renameAgentSecrets(p, s, 'forward');
        return { cutOverAt: new Date().toISOString(), arrived };
      },
      async checkpoint(trx, ctx, output) {
        await switchTenantRegion(trx, ctx, planOf(ctx), 'forward', output as Switched);
      },
    },
  ];

  async function stopReplicationOf(ctx: StepContext<RegionMigrationInput>, step: string) {
    await closeStreams(planOf(ctx), sides(ctx, step));
  }

  return {
    type: MIGRATE_REGION,
    steps,
    compensated: async (trx, ctx, reason) => {
      await clearSealedOf(trx, ctx.workflowId);
      await sql`update tenant_migrations set state = case when state = 'Running' then 'Failed' else state end,
          writes_frozen = false, error = ${reason.slice(0, 2000)}, updated_at = now()
        where id = ${ctx.input.migrationId}`.execute(trx);
    },
  };
}

/**
 * The generated credentials an agent keeps, switched as the registry switches (the control
 * plane's own are switched in its table, ./region-switch.ts): forward, the source's go under the
 * source key and the target's become the resource's; back, the other way round.
 */
export async function renameAgentSecrets(
  p: RegionMigrationPlan,
  s: ReturnType<typeof regionSides>,
  direction: 'forward' | 'back',
) {
  const forward = direction === 'forward';
  if (p.sourceAgent)
    await s.source().renameSecrets({
      moves: p.databases.map((d) =>
        forward ? { from: d.resourceId, to: d.sourceKey } : { from: d.sourceKey, to: d.resourceId },
      ),
    });
  if (p.targetAgent)
    await s.target().renameSecrets({
      moves: p.databases.map((d) =>
        forward ? { from: d.targetKey, to: d.resourceId } : { from: d.resourceId, to: d.targetKey },
      ),
    });
}

/**
 * One region's copy of a region migration removed: the source's when the migration is retired (its
 * kept credentials under the source key), the target's when it is rolled back (under the target
 * key): the database (schema or database, and role), blob container and topics.
 */
export async function dropRegionCopy(
  side: RegionSide,
  plan: RegionMigrationPlan,
  which: 'source' | 'target',
): Promise<string[]> {
  const source = which === 'source';
  await side.removeResources({
    databases: plan.databases.map((d) => ({ ...d.desired, id: source ? d.sourceKey : d.targetKey })),
    blobs: plan.blobs.map((b) => b.desired),
    topics: plan.topics.map((t) => t.desired),
  });
  const region = source ? plan.fromRegion : plan.toRegion;
  return [
    ...plan.databases.map((d) => `database ${region}/${source ? d.database : d.targetDatabase}.${d.schema}`),
    ...plan.blobs.map((b) => `blobs ${region}/${b.desired.physicalName}`),
    ...plan.topics.map((t) => `topic ${region}/${t.desired.physicalName}`),
  ];
}
