import { sql } from 'kysely';
import { clearSealedOf } from '../agent/agent-commands.js';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import { recordChange } from '../changes/change-path.js';
import { systemContext } from '../context/request-context.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import { asPlatform, type Trx } from '../db/database.js';
import type { Placement } from '../placement/placement.policy.js';
import { ProviderError } from '../providers/provider.js';
import { findById, updateObject } from '../registry/object.repository.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { settleArrivals } from './arrived-status.js';
import { bindingOf, changeOf, workflowKey } from './migration-records.js';
import { copyBlobs, type RegionDatabasePlan, regionSides, sideOf } from './region-migration.js';
import type { Switched } from './region-switch.js';
import { type LastKnown, type StandbyDeps, type StandbyPlan, withTimeout } from './standby.js';

export const FAILOVER_REGION = 'failover.region';

export interface FailoverInput {
  failoverId: string;
  tenantSlug: string;
  fromRegion: string;
  toRegion: string;
}

interface FailoverRow {
  id: string;
  tenant_id: string;
  state: string;
  source: Placement;
  target: Placement;
}

interface Checked {
  plan: StandbyPlan;
  lastKnown: LastKnown | null;
  caughtUpAt: string | null;
}

/** Per table: the rows on the promoted standby beside the primary's last known count. */
export interface Consistency {
  at: string;
  lastKnownAt: string | null;
  /** Every table holds at least the rows the primary had when the standby was last seen caught up. */
  consistent: boolean;
  databases: Record<
    string,
    {
      tables: { table: string; lastKnownRows: number | null; rows: number; delta: number | null }[];
      sequences: { sequence: string; value: string }[];
      /** The tenant's rotated credentials log in on the standby's server. */
      credentialsWork: boolean;
    }
  >;
  blobs: Record<string, { blobs: number; equal: boolean } | { unreachable: string }>;
}

const TIMEOUT = 5_000;

/**
 * Region failover (issue 19): the tenant's standby (standby.ts) becomes its primary while the
 * primary region's data plane may be down — no step needs the primary to answer. Steps:
 * check-standby (a streaming standby with a known last catch-up), fence-primary (the primary role
 * NOLOGIN and its sessions ended, if the server answers; else recorded, and the keeper fences it
 * when it returns), promote-standby (subscription detached on the standby's side alone; sequences
 * set from the data — logical replication does not carry them — and from the primary's last known
 * values, whichever is higher), rotate-credentials (a new password on the standby role, which may
 * now log in), switch-placement (secrets, tenant region, placement and cell, `tenant.failed_over`,
 * audit), sync-blobs (the last blob changes, when the primary's account answers), and verify (row
 * counts against the last known ones, the rotated credentials tried, recorded on the failover).
 * Each region's side runs where its cell is served (the agent holding it, or here), as the standby's.
 */
