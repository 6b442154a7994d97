import { sql } from 'kysely';
import { type Change, recordChange } from '../changes/change-path.js';
import { systemContext } from '../context/request-context.js';
import { type ProviderSet, slotFor } from '../controller/providers.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import { desiredResource } from '../controller/reconcilers.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { type Clock, systemClock } from '../domain/clock.js';
import { diff } from '../domain/diff.js';
import type { LifecycleAction, LifecycleState } from '../domain/lifecycle.js';
import { issueServiceClient, revokeServiceClients } from '../identity/service-clients.js';
import { type AccessGrant, hasAccessControl } from '../providers/access.js';
import { ProviderError, type ResourceType } from '../providers/provider.js';
import { findById, type ObjectRow, updateObject } from '../registry/object.repository.js';
import { stateOf } from '../registry/representation.js';
import { purgeSteps, purgeWorkflow, startRetentionClock } from './retention.js';
import type { StepContext, StepDefinition, WorkflowDefinition, WorkflowRegistry } from './workflow.js';

/** What a lifecycle workflow is asked to do: the transition its request wrote. */
export interface LifecycleInput {
  action: LifecycleAction;
  from: LifecycleState;
  to: LifecycleState;
  tenantSlug: string;
  generation: number;
}

export const lifecycleType = (action: LifecycleAction) => `lifecycle.${action}`;

interface ResourceAccess {
  id: string;
  type: ResourceType;
  grant: AccessGrant | null;
}

/** What a suspension took away, per resource (`tenant_suspensions.taken`). */
interface Taken {
  resources: ResourceAccess[];
}

export interface LifecycleDeps {
  db: Db;
  providers: ProviderSet;
  /** What retention is judged by (tests move it); default the system clock. */
  clock?: Clock;
}

/**
 * The lifecycle workflows (issue 18) over the real providers. The transition itself (the tenant's
 * `lifecycle`) is written by the request, in the transaction that starts the workflow, so the
 * tenant's own principals are refused writes (423) from that moment; the steps make it true for
 * the credentials, and a failed workflow's compensation writes the previous lifecycle back.
 */
