import { sql } from 'kysely';
import pg from 'pg';
import { remoteAgentCells } from '../agent/agent-commands.js';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import { recordChange } from '../changes/change-path.js';
import { systemContext } from '../context/request-context.js';
import type { ProviderSet } from '../controller/providers.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import type { Clock } from '../domain/clock.js';
import type { Placement } from '../placement/placement.policy.js';
import type { Isolation } from '../placement/placement.rules.js';
import { type DesiredResource, ProviderError, type ResourceProvider } from '../providers/provider.js';
import { findById, updateObject } from '../registry/object.repository.js';
import { lifecycleWorkflowTypes } from '../workflows/lifecycle-workflows.js';
import type {
  StepContext,
  StepDefinition,
  WorkflowDefinition,
  WorkflowRegistry,
} from '../workflows/workflow.js';
import { failoverWorkflow } from './failover.js';
import {
  bindingOf,
  changeOf,
  type MigrationDeps,
  type MigrationPlan,
  migrationRow,
  type ResourcePlan,
  readMigration,
  workflowKey,
} from './migration-records.js';
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
import { type RegionMigrationPlan, regionMigrationWorkflow, retireRegionSource } from './region-migration.js';
import { regionRollbackWorkflow } from './region-rollback.js';
import { establishStandbyWorkflow } from './standby.js';
import {
  type Baselines,
  checksumBulk,
  type TrackedPair,
  untrackPair,
  verifyFrozen,
} from './tracked-checksums.js';

const { escapeIdentifier: id } = pg;

export const MIGRATE_ISOLATION = 'migration.isolation';
export const ROLLBACK_MIGRATION = 'migration.rollback';
export const RETIRE_MIGRATION = 'migration.retire';

/** What a tenancy-mode migration is asked to do (the request wrote the rest into `tenant_migrations`). */
export interface IsolationMigrationInput {
  migrationId: string;
  tenantSlug: string;
  from: Isolation;
  to: Isolation;
}

export interface RollbackInput {
  migrationId: string;
  tenantSlug: string;
}

/**
 * The tenancy-mode migration (pool → silo) and its rollback, as workflows of the orchestrator
 * (src/workflows). Every step is safe to run twice and names its undo; the registry changes of the
 * cut-over and of the rollback are written in one transaction with their step's checkpoint.
 */
