import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { remoteAgentCells } from '../agent/agent-commands.js';
import { lockTenantWrites } from '../changes/tenant-write-lock.js';
import type { RequestContext } from '../context/request-context.js';
import { asPlatform, type Db, inScope, type Trx } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../errors/errors.js';
import { lockCandidateCells, type Placement } from '../placement/placement.policy.js';
import { chooseCell, type Isolation, isRefusal } from '../placement/placement.rules.js';
import { PolicyError } from '../placement/policy-error.js';
import { assertNotFrozen } from '../workflows/freezes.js';
import { workflowIdOf } from '../workflows/workflow.js';
import { type Binding, bindingOf, startAudited } from './migration-records.js';
import {
  type IsolationMigrationInput,
  MIGRATE_ISOLATION,
  RETIRE_MIGRATION,
  ROLLBACK_MIGRATION,
  type RollbackInput,
} from './migration-workflows.js';
import { MIGRATE_REGION, type RegionMigrationInput } from './region-migration.js';
import { ROLLBACK_REGION } from './region-rollback.js';
import { refuseWithStandby } from './standby.js';

/** What the API shows of a migration. */
export interface Migration {
  id: string;
  tenantId: string;
  kind: 'isolation' | 'region';
  state: string;
  /** The workflow that runs it (its id is the migration's). */
  workflowId: string;
  rollbackWorkflowId: string | null;
  from: Binding;
  to: Binding;
  mode: string | null;
  plan: unknown;
  verification: unknown;
  freeze: { startedAt: string | null; endedAt: string | null; durationMs: number | null };
  cutOverAt: string | null;
  rollbackWindowSeconds: number;
  rollbackUntil: string | null;
  rollback: unknown;
  rolledBackAt: string | null;
  retiredAt: string | null;
  /** Only in the answer to a retire request. */
  retireWorkflowId?: string;
  error: string | null;
  actor: { principal: string; kind: string };
  createdAt: string;
}

export interface MigrationPlanView {
  dryRun: true;
  tenant: string;
  from: Binding;
  to: Binding;
  steps: string[];
  verdicts: { rule: string; outcome: 'allow'; detail: string }[];
}

interface Row {
  id: string;
  tenant_id: string;
  kind: 'isolation' | 'region';
  state: string;
  source: Placement;
  target: Placement;
  plan: unknown;
  mode: string | null;
  verification: unknown;
  freeze_started_at: Date | null;
  freeze_ended_at: Date | null;
  freeze_ms: number | null;
  cut_over_at: Date | null;
  rollback_window_seconds: number;
  rollback_until: Date | null;
  rollback_workflow_id: string | null;
  rollback_verification: unknown;
  rolled_back_at: Date | null;
  retired_at: Date | null;
  error: string | null;
  actor: { principal: string; kind: string };
  created_at: Date;
}

const iso = (d: Date | null) => d?.toISOString() ?? null;

function toMigration(r: Row): Migration {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    kind: r.kind,
    state: r.state,
    workflowId: r.id,
    rollbackWorkflowId: r.rollback_workflow_id,
    from: bindingOf(r.source),
    to: bindingOf(r.target),
    mode: r.mode,
    plan: r.plan,
    verification: r.verification,
    freeze: { startedAt: iso(r.freeze_started_at), endedAt: iso(r.freeze_ended_at), durationMs: r.freeze_ms },
    cutOverAt: iso(r.cut_over_at),
    rollbackWindowSeconds: r.rollback_window_seconds,
    rollbackUntil: iso(r.rollback_until),
    rollback: r.rollback_verification,
    rolledBackAt: iso(r.rolled_back_at),
    retiredAt: iso(r.retired_at),
    error: r.error,
    actor: r.actor,
    createdAt: r.created_at.toISOString(),
  };
}

/** The steps of a pool → silo migration, as the workflow runs them. */
export const ISOLATION_STEPS = [
  'check-eligibility',
  'create-target',
  'copy-schema',
  'start-replication',
  'wait-synced',
  'checksum-bulk',
  'freeze-writes',
  'sync-and-verify',
  'detach-target',
  'cut-over',
];