export function lifecycleWorkflows(deps: LifecycleDeps): WorkflowDefinition<LifecycleInput>[] {
  const { db } = deps;
  const clock = deps.clock ?? systemClock;

  const resourcesOf = (tenantId: string) =>
    asPlatform(db, async (trx) => {
      const rows = await sql<ObjectRow>`
        select * from integration_resources where tenant_id = ${tenantId} and deleted_at is null
        order by id`.execute(trx);
      // The embedded default's in-process agent (src/agent/embedded-agents.ts) runs the
      // installation's own providers: taking access away is this workflow's, as without an agent.
      const embedded = await sql<{ id: string }>`
        select a.cell_id as id from tenants t join cell_agents a on a.cell_id = t.cell_id
        where t.id = ${tenantId} and a.embedded`.execute(trx);
      return Promise.all(
        rows.rows.map(async (row) => {
          const r = await desiredResource(trx, row);
          return embedded.rows.length > 0 ? { ...r, agentManaged: false } : r;
        }),
      );
    });

  // A cell with a joined agent (src/agent) is not the control plane's to touch: its agent takes a
  // suspended tenant's access away and gives it back on resume with its providers' ensure (the
  // desired state it pulls says `suspended`; src/providers/provider.ts), as the controller does.
  const accessControlOf = (type: ResourceType, region: string, agentManaged: boolean) => {
    if (agentManaged) return undefined;
    const slot = slotFor(deps.providers, type, region);
    return 'provider' in slot && hasAccessControl(slot.provider) ? slot.provider : undefined;
  };

  /** Applies `op` of each recorded grant of `type`, on resources that still exist. */
  const applyAccess = async (
    tenantId: string,
    taken: Taken,
    type: ResourceType,
    op: 'revokeAccess' | 'restoreAccess',
  ): Promise<{ resources: number }> => {
    // Nothing of this type was taken (or recorded): no provider and no lookup to do.
    if (!taken.resources.some((t) => t.type === type && t.grant)) return { resources: 0 };
    const live = new Map((await resourcesOf(tenantId)).map((r) => [r.desired.id, r]));
    let n = 0;
    for (const t of taken.resources) {
      const r = live.get(t.id);
      if (t.type !== type || !t.grant || !r) continue;
      const ac = accessControlOf(type, r.region, r.agentManaged);
      if (!ac) continue;
      await ac[op](r.desired, t.grant);
      n++;
    }
    return { resources: n };
  };

  const suspensionOf = async (tenantId: string): Promise<Taken> => {
    const r = await asPlatform(db, (trx) =>
      sql<{ taken: Taken }>`select taken from tenant_suspensions where tenant_id = ${tenantId}`.execute(trx),
    );
    return r.rows[0]?.taken ?? { resources: [] };
  };

  const takenFrom = (ctx: StepContext<LifecycleInput>) =>
    (ctx.outputs['record-access'] as Taken | undefined) ?? { resources: [] };

  // Suspension: record, then hold webhooks, then take each kind of access away (undo gives it back).
  const suspendSteps: StepDefinition<LifecycleInput>[] = [
    {
      name: 'record-access',
      // Read-only: what the tenant's credentials may do now; kept as the suspension record.
      async run(ctx) {
        // Already suspended (archiving a Suspended tenant, or a re-run): that record stands.
        const existing = await asPlatform(db, (trx) =>
          sql<{
            taken: Taken;
          }>`select taken from tenant_suspensions where tenant_id = ${ctx.tenantId}`.execute(trx),
        );
        if (existing.rows[0]) return existing.rows[0].taken;
        const taken: Taken = { resources: [] };
        for (const { desired, region, agentManaged } of await resourcesOf(ctx.tenantId)) {
          const ac = accessControlOf(desired.type, region, agentManaged);
          taken.resources.push({
            id: desired.id,
            type: desired.type,
            grant: ac ? await ac.observeAccess(desired) : null,
          });
        }
        return taken;
      },
      async checkpoint(trx, ctx, output) {
        await sql`
          insert into tenant_suspensions (tenant_id, workflow_id, taken)
          values (${ctx.tenantId}, ${ctx.workflowId}, ${JSON.stringify(output)})
          on conflict (tenant_id) do nothing`.execute(trx);
      },
      async undo(ctx) {
        await asPlatform(db, (trx) =>
          sql`delete from tenant_suspensions where tenant_id = ${ctx.tenantId} and workflow_id = ${ctx.workflowId}`.execute(
            trx,
          ),
        );
      },
    },
    {
      name: 'pause-webhooks',
      run: async () => ({ held: true }),
      async checkpoint(trx, ctx) {
        await sql`update tenant_suspensions set webhooks_held = true where tenant_id = ${ctx.tenantId}`.execute(
          trx,
        );
      },
      async undo(ctx) {
        await asPlatform(db, (trx) =>
          sql`update tenant_suspensions set webhooks_held = false where tenant_id = ${ctx.tenantId}`.execute(
            trx,
          ),
        );
      },
    },
    {
      name: 'revoke-database-logins',
      run: (ctx) => applyAccess(ctx.tenantId, takenFrom(ctx), 'database', 'revokeAccess'),
      undo: (ctx) =>
        applyAccess(ctx.tenantId, takenFrom(ctx), 'database', 'restoreAccess').then(() => undefined),
    },
    {
      name: 'deny-kafka-principals',
      run: (ctx) => applyAccess(ctx.tenantId, takenFrom(ctx), 'kafka-topic', 'revokeAccess'),
      undo: (ctx) =>
        applyAccess(ctx.tenantId, takenFrom(ctx), 'kafka-topic', 'restoreAccess').then(() => undefined),
    },
    {
      name: 'revoke-blob-access',
      run: (ctx) => applyAccess(ctx.tenantId, takenFrom(ctx), 'blob-container', 'revokeAccess'),
      undo: (ctx) =>
        applyAccess(ctx.tenantId, takenFrom(ctx), 'blob-container', 'restoreAccess').then(() => undefined),
    },
  ];

  // Resume: give back exactly what the suspension record lists (undo takes it away again).
  const resumeSteps: StepDefinition<LifecycleInput>[] = [
    ...(['blob-container', 'kafka-topic', 'database'] as const).map(
      (type): StepDefinition<LifecycleInput> => ({
        name: {
          'blob-container': 'restore-blob-access',
          'kafka-topic': 'lift-kafka-denials',
          database: 'restore-database-logins',
        }[type],
        run: async (ctx) =>
          applyAccess(ctx.tenantId, await suspensionOf(ctx.tenantId), type, 'restoreAccess'),
        undo: async (ctx) => {
          await applyAccess(ctx.tenantId, await suspensionOf(ctx.tenantId), type, 'revokeAccess');
        },
      }),
    ),
    {
      name: 'resume-webhooks',
      run: async () => ({ held: false }),
      async checkpoint(trx, ctx) {
        await sql`delete from tenant_suspensions where tenant_id = ${ctx.tenantId}`.execute(trx);
      },
    },
  ];

  const retentionClockStep: StepDefinition<LifecycleInput> = {
    name: 'start-retention-clock',
    run: async () => ({ started: true }),
    checkpoint: (trx, ctx) => startRetentionClock(trx, ctx.tenantId),
    async undo(ctx) {
      await asPlatform(db, (trx) =>
        sql`delete from tenant_retention where tenant_id = ${ctx.tenantId} and purged_at is null`.execute(
          trx,
        ),
      );
    },
  };

  const activateSteps: StepDefinition<LifecycleInput>[] = [
    {
      name: 'check-policy-gates',
      // The gates as they stand now (the apply checked them when the manifest was written).
      async run(ctx) {
        return asPlatform(db, async (trx) => {
          const t = await findById(trx, 'Tenant', ctx.tenantId);
          if (!t) throw new ProviderError('the tenant no longer exists', 'TenantGone', false);
          const spec = t.spec as { plan?: string; residency?: { allowedRegions?: string[] } };
          const allowed = spec.residency?.allowedRegions;
          if (allowed && !allowed.includes(String(t.region)))
            throw new ProviderError(
              `region ${t.region} is outside the tenant's residency (${allowed.join(', ')})`,
              'ResidencyViolated',
              false,
            );
          if (spec.plan) {
            const plan =
              await sql`select 1 from plans where slug = ${spec.plan} and deleted_at is null`.execute(trx);
            if (plan.rows.length === 0)
              throw new ProviderError(`plan ${spec.plan} no longer exists`, 'PlanMissing', false);
          }
          const cell = t.cell_id ?? null;
          if (cell) {
            const c = await sql`select 1 from cells where id = ${cell} and deleted_at is null`.execute(trx);
            if (c.rows.length === 0)
              throw new ProviderError("the tenant's cell no longer exists", 'CellMissing', false);
          }
          return { region: t.region, plan: spec.plan ?? null, cell };
        });
      },
    },
    {
      name: 'provision-resources',
      async run(ctx) {
        return asPlatform(db, async (trx) => {
          const rows = await sql<{ id: string; generation: string }>`
            select id, generation from integration_resources where tenant_id = ${ctx.tenantId} and deleted_at is null`.execute(
            trx,
          );
          for (const r of rows.rows)
            await enqueueJob(trx, {
              kind: 'IntegrationResource',
              objectId: r.id,
              tenantId: ctx.tenantId,
              generation: Number(r.generation),
            });
          return { resources: rows.rows.length };
        });
      },
    },
    {
      name: 'wait-resources-ready',
      timeoutMs: 120_000,
      async run(ctx) {
        for (;;) {
          const rows = await asPlatform(db, (trx) =>
            sql<{ slug: string; phase: string }>`
              select slug, phase from integration_resources where tenant_id = ${ctx.tenantId} and deleted_at is null`.execute(
              trx,
            ),
          );
          const failed = rows.rows.filter((r) => r.phase === 'Failed');
          if (failed.length > 0)
            throw new ProviderError(
              `resources failed: ${failed.map((r) => r.slug).join(', ')}`,
              'ResourcesFailed',
              false,
            );
          if (rows.rows.every((r) => r.phase === 'Ready')) return { ready: rows.rows.length };
          if (ctx.signal.aborted) throw new ProviderError('resources not Ready in time', 'NotReady', true);
          await new Promise((r) => setTimeout(r, 250));
        }
      },
    },
    {
      // The tenant's service identity for its apps: an OAuth client whose client-credentials grant
      // gets tokens scoped to the tenant (src/identity/service-clients.ts).
      name: 'issue-service-credentials',
      run: async () => ({ issued: true }),
      async checkpoint(trx, ctx) {
        await issueServiceClient(trx, ctx.tenantId, ctx.workflowId);
      },
      async undo(ctx) {
        await asPlatform(db, (trx) => revokeServiceClients(trx, ctx.tenantId));
      },
    },
    {
      name: 'enable-webhooks',
      run: async () => ({ held: false }),
      async checkpoint(trx, ctx) {
        await sql`delete from tenant_suspensions where tenant_id = ${ctx.tenantId}`.execute(trx);
      },
    },
  ];

  /** The tenant's status follows the end state; the reconcile keeps enforcing it from there. */
  const succeeded = async (trx: Trx, ctx: { tenantId: string }) => {
    await enqueueJob(trx, { kind: 'Tenant', objectId: ctx.tenantId, tenantId: ctx.tenantId, generation: 0 });
    const res = await sql<{ id: string; generation: string }>`
      select id, generation from integration_resources where tenant_id = ${ctx.tenantId} and deleted_at is null`.execute(
      trx,
    );
    for (const r of res.rows)
      await enqueueJob(trx, {
        kind: 'IntegrationResource',
        objectId: r.id,
        tenantId: ctx.tenantId,
        generation: Number(r.generation),
      });
  };

  /** A failed or cancelled workflow writes the tenant's previous lifecycle back, through the change path. */
  const compensated = async (
    trx: Trx,
    ctx: { tenantId: string; workflowId: string; input: LifecycleInput },
    reason: string,
  ) => {
    const row = await findById(trx, 'Tenant', ctx.tenantId, { forUpdate: true });
    if (!row || row.lifecycle !== ctx.input.to) return;
    const updated = await updateObject(trx, 'Tenant', row.id, {
      lifecycle: ctx.input.from,
      phase: 'Pending',
    });
    const before = stateOf(row);
    const after = stateOf(updated);
    const change: Change = {
      kind: 'Tenant',
      objectId: row.id,
      slug: row.slug,
      tenantId: row.id,
      action: 'update',
      generation: Number(updated.generation),
      before,
      after,
      changes: diff(before, after),
    };
    await recordChange(
      trx,
      systemContext(`tenantry-workflow ${ctx.workflowId}: ${reason}`.slice(0, 200)),
      change,
    );
    if (ctx.input.from === 'Active')
      await sql`delete from tenant_suspensions where tenant_id = ${ctx.tenantId}`.execute(trx);
    await succeeded(trx, ctx);
  };

  const def = (
    action: LifecycleAction,
    steps: StepDefinition<LifecycleInput>[],
  ): WorkflowDefinition<LifecycleInput> => ({
    type: lifecycleType(action),
    steps,
    succeeded,
    compensated,
  });
  return [
    def('activate', activateSteps),
    def('suspend', suspendSteps),
    def('resume', resumeSteps),
    // Archiving an Active tenant suspends it first (a Suspended one is already), then starts the
    // retention clock; the reconcile keeps the archived tenant's resources without access.
    def('archive', [...suspendSteps, retentionClockStep]),
    // Delete left a tombstone in its request; the workflow purges at once only what no retention
    // window or legal hold keeps (a tenant never archived), else keeps everything for the purge.
    {
      type: lifecycleType('delete'),
      steps: purgeSteps<LifecycleInput>({ db, providers: deps.providers, clock }, false),
    },
  ];
}

/** Every workflow type the engine runs: the lifecycle ones and the purge. */
export function allWorkflows(deps: LifecycleDeps): WorkflowDefinition<never>[] {
  return [
    ...lifecycleWorkflows(deps),
    purgeWorkflow({ db: deps.db, providers: deps.providers, clock: deps.clock ?? systemClock }),
  ] as WorkflowDefinition<never>[];
}

const NO_PROVIDER = { missing: 'not used to describe steps' };

/** The lifecycle workflow types by name, e.g. for describing their steps where no provider runs. */
export function lifecycleWorkflowTypes(db: Db, providers?: ProviderSet, clock?: Clock): WorkflowRegistry {
  const set: ProviderSet = providers ?? {
    'kafka-topic': NO_PROVIDER,
    'blob-container': NO_PROVIDER,
    database: NO_PROVIDER,
  };
  return new Map(allWorkflows({ db, providers: set, ...(clock ? { clock } : {}) }).map((d) => [d.type, d]));
}