export function migrationWorkflows(deps: MigrationDeps): WorkflowDefinition<never>[] {
  const { db, dataplaneUrl } = deps;
  const dpDatabase = decodeURIComponent(new URL(dataplaneUrl).pathname.slice(1)) || 'postgres';
  const urlOf = (database: string) => databaseUrl(dataplaneUrl, database);

  const provider = (): ResourceProvider => {
    const slot = deps.providers.database;
    if (!('provider' in slot)) throw new ProviderError(slot.missing, 'ProviderNotConfigured', false);
    return slot.provider;
  };

  const targetDesired = (tenantId: string, tenantSlug: string, r: ResourcePlan): DesiredResource => ({
    id: r.targetKey,
    type: 'database',
    tenantId,
    tenantSlug,
    scopeSlug: r.scopeSlug,
    physicalName: r.target.role,
    database: { isolation: 'silo' },
  });

  const planOf = (ctx: StepContext<IsolationMigrationInput>) =>
    ctx.outputs['check-eligibility'] as MigrationPlan;

  /** NOLOGIN (or LOGIN) for a role, and its open sessions ended when taken away. */
  const setLogin = async (role: string, login: boolean) =>
    withClient(urlOf(dpDatabase), async (c) => {
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

  const verifyUntilEqual = async (
    r: ResourcePlan,
    targetSchema: string,
    timeoutMs: number,
  ): Promise<Verification> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Both sides at once, each in one snapshot: the freeze lasts as long as this takes.
      const [source, target] = await Promise.all([
        withClient(urlOf(r.source.database), (s) => checksums(s, r.source.schema, r.tables)),
        withClient(urlOf(r.target.database), (t) => checksums(t, targetSchema, r.tables)),
      ]);
      const v = compare(source, target);
      if (v.equal || Date.now() > deadline) return v;
      await new Promise((res) => setTimeout(res, 50));
    }
  };

  /**
   * Waits (at most 3 s) until the subscription has received the source's WAL up to now, so that
   * the checksums are usually computed once; the checksums, not this, decide.
   */
  const caughtUp = async (r: ResourcePlan) => {
    const lsn = await withClient(urlOf(r.source.database), async (s) => {
      return (await s.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!.lsn;
    });
    const deadline = Date.now() + 3_000;
    await withClient(urlOf(r.target.database), async (t) => {
      while (Date.now() < deadline) {
        const q = await t.query<{ done: boolean }>(
          `select coalesce(bool_and(received_lsn >= $2::pg_lsn), false) as done
           from pg_stat_subscription where subname = $1 and relid is null`,
          [r.replication, lsn],
        );
        if (q.rows[0]?.done) return;
        await new Promise((res) => setTimeout(res, 20));
      }
    });
  };

  const isolationSteps: StepDefinition<IsolationMigrationInput>[] = [
    {
      name: 'check-eligibility',
      // Read-only: the tenant's databases of the source model, what their schemas hold, the copy mode.
      async run(ctx) {
        const m = await migrationRow(db, ctx.input.migrationId);
        // An agent joined one of the cells since the request: its data plane is not ours to touch.
        const agentCells = await asPlatform(db, (trx) =>
          remoteAgentCells(trx, [m.source.cellUuid, m.target.cellUuid]),
        );
        if (agentCells.length > 0)
          throw new ProviderError(
            `cell ${agentCells.join(', ')} is run by its own agent; the control plane does not reach into its data plane`,
            'AgentCell',
            false,
          );
        const rows = await asPlatform(db, (trx) =>
          sql<{ id: string; physical_name: string; scope_slug: string }>`
            select r.id, r.physical_name, coalesce(d.slug, t.slug) as scope_slug
            from integration_resources r join tenants t on t.id = r.tenant_id
            left join deployments d on d.id = r.deployment_id
            where r.tenant_id = ${ctx.tenantId} and r.deleted_at is null and r.spec->>'type' = 'database'
              and r.spec->'database'->>'isolation' = ${ctx.input.from}
            order by r.id`.execute(trx),
        );
        const resources: ResourcePlan[] = [];
        let withoutIdentity: string[] = [];
        let level = '';
        for (const row of rows.rows) {
          const base = row.scope_slug.replace(/-/g, '_');
          const schema = row.physical_name;
          const inv = await withClient(urlOf(dpDatabase), async (c) => {
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
          withoutIdentity = [...withoutIdentity, ...inv.withoutIdentity.map((t) => `${schema}.${t}`)];
          const key = (part: string) => workflowKey(ctx.input.migrationId, row.id, part);
          resources.push({
            resourceId: row.id,
            scopeSlug: row.scope_slug,
            source: { database: dpDatabase, schema, role: schema },
            target: { database: `tenantry_${base}`, schema: 'public', role: `tenantry_${base}` },
            targetKey: key('target'),
            sourceKey: key('source'),
            replication: `tenantry_m_${ctx.input.migrationId.replace(/-/g, '').slice(0, 12)}_${resources.length}`,
            tables: inv.tables,
          });
        }
        const logical = level === 'logical' && withoutIdentity.length === 0;
        const plan: MigrationPlan = {
          mode: logical ? 'logical-replication' : 'freeze-copy',
          modeReason: logical
            ? 'wal_level is logical and every table has a replica identity: writes are frozen only for the cut-over'
            : level !== 'logical'
              ? `the data-plane server's wal_level is ${level || 'unknown'}, not logical: the data is copied during the write freeze`
              : `tables without a primary key or replica identity (${withoutIdentity.join(', ')}): the data is copied during the write freeze`,
          resources,
        };
        if (m.state !== 'Running')
          throw new ProviderError(`migration is ${m.state}`, 'MigrationNotRunning', false);
        return plan;
      },
      async checkpoint(trx, ctx, output) {
        const plan = output as MigrationPlan;
        await sql`update tenant_migrations set plan = ${JSON.stringify(plan)}, mode = ${plan.mode}, updated_at = now()
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
    },
    {
      name: 'create-target',
      // The dedicated database and its own role, with new credentials (kept under the target key).
      async run(ctx) {
        for (const r of planOf(ctx).resources)
          await provider().ensure(targetDesired(ctx.tenantId, ctx.input.tenantSlug, r));
        return { databases: planOf(ctx).resources.map((r) => r.target.database) };
      },
      async undo(ctx) {
        for (const r of planOf(ctx).resources)
          await provider().delete(targetDesired(ctx.tenantId, ctx.input.tenantSlug, r));
      },
    },
    {
      name: 'copy-schema',
      async run(ctx) {
        let statements = 0;
        for (const r of planOf(ctx).resources) {
          const ddl = await withClient(urlOf(r.source.database), (c) => schemaDdl(c, r.source.schema));
          await withClient(urlOf(r.target.database), (c) =>
            createSchema(c, r.source.schema, r.target.role, ddl),
          );
          statements += ddl.length;
        }
        return { statements };
      },
    },
    {
      name: 'start-replication',
      async run(ctx) {
        const plan = planOf(ctx);
        if (plan.mode !== 'logical-replication') return { skipped: plan.modeReason };
        for (const r of plan.resources)
          await withClient(urlOf(r.source.database), (s) =>
            withClient(urlOf(r.target.database), (t) =>
              startReplication(s, t, {
                name: r.replication,
                schema: r.source.schema,
                sourceUrl: urlOf(r.source.database),
              }),
            ),
          );
        return { replicating: plan.resources.map((r) => r.replication) };
      },
      async undo(ctx) {
        for (const r of planOf(ctx).resources) await stopReplicationOf(r);
      },
    },
    {
      name: 'wait-synced',
      timeoutMs: 30 * 60_000,
      // The initial copy done and the stream caught up: what is left for the freeze is the last seconds.
      async run(ctx) {
        const plan = planOf(ctx);
        if (plan.mode !== 'logical-replication') return { skipped: plan.modeReason };
        const lag: Record<string, number | null> = {};
        for (const r of plan.resources) {
          for (;;) {
            const left = await withClient(urlOf(r.target.database), (t) =>
              tablesSyncing(t, r.replication, r.tables.length),
            );
            lag[r.replication] = await withClient(urlOf(r.source.database), (s) =>
              replicationLag(s, r.replication),
            );
            if (left === 0 && (lag[r.replication] ?? 0) < 16 * 1024 * 1024) break;
            if (ctx.signal.aborted)
              throw new ProviderError('the initial copy is not done in time', 'NotSynced', true);
            await new Promise((res) => setTimeout(res, 200));
          }
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
        const plan = planOf(ctx);
        if (plan.mode !== 'logical-replication') return { skipped: plan.modeReason };
        const out: Record<string, Baselines> = {};
        for (const r of plan.resources) out[r.resourceId] = await checksumBulk(pairOf(r));
        return out;
      },
      async undo(ctx) {
        for (const r of planOf(ctx).resources) await stopReplicationOf(r);
      },
    },
    {
      name: 'freeze-writes',
      // From here the tenant's credentials are refused until the cut-over (the freeze whose length is recorded).
      async run(ctx) {
        // The freeze starts before the first refusal (a re-run keeps the first start).
        const m = await migrationRow(db, ctx.input.migrationId);
        const frozenAt = (m.freeze_started_at ?? new Date()).toISOString();
        await setFrozen(ctx.input.migrationId, true);
        for (const r of planOf(ctx).resources) await setLogin(r.source.role, false);
        return { frozenAt };
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set freeze_started_at = coalesce(freeze_started_at, ${(output as { frozenAt: string }).frozenAt}::timestamptz)
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
      async undo(ctx) {
        for (const r of planOf(ctx).resources) await setLogin(r.source.role, true);
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
      // The frozen source, all of it in the target (streamed, or copied now), sequences set, and proven equal.
      async run(ctx) {
        const plan = planOf(ctx);
        const out: Record<string, Verification> = {};
        for (const r of plan.resources) {
          if (plan.mode === 'freeze-copy')
            await withClient(urlOf(r.source.database), (s) =>
              withClient(urlOf(r.target.database), (t) =>
                copyTables(s, t, {
                  fromSchema: r.source.schema,
                  toSchema: r.source.schema,
                  tables: r.tables,
                }),
              ),
            );
          if (plan.mode === 'logical-replication') await caughtUp(r);
          const bases = (ctx.outputs['checksum-bulk'] as Record<string, Baselines> | undefined)?.[
            r.resourceId
          ];
          const v = bases
            ? await verifyFrozen(pairOf(r), bases, deps.verifyTimeoutMs ?? 60_000)
            : await verifyUntilEqual(r, r.source.schema, deps.verifyTimeoutMs ?? 60_000);
          await withClient(urlOf(r.source.database), (s) =>
            withClient(urlOf(r.target.database), (t) =>
              syncSequences(s, t, r.source.schema, r.source.schema),
            ),
          );
          out[r.resourceId] = v;
          if (!v.equal) {
            await asPlatform(db, (trx) =>
              sql`update tenant_migrations set verification = ${JSON.stringify(out)} where id = ${ctx.input.migrationId}`.execute(
                trx,
              ),
            );
            const bad = v.tables.filter(
              (t) => t.sourceChecksum !== t.targetChecksum || t.sourceRows !== t.targetRows,
            );
            throw new ProviderError(
              `verification failed: ${bad.map((t) => `${t.table} ${t.sourceRows}/${t.targetRows} rows`).join(', ')}`,
              'VerificationFailed',
              false,
            );
          }
        }
        return out;
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set verification = ${JSON.stringify(output)}, updated_at = now()
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
    },
    {
      name: 'detach-target',
      // The copy stands alone: replication ended, and its schema becomes the database's `public`.
      async run(ctx) {
        for (const r of planOf(ctx).resources) {
          await stopReplicationOf(r);
          await withClient(urlOf(r.target.database), async (t) => {
            const staged = await t.query('select 1 from pg_namespace where nspname = $1', [r.source.schema]);
            if ((staged.rowCount ?? 0) === 0 || r.source.schema === r.target.schema) return;
            await t.query('begin');
            await t.query(`drop schema if exists ${id(r.target.schema)}`);
            await t.query(`alter schema ${id(r.source.schema)} rename to ${id(r.target.schema)}`);
            await t.query('commit');
          });
        }
        return { detached: planOf(ctx).resources.length };
      },
    },
    {
      name: 'cut-over',
      // The target's role may log in (ensure made it so); the registry switches in the checkpoint.
      async run(ctx) {
        for (const r of planOf(ctx).resources) await setLogin(r.target.role, true);
        return { cutOverAt: new Date().toISOString() };
      },
      async checkpoint(trx, ctx) {
        await switchPlacement(trx, ctx.tenantId, ctx.input.migrationId, planOf(ctx), 'forward');
      },
    },
  ];

  function pairOf(r: ResourcePlan): TrackedPair {
    return {
      sourceUrl: urlOf(r.source.database),
      targetUrl: urlOf(r.target.database),
      tracked: { name: r.replication, schema: r.source.schema, tables: r.tables },
    };
  }

  /** Replication and the checksums' change tracking ended on both sides (parts already gone skipped). */
  async function stopReplicationOf(r: ResourcePlan): Promise<void> {
    await withClient(urlOf(r.source.database), async (s) => {
      const targetExists = await s.query('select 1 from pg_database where datname = $1', [r.target.database]);
      const pair = pairOf(r);
      await untrackPair({
        ...pair,
        targetUrl: (targetExists.rowCount ?? 0) > 0 ? pair.targetUrl : undefined,
      });
      if ((targetExists.rowCount ?? 0) > 0)
        await withClient(urlOf(r.target.database), (t) => stopReplication(s, t, r.replication));
      else await stopReplication(s, undefined, r.replication);
    });
  }

  /**
   * The registry side of a cut-over (or of a rollback, `back`), in one transaction: the database
   * resources' model and physical name, the secrets (the resource's reference now resolves to the
   * other side's credentials, the old ones kept under their key), the tenant's placement and spec,
   * the cells' allocations, the migration record, the `tenant.migrated` (or
   * `tenant.migration_rolled_back`) event with the previous and new placement, and audit records.
   */
  async function switchPlacement(
    trx: Trx,
    tenantId: string,
    migrationId: string,
    plan: MigrationPlan,
    direction: 'forward' | 'back',
  ): Promise<void> {
    const m = await readMigration(trx, migrationId);
    const from = direction === 'forward' ? m.source : m.target;
    const to = direction === 'forward' ? m.target : m.source;
    const ctx = systemContext(`tenantry-workflow ${migrationId}`);
    for (const r of plan.resources) {
      const row = await findById(trx, 'IntegrationResource', r.resourceId, { forUpdate: true });
      if (!row) continue;
      const spec = row.spec as { database?: { isolation: Isolation } };
      const updated = await updateObject(trx, 'IntegrationResource', row.id, {
        spec: JSON.stringify({ ...spec, database: { isolation: to.isolation } }),
        physical_name: direction === 'forward' ? r.target.role : r.source.role,
        phase: 'Pending',
      });
      await recordChange(trx, ctx, changeOf('IntegrationResource', row, updated, 'update'));
      // Keys swap in two statements (a primary key is checked row by row).
      const [away, home] = direction === 'forward' ? [r.sourceKey, r.targetKey] : [r.targetKey, r.sourceKey];
      await sql`update resource_secrets set resource_id = ${away} where resource_id = ${r.resourceId}`.execute(
        trx,
      );
      await sql`update resource_secrets set resource_id = ${r.resourceId} where resource_id = ${home}`.execute(
        trx,
      );
    }
    const t = await findById(trx, 'Tenant', tenantId, { forUpdate: true });
    if (!t) throw new ProviderError('the tenant no longer exists', 'TenantGone', false);
    const placement: Placement = { ...(t.placement as Placement), ...bindingOf(to) };
    const updated = await updateObject(trx, 'Tenant', t.id, {
      spec: JSON.stringify({ ...(t.spec as object), isolation: to.isolation }),
      placement: JSON.stringify(placement),
      cell_id: to.cellUuid,
    });
    await recordChange(
      trx,
      ctx,
      changeOf('Tenant', t, updated, direction === 'forward' ? 'migrate' : 'revert_migration'),
    );
    if (from.cellUuid !== to.cellUuid) {
      await sql`update cells set allocated = greatest(allocated - 1, 0) where id = ${from.cellUuid}`.execute(
        trx,
      );
      await sql`update cells set allocated = allocated + 1 where id = ${to.cellUuid}`.execute(trx);
    }
    if (direction === 'forward')
      await sql`
        update tenant_migrations set state = 'CutOver', cut_over_at = now(), writes_frozen = false,
          freeze_ended_at = now(), freeze_ms = (extract(epoch from now() - freeze_started_at) * 1000)::int,
          rollback_until = now() + make_interval(secs => rollback_window_seconds),
          updated_at = now()
        where id = ${migrationId}`.execute(trx);
    else
      await sql`
        update tenant_migrations set state = 'RolledBack', rolled_back_at = now(), writes_frozen = false,
          rollback_verification = coalesce(rollback_verification, '{}'::jsonb) || jsonb_build_object(
            'freezeMs', (extract(epoch from now() - (rollback_verification->>'frozenAt')::timestamptz) * 1000)::int),
          updated_at = now()
        where id = ${migrationId}`.execute(trx);
    await appendAudit(
      trx,
      auditEntryOf(ctx, {
        tenantId,
        action: direction === 'forward' ? 'migration.cut_over' : 'migration.rolled_back',
        target: { kind: 'Migration', id: migrationId, slug: t.slug },
        before: { placement: bindingOf(from) },
        after: { placement: bindingOf(to) },
        outcome: 'success',
        decision: null,
      }),
    );
    for (const r of plan.resources)
      await enqueueJob(trx, { kind: 'IntegrationResource', objectId: r.resourceId, tenantId, generation: 0 });
  }

  const rollbackPlan = (ctx: StepContext<RollbackInput>) =>
    (ctx.outputs['check-window'] as { plan: MigrationPlan }).plan;

  const rollbackSteps: StepDefinition<RollbackInput>[] = [
    {
      name: 'check-window',
      async run(ctx) {
        const m = await migrationRow(db, ctx.input.migrationId);
        if (m.state !== 'CutOver')
          throw new ProviderError(`the migration is ${m.state}, not CutOver`, 'NotCutOver', false);
        if (!m.rollback_until || m.rollback_until.getTime() < Date.now())
          throw new ProviderError('the rollback window has passed', 'WindowPassed', false);
        return { plan: m.plan as MigrationPlan, rollbackUntil: m.rollback_until.toISOString() };
      },
    },
    {
      name: 'freeze-writes',
      async run(ctx) {
        await setFrozen(ctx.input.migrationId, true);
        for (const r of rollbackPlan(ctx).resources) await setLogin(r.target.role, false);
        return { frozenAt: new Date().toISOString() };
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set rollback_verification = jsonb_build_object('frozenAt', ${(output as { frozenAt: string }).frozenAt}::text)
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
      async undo(ctx) {
        for (const r of rollbackPlan(ctx).resources) await setLogin(r.target.role, true);
        await setFrozen(ctx.input.migrationId, false);
      },
    },
    {
      name: 'copy-back',
      timeoutMs: 30 * 60_000,
      // Everything the tenant holds now (writes since the cut-over included) back into the source.
      async run(ctx) {
        const out: Record<string, Verification> = {};
        for (const r of rollbackPlan(ctx).resources) {
          await withClient(urlOf(r.target.database), (t) =>
            withClient(urlOf(r.source.database), (s) =>
              copyTables(t, s, { fromSchema: r.target.schema, toSchema: r.source.schema, tables: r.tables }),
            ),
          );
          const v = await verifyUntilEqual(r, r.target.schema, 0);
          out[r.resourceId] = v;
          if (!v.equal)
            throw new ProviderError('verification of the copy back failed', 'VerificationFailed', false);
        }
        return out;
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set rollback_verification = rollback_verification || jsonb_build_object('tables', ${JSON.stringify(output)}::jsonb)
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
    },
    {
      name: 'restore-source',
      async run(ctx) {
        for (const r of rollbackPlan(ctx).resources) await setLogin(r.source.role, true);
        return { restored: rollbackPlan(ctx).resources.length };
      },
      async checkpoint(trx, ctx) {
        await switchPlacement(trx, ctx.tenantId, ctx.input.migrationId, rollbackPlan(ctx), 'back');
      },
    },
    {
      name: 'drop-target',
      async run(ctx) {
        for (const r of rollbackPlan(ctx).resources)
          await provider().delete(targetDesired(ctx.tenantId, ctx.input.tenantSlug, r));
        return { dropped: rollbackPlan(ctx).resources.map((r) => r.target.database) };
      },
    },
  ];

  // Retiring: the kept source goes (schema, role, kept credentials); no rollback after this.
  const retireSteps: StepDefinition<RollbackInput>[] = [
    {
      name: 'drop-source',
      async run(ctx) {
        const m = await migrationRow(db, ctx.input.migrationId);
        if (m.state !== 'CutOver' && m.state !== 'Retired')
          throw new ProviderError(`the migration is ${m.state}, not CutOver`, 'NotCutOver', false);
        if ((m.plan as { kind?: string }).kind === 'region')
          return {
            dropped: await retireRegionSource(deps.providers, m.plan as unknown as RegionMigrationPlan),
          };
        const plan = m.plan as MigrationPlan;
        for (const r of plan.resources)
          await provider().delete({
            id: r.sourceKey,
            type: 'database',
            tenantId: ctx.tenantId,
            tenantSlug: ctx.input.tenantSlug,
            scopeSlug: r.scopeSlug,
            physicalName: r.source.role,
            database: { isolation: 'pool' },
          });
        return { dropped: plan.resources.map((r) => `${r.source.database}.${r.source.schema}`) };
      },
      async checkpoint(trx, ctx) {
        await sql`update tenant_migrations set state = 'Retired', retired_at = now(), updated_at = now()
          where id = ${ctx.input.migrationId}`.execute(trx);
        await appendAudit(
          trx,
          auditEntryOf(systemContext(`tenantry-workflow ${ctx.workflowId}`), {
            tenantId: ctx.tenantId,
            action: 'migration.retired',
            target: { kind: 'Migration', id: ctx.input.migrationId, slug: ctx.input.tenantSlug },
            before: null,
            after: { state: 'Retired' },
            outcome: 'success',
            decision: null,
          }),
        );
      },
    },
  ];

  const failed = async (trx: Trx, ctx: { input: { migrationId: string } }, reason: string) => {
    await sql`update tenant_migrations set state = case when state = 'Running' then 'Failed' else state end,
        writes_frozen = false, error = ${reason.slice(0, 2000)}, updated_at = now()
      where id = ${ctx.input.migrationId}`.execute(trx);
  };

  const migrate: WorkflowDefinition<IsolationMigrationInput> = {
    type: MIGRATE_ISOLATION,
    steps: isolationSteps,
    compensated: failed,
  };
  const rollback: WorkflowDefinition<RollbackInput> = {
    type: ROLLBACK_MIGRATION,
    steps: rollbackSteps,
    compensated: async (trx, ctx, reason) => {
      await sql`update tenant_migrations set writes_frozen = false,
            rollback_verification = coalesce(rollback_verification, '{}'::jsonb) || jsonb_build_object('error', ${reason.slice(0, 2000)}::text)
          where id = ${ctx.input.migrationId}`.execute(trx);
    },
  };
  const retire: WorkflowDefinition<RollbackInput> = { type: RETIRE_MIGRATION, steps: retireSteps };
  return [
    migrate,
    rollback,
    retire,
    regionMigrationWorkflow(deps),
    regionRollbackWorkflow(deps),
    establishStandbyWorkflow(deps),
    failoverWorkflow(deps),
  ] as WorkflowDefinition<never>[];
}

/**
 * Every workflow type this process runs: the lifecycle ones and the migrations. Without providers
 * (the API's description of steps) the types are there to be described, not run.
 */
export function workflowTypes(
  db: Db,
  providers?: ProviderSet,
  dataplaneUrl?: string,
  clock?: Clock,
): WorkflowRegistry {
  const none = { missing: 'not used to describe steps' };
  const set: ProviderSet = providers ?? { 'kafka-topic': none, 'blob-container': none, database: none };
  const migrations = migrationWorkflows({
    db,
    providers: set,
    dataplaneUrl: dataplaneUrl ?? 'postgres://127.0.0.1/unused',
  });
  return new Map([
    ...lifecycleWorkflowTypes(db, providers, clock),
    ...migrations.map((d) => [d.type, d] as const),
  ]);
}