/** The steps of a region migration, as the workflow runs them. */
export const REGION_STEPS = [
  'check-eligibility',
  'create-target',
  'copy-schema',
  'start-replication',
  'wait-synced',
  'checksum-bulk',
  'copy-blobs',
  'freeze-writes',
  'sync-and-verify',
  'detach-target',
  'cut-over',
];

const DEFAULT_WINDOW_SECONDS = 7 * 24 * 3600;

/**
 * Tenancy-mode migrations as the API asks for them (issue 19): every check before anything is
 * written (placement, plan, residency, capacity, freezes, a workflow in progress), then the
 * migration record, its workflow and the audit record in one transaction. Only the platform starts
 * or rolls back a migration; a tenant's principals may read their own.
 */
export class MigrationsService {
  constructor(private readonly db: Db) {}

  async start(
    ctx: RequestContext,
    ref: string,
    input: { isolation?: Isolation; region?: string; rollbackWindowSeconds?: number } | undefined,
    opts: { dryRun: boolean },
  ): Promise<Migration | MigrationPlanView> {
    platformOnly(ctx);
    // A POST without a body reaches here with none: it is a request naming no isolation (400), not a 500.
    const body = input ?? {};
    if (body.region !== undefined && body.isolation !== undefined)
      throw ValidationError.field(
        '/region',
        'migration.one_change',
        'a migration changes the isolation or the region, not both: migrate twice',
      );
    if (body.region !== undefined)
      return this.startRegion(ctx, ref, body.region, body.rollbackWindowSeconds, opts);
    if (body.isolation === undefined)
      throw ValidationError.field('/isolation', 'field.required', 'name the isolation model to migrate to');
    const to = body.isolation;
    return asPlatform(this.db, async (trx) => {
      const { t, current } = await movableTenant(trx, ref);
      await refuseWithStandby(trx, t.id);
      if (current.isolation === to)
        throw new ConflictError('migration.same_isolation', `The tenant is ${to} already.`, {
          errors: [{ pointer: '/isolation', code: 'migration.same_isolation', message: `already ${to}` }],
        });
      if (current.isolation !== 'pool' || to !== 'silo')
        throw ValidationError.field(
          '/isolation',
          'migration.unsupported',
          `${current.isolation} → ${to} is not built: the migration moves a pool tenant to silo; a silo tenant returns to the pool by rolling back its migration within the window`,
        );
      await refuseInRollbackWindow(
        trx,
        t.id,
        'The tenant has a migration in its rollback window; roll it back or let the window pass first.',
      );
      const planSpec = t.spec.plan
        ? (
            await sql<{ spec: { isolationModels?: Isolation[] } }>`
              select spec from plans where slug = ${t.spec.plan} and deleted_at is null`.execute(trx)
          ).rows[0]?.spec
        : undefined;
      const cells = await lockCandidateCells(trx, [current.region], undefined);
      const chosen = chooseCell(
        {
          tenantId: t.id,
          tenantSlug: t.slug,
          region: current.region,
          environmentType: t.environment_type,
          isolation: to,
          allowedRegions: [current.region],
          plan:
            t.spec.plan && planSpec?.isolationModels
              ? { code: t.spec.plan, isolationModels: planSpec.isolationModels }
              : undefined,
        },
        cells === 'none' ? [] : cells,
      );
      if (isRefusal(chosen))
        throw new PolicyError(
          chosen.code,
          chosen.code === 'placement.no_capacity' ? 409 : 422,
          chosen.message,
          chosen.pointer === '/spec' ? '/isolation' : chosen.pointer,
          chosen.details,
          { tenantId: t.id, kind: 'Tenant', slug: t.slug, action: 'migrate' },
        );
      await assertNotFrozen(trx, t.id, MIGRATE_ISOLATION);
      const target: Placement = { ...current, ...chosen };
      await refuseAgentCells(trx, current, target);
      const verdicts = [
        { rule: 'residency', outcome: 'allow' as const, detail: `stays in region ${current.region}` },
        {
          rule: 'plan.isolation',
          outcome: 'allow' as const,
          detail: t.spec.plan ? `plan ${t.spec.plan} allows ${to}` : `no plan: ${to}`,
        },
        { rule: 'capacity', outcome: 'allow' as const, detail: `cell ${chosen.cell} has room` },
        { rule: 'freeze', outcome: 'allow' as const, detail: 'no freeze covers the tenant' },
      ];
      if (opts.dryRun) return dryRunView(t.slug, current, target, ISOLATION_STEPS, verdicts);
      const id = randomUUID();
      const input: IsolationMigrationInput = {
        migrationId: id,
        tenantSlug: t.slug,
        from: current.isolation,
        to,
      };
      await begin(trx, ctx, {
        id,
        tenantId: t.id,
        kind: 'isolation',
        type: MIGRATE_ISOLATION,
        input,
        current,
        target,
        window: body.rollbackWindowSeconds ?? DEFAULT_WINDOW_SECONDS,
        verdicts,
      });
      return this.read(trx, t.id, id);
    });
  }

