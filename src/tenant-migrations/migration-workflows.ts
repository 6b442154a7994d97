import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import { recordChange } from '../changes/change-path.js';
import { systemContext } from '../context/request-context.js';
import type { ProviderSet } from '../controller/providers.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import type { Clock } from '../domain/clock.js';
import type { Placement } from '../placement/placement.policy.js';
import type { Isolation } from '../placement/placement.rules.js';
import { ProviderError, type ResourceProvider } from '../providers/provider.js';
import { findById, updateObject } from '../registry/object.repository.js';
import { lifecycleWorkflowTypes } from '../workflows/lifecycle-workflows.js';
import type {
  StepContext,
  StepDefinition,
  WorkflowDefinition,
  WorkflowRegistry,
} from '../workflows/workflow.js';
import { type Arrival, settleArrivals } from './arrived-status.js';
import { failoverWorkflow } from './failover.js';
import { type BackBulk, IsolationDataPlane } from './isolation-dataplane.js';
import { agentIsolationExecutor, localIsolationExecutor, migrationAgentCell } from './isolation-executor.js';
import {
  bindingOf,
  changeOf,
  copiable,
  copyMode,
  type MigrationDeps,
  type MigrationPlan,
  migrationRow,
  type ResourcePlan,
  readMigration,
  recordFreezeStart,
  recordFreezeUndone,
  recordSwitch,
  savePlan,
  workflowKey,
} from './migration-records.js';
import type { Verification } from './pg-copy.js';
import {
  dropRegionCopy,
  type RegionMigrationPlan,
  regionMigrationWorkflow,
  regionSides,
} from './region-migration.js';
import { regionRollbackWorkflow } from './region-rollback.js';
import type { Switched } from './region-switch.js';
import { establishStandbyWorkflow } from './standby.js';
import type { Baselines } from './tracked-checksums.js';

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

  const provider = (): ResourceProvider => {
    const slot = deps.providers.database;
    if (!('provider' in slot)) throw new ProviderError(slot.missing, 'ProviderNotConfigured', false);
    return slot.provider;
  };
  const local = localIsolationExecutor(
    new IsolationDataPlane({ dataplaneUrl, provider, verifyTimeoutMs: deps.verifyTimeoutMs }),
  );
  /**
   * Where a step's data-plane work runs: here, or (the plan names an agent's cell) by that agent as
   * its commands, keyed by the workflow and step (./isolation-executor.ts).
   */
  const on = (
    plan: { agentCell?: string } | undefined,
    ctx: { workflowId: string; signal: AbortSignal },
    step: string,
  ) =>
    plan?.agentCell
      ? agentIsolationExecutor(db, plan.agentCell, `${ctx.workflowId}:${step}`, ctx.signal)
      : local;

  const planOf = (ctx: StepContext<IsolationMigrationInput>) =>
    ctx.outputs['check-eligibility'] as MigrationPlan;
  const owned = (ctx: StepContext<{ tenantSlug: string }>, plan: MigrationPlan) => ({
    tenantId: ctx.tenantId,
    tenantSlug: ctx.input.tenantSlug,
    resources: plan.resources,
  });
  /** The generated credentials an agent keeps, switched as the registry switches (the control plane's own switch in its table). */
  const switchAgentSecrets = async (
    ctx: StepContext<unknown>,
    step: string,
    plan: MigrationPlan,
    direction: 'forward' | 'back',
  ) => {
    if (!plan.agentCell) return;
    await on(plan, ctx, step).switchSecrets({
      moves: plan.resources.map((r) =>
        direction === 'forward'
          ? { resourceId: r.resourceId, away: r.sourceKey, home: r.targetKey }
          : { resourceId: r.resourceId, away: r.targetKey, home: r.sourceKey },
      ),
    });
  };

  // The freeze is part of the desired state (suspended): the NOTIFY wakes the agents' feeds at once.
  const setFrozen = (migrationId: string, frozen: boolean) =>
    asPlatform(db, async (trx) => {
      await sql`update tenant_migrations set writes_frozen = ${frozen}, updated_at = now() where id = ${migrationId}`.execute(
        trx,
      );
      await sql`select pg_notify('tenantry_events', tenant_id::text) from tenant_migrations where id = ${migrationId}`.execute(
        trx,
      );
    });

  const isolationSteps: StepDefinition<IsolationMigrationInput>[] = [
    {
      name: 'check-eligibility',
      // Read-only: the tenant's databases of the source model, what their schemas hold, the copy mode,
      // and who runs the data-plane steps (here, or the agent of the cells' data plane).
      async run(ctx) {
        const m = await migrationRow(db, ctx.input.migrationId);
        const agentCell = await migrationAgentCell(
          db,
          m.source.cellUuid,
          m.target.cellUuid,
          ctx.signal,
          `${ctx.workflowId}:check-eligibility`,
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
        const dp = on(agentCell ? { agentCell } : undefined, ctx, 'check-eligibility');
        const seen = await dp.inspect({ schemas: rows.rows.map((r) => r.physical_name) });
        const resources: ResourcePlan[] = [];
        let withoutIdentity: string[] = [];
        for (const [i, row] of rows.rows.entries()) {
          const base = row.scope_slug.replace(/-/g, '_');
          const schema = row.physical_name;
          const inv = seen.inventories[i]!;
          withoutIdentity = [...withoutIdentity, ...copiable({ ...inv, schema })];
          const key = (part: string) => workflowKey(ctx.input.migrationId, row.id, part);
          resources.push({
            resourceId: row.id,
            scopeSlug: row.scope_slug,
            source: { database: agentCell ? seen.database : dpDatabase, schema, role: schema },
            target: { database: `tenantry_${base}`, schema: 'public', role: `tenantry_${base}` },
            targetKey: key('target'),
            sourceKey: key('source'),
            replication: `tenantry_m_${ctx.input.migrationId.replace(/-/g, '').slice(0, 12)}_${resources.length}`,
            tables: inv.tables,
          });
        }
        const plan: MigrationPlan = {
          ...copyMode('the data-plane server', seen.walLevel, withoutIdentity),
          resources,
          ...(agentCell ? { agentCell } : {}),
        };
        if (m.state !== 'Running')
          throw new ProviderError(`migration is ${m.state}`, 'MigrationNotRunning', false);
        return plan;
      },
      async checkpoint(trx, ctx, output) {
        await savePlan(trx, ctx.input.migrationId, output as MigrationPlan);
      },
    },
    {
      name: 'create-target',
      // The dedicated database and its own role, with new credentials (kept under the target key).
      async run(ctx) {
        return on(planOf(ctx), ctx, 'create-target').createTarget(owned(ctx, planOf(ctx)));
      },
      async undo(ctx) {
        await on(planOf(ctx), ctx, 'create-target:undo').dropTarget(owned(ctx, planOf(ctx)));
      },
    },
    {
      name: 'copy-schema',
      async run(ctx) {
        return on(planOf(ctx), ctx, 'copy-schema').copySchema({ resources: planOf(ctx).resources });
      },
    },
    {
      name: 'start-replication',
      async run(ctx) {
        const plan = planOf(ctx);
        if (plan.mode !== 'logical-replication') return { skipped: plan.modeReason };
        return on(plan, ctx, 'start-replication').startReplication({ resources: plan.resources });
      },
      async undo(ctx) {
        await on(planOf(ctx), ctx, 'start-replication:undo').stopReplication({
          resources: planOf(ctx).resources,
        });
      },
    },
    {
      name: 'wait-synced',
      timeoutMs: 30 * 60_000,
      // The initial copy done and the stream caught up: what is left for the freeze is the last seconds.
      async run(ctx) {
        const plan = planOf(ctx);
        if (plan.mode !== 'logical-replication') return { skipped: plan.modeReason };
        // Asked in turns of 10 s (an agent answers each), the workers' failures counted across them.
        let errorsSeen: Record<string, number> | undefined;
        for (;;) {
          const r = await on(plan, ctx, 'wait-synced').waitSynced({
            resources: plan.resources,
            waitMs: 10_000,
            errorsSeen,
          });
          if (r.synced) return { lagBytes: r.lagBytes };
          errorsSeen = r.errorsSeen;
          if (ctx.signal.aborted)
            throw new ProviderError('the initial copy is not done in time', 'NotSynced', true);
        }
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
        return on(plan, ctx, 'checksum-bulk').checksumBulk({ resources: plan.resources });
      },
      async undo(ctx) {
        await on(planOf(ctx), ctx, 'checksum-bulk:undo').stopReplication({
          resources: planOf(ctx).resources,
        });
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
        await on(planOf(ctx), ctx, 'freeze-writes').setLogin({
          roles: planOf(ctx).resources.map((r) => r.source.role),
          login: false,
        });
        return { frozenAt };
      },
      async checkpoint(trx, ctx, output) {
        await recordFreezeStart(trx, ctx.input.migrationId, output);
      },
      async undo(ctx) {
        await on(planOf(ctx), ctx, 'freeze-writes:undo').setLogin({
          roles: planOf(ctx).resources.map((r) => r.source.role),
          login: true,
        });
        await recordFreezeUndone(db, ctx.input.migrationId);
      },
    },
    {
      name: 'sync-and-verify',
      timeoutMs: 30 * 60_000,
      // The frozen source, all of it in the target (streamed, or copied now), sequences set, and proven equal.
      async run(ctx) {
        const plan = planOf(ctx);
        const out: Record<string, Verification> = await on(plan, ctx, 'sync-and-verify').syncAndVerify({
          mode: plan.mode,
          resources: plan.resources,
          ...(ctx.outputs['checksum-bulk'] && !('skipped' in (ctx.outputs['checksum-bulk'] as object))
            ? { baselines: ctx.outputs['checksum-bulk'] as Record<string, Baselines> }
            : {}),
        });
        const unequal = plan.resources.map((r) => out[r.resourceId]).find((v) => !v?.equal);
        if (unequal || Object.keys(out).length < plan.resources.length) {
          await asPlatform(db, (trx) =>
            sql`update tenant_migrations set verification = ${JSON.stringify(out)} where id = ${ctx.input.migrationId}`.execute(
              trx,
            ),
          );
          const bad = (unequal?.tables ?? []).filter(
            (t) => t.sourceChecksum !== t.targetChecksum || t.sourceRows !== t.targetRows,
          );
          throw new ProviderError(
            `verification failed: ${bad.map((t) => `${t.table} ${t.sourceRows}/${t.targetRows} rows`).join(', ')}`,
            'VerificationFailed',
            false,
          );
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
        return on(planOf(ctx), ctx, 'detach-target').detachTarget({ resources: planOf(ctx).resources });
      },
    },
    {
      name: 'cut-over',
      // The target's role may log in (ensure made it so); the registry switches in the checkpoint
      // (and an agent's kept credentials here, just before: a re-run finds them switched).
      // The target is observed (credentials still under its key) for the status the switch writes.
      async run(ctx) {
        const dp = on(planOf(ctx), ctx, 'cut-over');
        await dp.setLogin({ roles: planOf(ctx).resources.map((r) => r.target.role), login: true });
        const arrived = await dp.observeArrived({ ...owned(ctx, planOf(ctx)), side: 'target' });
        await switchAgentSecrets(ctx, 'cut-over', planOf(ctx), 'forward');
        return { cutOverAt: new Date().toISOString(), arrived };
      },
      async checkpoint(trx, ctx, output) {
        await switchPlacement(trx, ctx, planOf(ctx), 'forward', (output as Switched).arrived);
      },
    },
  ];

  /**
   * The registry side of a cut-over (or of a rollback, `back`), in one transaction: the database
   * resources' model and physical name, the secrets (the resource's reference now resolves to the
   * other side's credentials, the old ones kept under their key), the tenant's placement and spec,
   * the cells' allocations, the migration record, the `tenant.migrated` (or
   * `tenant.migration_rolled_back`) event with the previous and new placement, and audit records.
   */
  async function switchPlacement(
    trx: Trx,
    { tenantId, input: { migrationId } }: StepContext<{ migrationId: string }>,
    plan: MigrationPlan,
    direction: 'forward' | 'back',
    arrived: Arrival[] = [],
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
    await recordSwitch(trx, ctx, { tenantId, tenantSlug: t.slug, migrationId, from, to }, direction);
    await settleArrivals(
      trx,
      ctx,
      plan.resources.map((r) => r.resourceId),
      arrived,
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
      name: 'copy-back-bulk',
      timeoutMs: 30 * 60_000,
      // Before the freeze, while the tenant writes on the silo: its changed rows journalled from
      // now on, every table copied back whole, and both sides' checksums baselined (hash journals,
      // tracked-checksums.ts), so that the freeze moves and reads only what changed since.
      async run(ctx) {
        const plan = rollbackPlan(ctx);
        if (plan.mode !== 'logical-replication') return { skipped: plan.modeReason };
        return on(plan, ctx, 'copy-back-bulk').copyBackBulk({ resources: plan.resources });
      },
      async checkpoint(trx, ctx, output) {
        const ms = Object.values(output as Record<string, Partial<BackBulk>>).reduce(
          (n, b) => n + (b.copiedMs ?? 0),
          0,
        );
        await sql`update tenant_migrations set rollback_verification = coalesce(rollback_verification, '{}'::jsonb)
            || jsonb_build_object('bulk', jsonb_build_object('ms', ${ms}::int))
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
      async undo(ctx) {
        const plan = rollbackPlan(ctx);
        await on(plan, ctx, 'copy-back-bulk:undo').untrackBack({ resources: plan.resources });
      },
    },
    {
      name: 'freeze-writes',
      async run(ctx) {
        await setFrozen(ctx.input.migrationId, true);
        await on(rollbackPlan(ctx), ctx, 'freeze-writes').setLogin({
          roles: rollbackPlan(ctx).resources.map((r) => r.target.role),
          login: false,
        });
        return { frozenAt: new Date().toISOString() };
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set rollback_verification = coalesce(rollback_verification, '{}'::jsonb)
            || jsonb_build_object('frozenAt', ${(output as { frozenAt: string }).frozenAt}::text)
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
      async undo(ctx) {
        await on(rollbackPlan(ctx), ctx, 'freeze-writes:undo').setLogin({
          roles: rollbackPlan(ctx).resources.map((r) => r.target.role),
          login: true,
        });
        await setFrozen(ctx.input.migrationId, false);
      },
    },
    {
      name: 'copy-back',
      timeoutMs: 30 * 60_000,
      // Everything the tenant holds now (writes since the cut-over included) back into the source:
      // the rows changed since the bulk copy (or, without one, every row), proven equal.
      async run(ctx) {
        const plan = rollbackPlan(ctx);
        const bulk = ctx.outputs['copy-back-bulk'] as Record<string, BackBulk | undefined>;
        const out = await on(plan, ctx, 'copy-back').copyBack({ resources: plan.resources, bulk });
        if (plan.resources.some((r) => !out[r.resourceId]?.equal))
          throw new ProviderError('verification of the copy back failed', 'VerificationFailed', false);
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
        const plan = rollbackPlan(ctx);
        // No change tracking is left on the pool's tables before the tenant writes there again
        // (the silo's goes with its database, in drop-target, after the freeze).
        await on(plan, ctx, 'restore-source:untrack').untrackPool({ resources: plan.resources });
        const dp = on(plan, ctx, 'restore-source');
        await dp.setLogin({ roles: plan.resources.map((r) => r.source.role), login: true });
        const arrived = await dp.observeArrived({ ...owned(ctx, plan), side: 'source' });
        await switchAgentSecrets(ctx, 'restore-source', plan, 'back');
        return { restored: plan.resources.length, arrived };
      },
      async checkpoint(trx, ctx, output) {
        await switchPlacement(trx, ctx, rollbackPlan(ctx), 'back', (output as Switched).arrived);
      },
    },
    {
      name: 'drop-target',
      async run(ctx) {
        return on(rollbackPlan(ctx), ctx, 'drop-target').dropTarget(owned(ctx, rollbackPlan(ctx)));
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
        if ((m.plan as { kind?: string }).kind === 'region') {
          const plan = m.plan as unknown as RegionMigrationPlan;
          const source = regionSides(deps, plan, ctx, 'drop-source').source();
          return { dropped: await dropRegionCopy(source, plan, 'source') };
        }
        const plan = m.plan as MigrationPlan;
        return on(plan, ctx, 'drop-source').dropSource(owned(ctx, plan));
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