export function failoverWorkflow(deps: StandbyDeps): WorkflowDefinition<FailoverInput> {
  const { db } = deps;
  const checked = (ctx: StepContext<FailoverInput>) => ctx.outputs['check-standby'] as Checked;
  const rotatedKey = (ctx: StepContext<FailoverInput>, d: RegionDatabasePlan) =>
    workflowKey(ctx.input.failoverId, d.resourceId, 'rotated');
  /** Each region's side (here, or the agent holding its cell); `ms`: how long an agent is waited for. */
  const sides = (ctx: StepContext<FailoverInput>, step: string, ms?: number) =>
    regionSides(
      deps,
      checked(ctx).plan,
      {
        workflowId: ctx.workflowId,
        signal: ms ? AbortSignal.any([ctx.signal, AbortSignal.timeout(ms)]) : ctx.signal,
      },
      step,
    );

  const steps: StepDefinition<FailoverInput>[] = [
    {
      name: 'check-standby',
      async run(ctx) {
        const r = await asPlatform(db, (trx) =>
          sql<{
            state: string;
            region: string;
            plan: StandbyPlan;
            last_known: LastKnown | null;
            caught_up_at: Date | null;
          }>`
            select state, region, plan, last_known, caught_up_at from tenant_standbys where tenant_id = ${ctx.tenantId}`.execute(
            trx,
          ),
        );
        const s = r.rows[0];
        // A re-run after the switch finds the standby promoted already: the recorded plan stands.
        if (!s || (s.state !== 'Streaming' && s.state !== 'FailedOver') || s.region !== ctx.input.toRegion)
          throw new ProviderError(
            `no streaming standby in ${ctx.input.toRegion} (${s ? `${s.state} in ${s.region}` : 'none'})`,
            'NoStandby',
            false,
          );
        return {
          plan: s.plan,
          lastKnown: s.last_known,
          caughtUpAt: s.caught_up_at?.toISOString() ?? null,
        } satisfies Checked;
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_failovers set plan = ${JSON.stringify((output as Checked).plan)}, updated_at = now()
          where id = ${ctx.input.failoverId}`.execute(trx);
      },
    },
    {
      name: 'fence-primary',
      // Best effort: a primary that still answers stops taking the tenant's writes. An agent that
      // does not answer runs it when it is back (its command waits); the keeper fences it then too.
      async run(ctx) {
        const { plan } = checked(ctx);
        const s = sides(ctx, 'fence-primary', TIMEOUT);
        let outcome = 'fenced';
        try {
          await withTimeout(
            s.source().setLogin({ roles: plan.databases.map((d) => d.role), login: false }),
            TIMEOUT,
          );
        } catch (err) {
          outcome = `unreachable: ${(err as Error).message}`.slice(0, 500);
        }
        return Object.fromEntries(plan.databases.map((d) => [d.resourceId, outcome]));
      },
      async checkpoint(trx, ctx, output) {
        const fenced = Object.values(output as Record<string, string>).every((x) => x === 'fenced');
        await sql`update tenant_failovers set fence = ${JSON.stringify(output)},
            fenced_at = case when ${fenced} then now() else null end, updated_at = now()
          where id = ${ctx.input.failoverId}`.execute(trx);
      },
    },
    {
      name: 'promote-standby',
      async run(ctx) {
        const { plan, lastKnown } = checked(ctx);
        const s = sides(ctx, 'promote-standby');
        const out: Record<string, { detached: boolean; sequences: Record<string, string> }> = {};
        for (const d of plan.databases)
          out[d.resourceId] = await s.target(d.resourceId).promote({
            ...sideOf(d, 'target'),
            name: d.replication,
            lastKnown: lastKnown?.databases[d.resourceId]?.sequences ?? {},
          });
        return out;
      },
    },
    {
      name: 'rotate-credentials',
      // The standby role gets new credentials (under the failover's key) and LOGIN; what is observed
      // then is the status the switch writes (./arrived-status.ts).
      async run(ctx) {
        const { plan } = checked(ctx);
        const target = sides(ctx, 'rotate-credentials').target();
        const rotated = plan.databases.map((d) => ({
          ...d.desired,
          id: rotatedKey(ctx, d),
          suspended: false,
        }));
        await target.createResources({ databases: rotated, blobs: [], topics: [] });
        const arrived = await target.observeArrived({
          databases: plan.databases.map((d, i) => ({ resourceId: d.resourceId, desired: rotated[i]! })),
        });
        return { rotated: plan.databases.map((d) => d.resourceId), arrived };
      },
    },
    {
      name: 'switch-placement',
      // The standby's agent's kept credentials switched just before (a re-run finds them switched):
      // the rotated ones become the resource's, the standby's first ones go. The primary's agent
      // keeps the primary's under the source key: now if it answers, else the keeper does it when
      // it is back (fenceReturned).
      async run(ctx) {
        const { plan } = checked(ctx);
        const s = sides(ctx, 'switch-placement', TIMEOUT);
        if (plan.targetAgent)
          await s.target().renameSecrets({
            moves: plan.databases.map((d) => ({ from: rotatedKey(ctx, d), to: d.resourceId })),
            drop: plan.databases.map((d) => d.targetKey),
          });
        let primaryKept = !plan.sourceAgent;
        if (plan.sourceAgent)
          primaryKept = await withTimeout(keepPrimarySecrets(s, plan), TIMEOUT).then(
            () => true,
            () => false,
          );
        return { switchedAt: new Date().toISOString(), primaryKept };
      },
      async checkpoint(trx, ctx) {
        await switchToStandby(trx, ctx);
      },
    },
    {
      name: 'sync-blobs',
      timeoutMs: 10 * 60_000,
      // The changes since the keeper's last sync, if the primary region's account answers.
      async run(ctx) {
        const { plan } = checked(ctx);
        const out: Consistency['blobs'] = {};
        const s = sides(ctx, 'sync-blobs', 60_000);
        const sealTo = await s.sealFor('target');
        for (const b of plan.blobs)
          try {
            const r = await withTimeout(
              copyBlobs(s.source(b.resourceId), s.target(b.resourceId), b.desired, sealTo),
              60_000,
            );
            out[b.resourceId] = {
              blobs: r.target.length,
              equal: JSON.stringify(r.source) === JSON.stringify(r.target),
            };
          } catch (err) {
            out[b.resourceId] = { unreachable: (err as Error).message.slice(0, 500) };
          }
        return out;
      },
    },
    {
      name: 'verify',
      async run(ctx) {
        const { plan, lastKnown } = checked(ctx);
        const promoted = ctx.outputs['promote-standby'] as Record<
          string,
          { sequences: Record<string, string> }
        >;
        const s = sides(ctx, 'verify');
        const out: Consistency = {
          at: new Date().toISOString(),
          lastKnownAt: lastKnown?.at ?? null,
          consistent: true,
          databases: {},
          blobs: ctx.outputs['sync-blobs'] as Consistency['blobs'],
        };
        for (const d of plan.databases) {
          const known = lastKnown?.databases[d.resourceId]?.rows ?? {};
          const counted = await s
            .target(d.resourceId)
            .measure({ ...sideOf(d, 'target'), name: d.replication, waitMs: 0 });
          const tables = d.tables.map((table) => {
            const k = known[table] ?? null;
            const n = counted.rows[table]!;
            return { table, lastKnownRows: k, rows: n, delta: k === null ? null : n - k };
          });
          // The resource's credentials now (the rotated ones), tried on the promoted server.
          const [observed] = await s
            .target(d.resourceId)
            .observeArrived({ databases: [{ resourceId: d.resourceId, desired: d.desired }] });
          const credentialsWork = !observed!.drift.some((x) => x.includes('cannot log in'));
          out.databases[d.resourceId] = {
            tables,
            sequences: Object.entries(promoted[d.resourceId]?.sequences ?? {}).map(([sequence, value]) => ({
              sequence,
              value,
            })),
            credentialsWork,
          };
          if (!credentialsWork || tables.some((x) => x.delta === null || x.delta < 0)) out.consistent = false;
        }
        return out;
      },
      async checkpoint(trx, ctx, output) {
        const c = output as Consistency;
        await sql`update tenant_failovers set consistency = ${JSON.stringify(c)}, updated_at = now()
          where id = ${ctx.input.failoverId}`.execute(trx);
        await appendAudit(
          trx,
          auditEntryOf(systemContext(`tenantry-workflow ${ctx.workflowId}`), {
            tenantId: ctx.tenantId,
            action: 'failover.verified',
            target: { kind: 'Failover', id: ctx.input.failoverId, slug: ctx.input.tenantSlug },
            before: null,
            after: { consistent: c.consistent, lastKnownAt: c.lastKnownAt },
            outcome: c.consistent ? 'success' : 'failure',
            decision: null,
          }),
        );
      },
    },
  ];

  /**
   * The registry side, in one transaction: the database resources' secret references resolve to
   * the rotated credentials (the primary's kept under the plan's source key), the tenant's region,
   * placement and cell (its spec's standby cleared: the old primary is no standby), the cells'
   * allocations, the databases' status (Ready with the promoted standby's details), the failover
   * and standby records, `tenant.failed_over` and the audit record.
   */
  async function switchToStandby(trx: Trx, ctx: StepContext<FailoverInput>): Promise<void> {
    const { plan } = checked(ctx);
    const f = (
      await sql<FailoverRow>`select id, tenant_id, state, source, target from tenant_failovers where id = ${ctx.input.failoverId}`.execute(
        trx,
      )
    ).rows[0];
    if (!f) throw new ProviderError('the failover record is gone', 'FailoverGone', false);
    if (f.state === 'FailedOver') return;
    const sys = systemContext(`tenantry-workflow ${ctx.workflowId}`);
    for (const d of plan.databases) {
      await sql`delete from resource_secrets where resource_id = ${d.sourceKey}`.execute(trx);
      await sql`update resource_secrets set resource_id = ${d.sourceKey} where resource_id = ${d.resourceId}`.execute(
        trx,
      );
      await sql`update resource_secrets set resource_id = ${d.resourceId} where resource_id = ${rotatedKey(ctx, d)}`.execute(
        trx,
      );
      // The standby's first credentials were replaced by the rotated ones on its role.
      await sql`delete from resource_secrets where resource_id = ${d.targetKey}`.execute(trx);
    }
    const t = await findById(trx, 'Tenant', ctx.tenantId, { forUpdate: true });
    if (!t) throw new ProviderError('the tenant no longer exists', 'TenantGone', false);
    const placement: Placement = { ...(t.placement as Placement), ...bindingOf(f.target) };
    const { standby: _gone, ...spec } = t.spec as { standby?: unknown };
    const updated = await updateObject(trx, 'Tenant', t.id, {
      spec: JSON.stringify({ ...spec, region: plan.toRegion }),
      placement: JSON.stringify(placement),
      cell_id: f.target.cellUuid,
      region: plan.toRegion,
    });
    await recordChange(trx, sys, changeOf('Tenant', t, updated, 'fail_over'));
    await sql`update cells set allocated = greatest(allocated - 1, 0) where id = ${f.source.cellUuid}`.execute(
      trx,
    );
    await sql`update cells set allocated = allocated + 1 where id = ${f.target.cellUuid}`.execute(trx);
    await sql`update tenant_failovers set state = 'FailedOver', failed_over_at = now(), updated_at = now()
      where id = ${f.id}`.execute(trx);
    await sql`update tenant_standbys set state = 'FailedOver', updated_at = now() where tenant_id = ${t.id}`.execute(
      trx,
    );
    await settleArrivals(
      trx,
      sys,
      plan.databases.map((d) => d.resourceId),
      (ctx.outputs['rotate-credentials'] as Switched).arrived ?? [],
    );
    await appendAudit(
      trx,
      auditEntryOf(sys, {
        tenantId: t.id,
        action: 'failover.promoted',
        target: { kind: 'Failover', id: f.id, slug: t.slug },
        before: { placement: bindingOf(f.source) },
        after: { placement: bindingOf(f.target) },
        outcome: 'success',
        decision: null,
      }),
    );
    const resources = await sql<{ id: string }>`
      select id from integration_resources where tenant_id = ${t.id} and deleted_at is null`.execute(trx);
    for (const r of resources.rows)
      await enqueueJob(trx, { kind: 'IntegrationResource', objectId: r.id, tenantId: t.id, generation: 0 });
  }

  return {
    type: FAILOVER_REGION,
    steps,
    succeeded: (trx, ctx) => clearSealedOf(trx, ctx.workflowId),
    compensated: async (trx, ctx, reason) => {
      await clearSealedOf(trx, ctx.workflowId);
      await sql`update tenant_failovers set state = case when state = 'Running' then 'Failed' else state end,
          error = ${reason.slice(0, 2000)}, updated_at = now()
        where id = ${ctx.input.failoverId}`.execute(trx);
    },
  };
}

/** The primary's agent keeps the primary's credentials under the plan's source key (as a region migration's source). */
export async function keepPrimarySecrets(
  s: ReturnType<typeof regionSides>,
  plan: StandbyPlan,
): Promise<void> {
  await s
    .source()
    .renameSecrets({ moves: plan.databases.map((d) => ({ from: d.resourceId, to: d.sourceKey })) });
}