  /**
   * A region migration: residency (the tenant's `allowedRegions`; none: its own region only), a
   * cell of the tenant's isolation with room in the target region, no freeze, no workflow in
   * progress — all checked before anything is written.
   */
  private startRegion(
    ctx: RequestContext,
    ref: string,
    region: string,
    rollbackWindowSeconds: number | undefined,
    opts: { dryRun: boolean },
  ): Promise<Migration | MigrationPlanView> {
    return asPlatform(this.db, async (trx) => {
      const { t, current } = await movableTenant(trx, ref);
      await refuseWithStandby(trx, t.id);
      if (current.region === region)
        throw new ConflictError('migration.same_region', `The tenant is in ${region} already.`, {
          errors: [{ pointer: '/region', code: 'migration.same_region', message: `already in ${region}` }],
        });
      const allowed = allowedRegions({ t, current, region }, 'migrate');
      await refuseInRollbackWindow(
        trx,
        t.id,
        'The tenant has a migration whose source is still kept; retire (or roll back) it first.',
      );
      const { chosen, target } = await placeInRegion(trx, { t, current, region }, 'migrate', MIGRATE_REGION);
      const verdicts = [
        { rule: 'residency', outcome: 'allow' as const, detail: `${region} is among ${allowed.join(', ')}` },
        { rule: 'capacity', outcome: 'allow' as const, detail: `cell ${chosen.cell} in ${region} has room` },
        { rule: 'freeze', outcome: 'allow' as const, detail: 'no freeze covers the tenant' },
      ];
      if (opts.dryRun) return dryRunView(t.slug, current, target, REGION_STEPS, verdicts);
      const id = randomUUID();
      const input: RegionMigrationInput = {
        migrationId: id,
        tenantSlug: t.slug,
        fromRegion: current.region,
        toRegion: region,
      };
      await begin(trx, ctx, {
        id,
        tenantId: t.id,
        kind: 'region',
        type: MIGRATE_REGION,
        input,
        current,
        target,
        window: rollbackWindowSeconds ?? DEFAULT_WINDOW_SECONDS,
        verdicts,
      });
      return this.read(trx, t.id, id);
    });
  }

