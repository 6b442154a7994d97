import { sql } from 'kysely';
import pg from 'pg';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import { recordChange } from '../changes/change-path.js';
import { systemContext } from '../context/request-context.js';
import { enqueueJob } from '../controller/queue/enqueue-job.js';
import { asPlatform, type Trx } from '../db/database.js';
import type { Placement } from '../placement/placement.policy.js';
import { ProviderError } from '../providers/provider.js';
import { findById, updateObject } from '../registry/object.repository.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { type Arrival, arrivalOf, settleArrivals } from './arrived-status.js';
import { bindingOf, changeOf, workflowKey } from './migration-records.js';
import { withClient } from './pg-copy.js';
import { providerIn, type RegionDatabasePlan, syncBlobs } from './region-migration.js';
import type { Switched } from './region-switch.js';
import {
  type LastKnown,
  primaryUrl,
  type StandbyDeps,
  type StandbyPlan,
  standbyUrl,
  withTimeout,
} from './standby.js';

const { escapeIdentifier: id } = pg;

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
 */
export function failoverWorkflow(deps: StandbyDeps): WorkflowDefinition<FailoverInput> {
  const { db, providers } = deps;
  const checked = (ctx: StepContext<FailoverInput>) => ctx.outputs['check-standby'] as Checked;
  const rotatedKey = (ctx: StepContext<FailoverInput>, d: RegionDatabasePlan) =>
    workflowKey(ctx.input.failoverId, d.resourceId, 'rotated');

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
      // Best effort: a primary that still answers stops taking the tenant's writes.
      async run(ctx) {
        const { plan } = checked(ctx);
        const out: Record<string, string> = {};
        for (const d of plan.databases)
          try {
            await withTimeout(
              withClient(primaryUrl(providers, plan, d), async (c) => {
                await c.query(`alter role ${id(d.role)} nologin`);
                await c.query(
                  'select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()',
                  [d.role],
                );
              }),
              TIMEOUT,
            );
            out[d.resourceId] = 'fenced';
          } catch (err) {
            out[d.resourceId] = `unreachable: ${(err as Error).message}`.slice(0, 500);
          }
        return out;
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
        const out: Record<string, { detached: boolean; sequences: Record<string, string> }> = {};
        for (const d of plan.databases)
          out[d.resourceId] = await withClient(standbyUrl(providers, plan, d), async (t) => {
            const detached = await detachSubscription(t, d.replication);
            const sequences = await continueSequences(
              t,
              d.schema,
              lastKnown?.databases[d.resourceId]?.sequences ?? {},
            );
            return { detached, sequences };
          });
        return out;
      },
    },
    {
      name: 'rotate-credentials',
      // The standby role gets new credentials (under the failover's key) and LOGIN; what ensure
      // observed then is the status the switch writes (./arrived-status.ts).
      async run(ctx) {
        const { plan } = checked(ctx);
        const store = providerIn(providers, 'database', plan.toRegion);
        const arrived: Arrival[] = [];
        for (const d of plan.databases) {
          const o = await store.ensure({ ...d.desired, id: rotatedKey(ctx, d), suspended: false });
          arrived.push(arrivalOf(store, d.resourceId, o));
        }
        return { rotated: plan.databases.map((d) => d.resourceId), arrived };
      },
    },
    {
      name: 'switch-placement',
      async run() {
        return { switchedAt: new Date().toISOString() };
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
        for (const b of plan.blobs)
          try {
            const r = await withTimeout(syncBlobs(providers, plan, b.desired), 60_000);
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
        const store = providerIn(providers, 'database', plan.toRegion);
        const out: Consistency = {
          at: new Date().toISOString(),
          lastKnownAt: lastKnown?.at ?? null,
          consistent: true,
          databases: {},
          blobs: ctx.outputs['sync-blobs'] as Consistency['blobs'],
        };
        for (const d of plan.databases) {
          const known = lastKnown?.databases[d.resourceId]?.rows ?? {};
          const tables = await withClient(standbyUrl(providers, plan, d), async (t) => {
            const rows: Consistency['databases'][string]['tables'] = [];
            for (const table of d.tables) {
              const n = Number(
                (await t.query<{ n: string }>(`select count(*)::text as n from ${id(d.schema)}.${id(table)}`))
                  .rows[0]!.n,
              );
              const k = known[table] ?? null;
              rows.push({ table, lastKnownRows: k, rows: n, delta: k === null ? null : n - k });
            }
            return rows;
          });
          // The resource's credentials now (the rotated ones), tried on the promoted server.
          const observed = await store.observe(d.desired);
          const credentialsWork = !observed.drift.some((x) => x.includes('cannot log in'));
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
    compensated: async (trx, ctx, reason) => {
      await sql`update tenant_failovers set state = case when state = 'Running' then 'Failed' else state end,
          error = ${reason.slice(0, 2000)}, updated_at = now()
        where id = ${ctx.input.failoverId}`.execute(trx);
    },
  };
}

/**
 * The subscription ends on the standby's side alone (the primary may be gone): disabled, cut from
 * its slot (which stays on the primary until fenced), dropped. False when it was gone already.
 */
export async function detachSubscription(t: pg.ClientBase, name: string): Promise<boolean> {
  const sub = await t.query(
    'select 1 from pg_subscription where subname = $1 and subdbid = (select oid from pg_database where datname = current_database())',
    [name],
  );
  if ((sub.rowCount ?? 0) === 0) return false;
  await t.query(`alter subscription ${id(name)} disable`);
  await t.query(`alter subscription ${id(name)} set (slot_name = none)`);
  await t.query(`drop subscription ${id(name)}`);
  return true;
}

/**
 * Sets every sequence of `schema` past what the data holds: for a sequence owned by a column (serial
 * or identity), the column's maximum; and never below the primary's last known value (values handed
 * out but rolled back, or deleted since). The new primary's next value collides with no row.
 */
export async function continueSequences(
  c: pg.ClientBase,
  schema: string,
  lastKnown: Record<string, string>,
): Promise<Record<string, string>> {
  const seqs = await c.query<{ seq: string; table: string | null; col: string | null; last: string | null }>(
    `select s.relname as seq, t.relname as table, a.attname as col, q.last_value::text as last
     from pg_class s join pg_namespace n on n.oid = s.relnamespace
     join pg_sequences q on q.schemaname = n.nspname and q.sequencename = s.relname
     left join pg_depend d on d.objid = s.oid and d.classid = 'pg_class'::regclass and d.deptype in ('a', 'i')
       and d.refclassid = 'pg_class'::regclass
     left join pg_class t on t.oid = d.refobjid
     left join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
     where n.nspname = $1 and s.relkind = 'S'`,
    [schema],
  );
  const out: Record<string, string> = {};
  for (const s of seqs.rows) {
    let value = BigInt(s.last ?? '0');
    const known = lastKnown[s.seq];
    if (known !== undefined && BigInt(known) > value) value = BigInt(known);
    if (s.table && s.col) {
      const m = await c.query<{ max: string | null }>(
        `select max(${id(s.col)})::text as max from ${id(schema)}.${id(s.table)}`,
      );
      const max = m.rows[0]?.max;
      if (max != null && BigInt(max) > value) value = BigInt(max);
    }
    if (value > 0n) {
      await c.query(`select setval($1::regclass, $2::bigint, true)`, [
        `${id(schema)}.${id(s.seq)}`,
        value.toString(),
      ]);
      out[s.seq] = value.toString();
    }
  }
  return out;
}