  async rollback(ctx: RequestContext, ref: string, id: string): Promise<Migration> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const t = await tenantRow(trx, ref, true);
      const m = await this.read(trx, t.id, id);
      if (m.state !== 'CutOver' || !m.rollbackUntil || Date.parse(m.rollbackUntil) < Date.now())
        throw new ConflictError(
          'migration.rollback_unavailable',
          m.state === 'CutOver'
            ? `The rollback window ended at ${m.rollbackUntil}.`
            : `Only a cut-over migration within its window rolls back; this one is ${m.state}.`,
          { details: { state: m.state, rollbackUntil: m.rollbackUntil } },
        );
      // A region migration rolls back by its own workflow (region-rollback.ts): the source region's kept resources.
      const type = m.kind === 'region' ? ROLLBACK_REGION : ROLLBACK_MIGRATION;
      await assertNotFrozen(trx, t.id, type);
      const wid = workflowIdOf('migration-rollback', id);
      const input: RollbackInput = { migrationId: id, tenantSlug: t.slug };
      const started = await startAudited(
        trx,
        ctx,
        { id: wid, tenantId: t.id, type, input },
        {
          action: 'migration.rollback',
          target: { kind: 'Migration', id, slug: t.slug },
          before: { placement: m.to },
          after: { placement: m.from },
        },
      );
      if (started)
        await sql`update tenant_migrations set rollback_workflow_id = ${wid}, updated_at = now() where id = ${id}`.execute(
          trx,
        );
      return this.read(trx, t.id, id);
    });
  }

  /** Drops the kept source of a cut-over migration: the rollback window ends now. */
  async retire(ctx: RequestContext, ref: string, id: string): Promise<Migration> {
    platformOnly(ctx);
    return asPlatform(this.db, async (trx) => {
      const t = await tenantRow(trx, ref, true);
      const m = await this.read(trx, t.id, id);
      if (m.state !== 'CutOver')
        throw new ConflictError(
          'migration.retire_unavailable',
          `Only a cut-over migration has a source to retire; this one is ${m.state}.`,
          { details: { state: m.state } },
        );
      await assertNotFrozen(trx, t.id, RETIRE_MIGRATION);
      const wid = workflowIdOf('migration-retire', id);
      const input: RollbackInput = { migrationId: id, tenantSlug: t.slug };
      await startAudited(
        trx,
        ctx,
        { id: wid, tenantId: t.id, type: RETIRE_MIGRATION, input },
        {
          action: 'migration.retire',
          target: { kind: 'Migration', id, slug: t.slug },
          before: { placement: m.from },
          after: null,
        },
      );
      return { ...(await this.read(trx, t.id, id)), retireWorkflowId: wid };
    });
  }

  get(ctx: RequestContext, ref: string, id: string): Promise<Migration> {
    return inScope(this.db, ctx.scope, async (trx) =>
      this.read(trx, (await tenantRow(trx, ref, false)).id, id),
    );
  }

  /**
   * Migrations newest first, a page at a time: of one tenant (`tenant`, slug or UUID) or of every
   * tenant the caller may see (row-level security: a tenant's principals see their tenant's only).
   * The cursor is the id of the previous page's last migration (keyset on created_at, id).
   */
  page(
    ctx: RequestContext,
    q: { tenant?: string | undefined; limit: number; cursor?: string | undefined },
  ): Promise<{ items: (Migration & { tenantSlug: string })[]; nextCursor: string | null }> {
    if (q.cursor !== undefined && !isUuid(q.cursor))
      throw ValidationError.field(
        '/cursor',
        'cursor.invalid',
        'The cursor is the id of a migration of a page.',
      );
    return inScope(this.db, ctx.scope, async (trx) => {
      const tenantId =
        q.tenant !== undefined
          ? (await tenantRow(trx, q.tenant, false)).id
          : ctx.scope.kind === 'tenant'
            ? ctx.scope.tenantId
            : undefined;
      const r = await sql<Row & { tenant_slug: string }>`
        select m.*, t.slug as tenant_slug from tenant_migrations m join tenants t on t.id = m.tenant_id
        where true
          ${tenantId ? sql`and m.tenant_id = ${tenantId}` : sql``}
          ${
            q.cursor
              ? sql`and (m.created_at, m.id) < (select c.created_at, c.id from tenant_migrations c where c.id = ${q.cursor.toLowerCase()})`
              : sql``
          }
        order by m.created_at desc, m.id desc limit ${q.limit + 1}`.execute(trx);
      const items = r.rows
        .slice(0, q.limit)
        .map((row) => ({ ...toMigration(row), tenantSlug: row.tenant_slug }));
      return { items, nextCursor: r.rows.length > q.limit ? (items.at(-1)?.id ?? null) : null };
    });
  }

  async list(
    ctx: RequestContext,
    ref: string,
    q: { limit?: number | undefined; cursor?: string | undefined } = {},
  ): Promise<{ items: Migration[]; nextCursor: string | null }> {
    const { items, nextCursor } = await this.page(ctx, {
      tenant: ref,
      limit: q.limit ?? 100,
      cursor: q.cursor,
    });
    return { items: items.map(({ tenantSlug: _, ...m }) => m), nextCursor };
  }

  private async read(trx: Trx, tenantId: string, id: string): Promise<Migration> {
    const r = isUuid(id)
      ? await sql<Row>`select * from tenant_migrations where id = ${id} and tenant_id = ${tenantId}`.execute(
          trx,
        )
      : { rows: [] };
    const row = r.rows[0];
    if (!row) throw new NotFoundError('migration.not_found', `No migration ${id} of this tenant.`);
    return toMigration(row);
  }
}

interface TenantRow {
  id: string;
  slug: string;
  lifecycle: string;
  environment_type: string;
  spec: { plan?: string; residency?: { allowedRegions?: string[] } };
  placement: Placement | null;
}

/** The tenant to migrate, locked: placed in a cell and Active, or a 409 naming why not. */
export async function movableTenant(trx: Trx, ref: string): Promise<{ t: TenantRow; current: Placement }> {
  const t = await tenantRow(trx, ref, true);
  const current = t.placement;
  if (!current)
    throw new ConflictError(
      'migration.unplaced',
      'The tenant is not placed in a cell; there is nothing to move.',
    );
  if (t.lifecycle !== 'Active')
    throw new ConflictError(
      'migration.tenant_not_active',
      `The tenant is ${t.lifecycle}; only an Active tenant is migrated.`,
      { details: { lifecycle: t.lifecycle } },
    );
  return { t, current };
}

/**
 * The tenant by slug or UUID. `forUpdate`: its write lock first, then its row lock (the lock order of
 * src/changes/tenant-write-lock.ts, which the audit append and the controller's status writes follow).
 */
export async function tenantRow(trx: Trx, ref: string, forUpdate: boolean): Promise<TenantRow> {
  if (forUpdate) {
    const found = await sql<{ id: string }>`
      select id from tenants where deleted_at is null and ${isUuid(ref) ? sql`id = ${ref}` : sql`slug = ${ref}`}`.execute(
      trx,
    );
    if (found.rows[0]) await lockTenantWrites(trx, found.rows[0].id);
  }
  const r = await sql<TenantRow>`
    select id, slug, lifecycle, environment_type, spec, placement from tenants
    where deleted_at is null and ${isUuid(ref) ? sql`id = ${ref}` : sql`slug = ${ref}`}
    ${forUpdate ? sql`for update` : sql``}`.execute(trx);
  const t = r.rows[0];
  if (!t) throw new NotFoundError('tenant.not_found', `No tenant ${ref}.`);
  return t;
}

export function platformOnly(ctx: RequestContext): void {
  if (ctx.scope.kind !== 'platform')
    throw new ForbiddenError('migration.platform_only', 'Only the platform migrates tenants.');
}

/**
 * The regions a region move (a migration or a failover) may take the tenant to: its residency's
 * `allowedRegions` (none: its own region only), which must hold `region` (422 placement.residency).
 */
export function allowedRegions(
  move: { t: TenantRow; current: Placement; region: string },
  action: string,
): string[] {
  const { t, current, region } = move;
  const allowed = t.spec.residency?.allowedRegions ?? [current.region];
  if (!allowed.includes(region))
    throw new PolicyError(
      'placement.residency',
      422,
      `Region ${region} is not among the tenant's allowed regions (${allowed.join(', ')}).`,
      '/region',
      { rule: 'residency', region, allowedRegions: allowed },
      { tenantId: t.id, kind: 'Tenant', slug: t.slug, action },
    );
  return allowed;
}

/** A migration cut over and still in its rollback window (its source kept) refuses another: 409 with `message`. */
async function refuseInRollbackWindow(trx: Trx, tenantId: string, message: string): Promise<void> {
  const open = await sql<{ id: string }>`
    select id from tenant_migrations where tenant_id = ${tenantId} and state = 'CutOver' and rollback_until > now()`.execute(
    trx,
  );
  if (open.rows[0])
    throw new ConflictError('migration.in_rollback_window', message, {
      details: { migrationId: open.rows[0].id },
    });
}

/**
 * Where a region move (a migration or a failover) puts the tenant: a cell of its isolation with
 * room in `region` (refused with the placement rule's code) and no freeze of `workflowType`.
 * Checked before anything is written.
 */
export async function placeInRegion(
  trx: Trx,
  move: { t: TenantRow; current: Placement; region: string },
  action: string,
  workflowType: string,
) {
  const { t, current, region } = move;
  const cells = await lockCandidateCells(trx, [region], undefined);
  const chosen = chooseCell(
    {
      tenantId: t.id,
      tenantSlug: t.slug,
      region,
      environmentType: t.environment_type,
      isolation: current.isolation,
      allowedRegions: [region],
    },
    cells === 'none' ? [] : cells,
  );
  if (isRefusal(chosen))
    throw new PolicyError(
      chosen.code,
      chosen.code === 'placement.no_capacity' ? 409 : 422,
      chosen.message,
      '/region',
      chosen.details,
      { tenantId: t.id, kind: 'Tenant', slug: t.slug, action },
    );
  await assertNotFrozen(trx, t.id, workflowType);
  const target: Placement = { ...current, ...chosen, region };
  return { chosen, target };
}

/**
 * Cells held by a remote agent (src/agent): their data plane is the agent's, never reached from
 * here. A region migration and a failover run each region's side where its cell is served: as
 * commands of the agent holding it, or here (./region-dataplane.ts; the source side hands the
 * target a reader). A tenancy-mode migration between two agent-held cells runs its data-plane steps
 * as commands of the source cell's agent (./isolation-executor.ts; its first step checks that both
 * agents run one data plane). Refused: a tenancy-mode migration between an agent's cell and a cell
 * the control plane serves (its steps act on both databases at once, on one server).
 */
export async function refuseAgentCells(trx: Trx, from: Placement, to: Placement): Promise<void> {
  const agentCells = await remoteAgentCells(trx, [from.cellUuid, to.cellUuid]);
  if (agentCells.length === 0) return;
  if (from.cellUuid === to.cellUuid || agentCells.length === 2) return;
  throw new ConflictError(
    'migration.agent_cell',
    `Cell ${agentCells.join(', ')} is run by its own agent and the other cell is not: a tenancy-mode migration's steps act on the source and the target database on one data-plane server, which here would be the agent's and the control plane's. Through agents, it runs between cells held by agents of one data plane; a region migration (and a failover) runs between any two cells.`,
    { details: { cells: agentCells } },
  );
}

function dryRunView(
  tenant: string,
  current: Placement,
  target: Placement,
  steps: string[],
  verdicts: MigrationPlanView['verdicts'],
): MigrationPlanView {
  return { dryRun: true, tenant, from: bindingOf(current), to: bindingOf(target), steps, verdicts };
}

/** Records a migration, starts its workflow and audits the start, in the request's transaction. */
async function begin(
  trx: Trx,
  ctx: RequestContext,
  m: {
    id: string;
    tenantId: string;
    kind: Row['kind'];
    type: string;
    input: IsolationMigrationInput | RegionMigrationInput;
    current: Placement;
    target: Placement;
    window: number;
    verdicts: MigrationPlanView['verdicts'];
  },
): Promise<void> {
  await sql`
    insert into tenant_migrations (id, tenant_id, kind, source, target, plan, rollback_window_seconds, actor)
    values (${m.id}, ${m.tenantId}, ${m.kind}, ${JSON.stringify(m.current)}, ${JSON.stringify(m.target)}, '{}',
            ${m.window}, ${JSON.stringify(ctx.actor)})`.execute(trx);
  await startAudited(
    trx,
    ctx,
    { id: m.id, tenantId: m.tenantId, type: m.type, input: m.input },
    {
      action: 'migration.start',
      target: { kind: 'Migration', id: m.id, slug: m.input.tenantSlug },
      before: { placement: bindingOf(m.current) },
      after: { placement: bindingOf(m.target), rollbackWindowSeconds: m.window, verdicts: m.verdicts },
    },
  );
}
