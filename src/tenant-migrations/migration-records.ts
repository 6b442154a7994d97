import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { Change } from '../changes/change-path.js';
import type { RequestContext } from '../context/request-context.js';
import type { ProviderSet } from '../controller/providers.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import { diff } from '../domain/diff.js';
import type { Placement } from '../placement/placement.policy.js';
import { ProviderError } from '../providers/provider.js';
import { stateOf } from '../registry/representation.js';
import { startWorkflow } from '../workflows/start-workflow.js';
import { workflowIdOf as workflowIdOfParts } from '../workflows/workflow.js';

/**
 * What the migration workflows (tenancy mode in migration-workflows.ts, region in
 * region-migration.ts) share: their dependencies, the migration's row and plan, and the helpers
 * that turn a placement or an object's change into the registry's terms.
 */

/** One database resource's move: where its data is, where it goes, and the keys of both secrets. */
export interface ResourcePlan {
  resourceId: string;
  scopeSlug: string;
  source: { database: string; schema: string; role: string };
  /** The data lands in `source.schema` of the target database, renamed to `schema` at the cut-over. */
  target: { database: string; schema: string; role: string };
  /** The target's generated credentials are kept under this key until the cut-over makes them the resource's. */
  targetKey: string;
  /** The source's credentials are kept under this key from the cut-over on (for a rollback). */
  sourceKey: string;
  /** Publication, slot and subscription name. */
  replication: string;
  tables: string[];
}

export interface MigrationPlan {
  mode: 'logical-replication' | 'freeze-copy';
  modeReason: string;
  resources: ResourcePlan[];
  /**
   * The cell whose agent runs the data-plane steps (both cells are held by agents of one data
   * plane: ./isolation-executor.ts); absent: the control plane runs them itself.
   */
  agentCell?: string;
}

export interface MigrationDeps {
  db: Db;
  providers: ProviderSet;
  /** The data-plane PostgreSQL, as a role that may create roles, databases and subscriptions. */
  dataplaneUrl: string;
  /** How long the sync-and-verify step waits for the copy to equal the frozen source. */
  verifyTimeoutMs?: number;
}

export interface MigrationRow {
  id: string;
  tenant_id: string;
  state: string;
  source: Placement;
  target: Placement;
  plan: MigrationPlan | Record<string, never>;
  rollback_until: Date | null;
  freeze_started_at: Date | null;
}

/**
 * Refuses a schema holding objects the copy does not carry (pg-copy.ts `inventory`); answers its
 * tables without a replica identity, qualified, for `copyMode`.
 */
export function copiable(inv: {
  schema: string;
  unsupported: string[];
  withoutIdentity: string[];
}): string[] {
  if (inv.unsupported.length > 0)
    throw new ProviderError(
      `schema ${inv.schema} holds objects the migration does not copy: ${inv.unsupported.join(', ')}`,
      'Ineligible',
      false,
    );
  return inv.withoutIdentity.map((t) => `${inv.schema}.${t}`);
}

/**
 * How a migration moves the data, and why: logical replication (writes frozen only for the
 * cut-over) where the source `server`'s wal_level is logical and every table has a replica
 * identity; otherwise a copy during the write freeze.
 */
export function copyMode(
  server: string,
  level: string,
  withoutIdentity: string[],
): Pick<MigrationPlan, 'mode' | 'modeReason'> {
  if (level === 'logical' && withoutIdentity.length === 0)
    return {
      mode: 'logical-replication',
      modeReason:
        'wal_level is logical and every table has a replica identity: writes are frozen only for the cut-over',
    };
  return {
    mode: 'freeze-copy',
    modeReason:
      level !== 'logical'
        ? `${server}'s wal_level is ${level || 'unknown'}, not logical: the data is copied during the write freeze`
        : `tables without a primary key or replica identity (${withoutIdentity.join(', ')}): the data is copied during the write freeze`,
  };
}

/** The plan's checkpoint: the migration's row holds the plan and its mode. */
export async function savePlan(
  trx: Trx,
  migrationId: string,
  plan: Pick<MigrationPlan, 'mode'>,
): Promise<void> {
  await sql`update tenant_migrations set plan = ${JSON.stringify(plan)}, mode = ${plan.mode}, updated_at = now()
    where id = ${migrationId}`.execute(trx);
}

/**
 * Starts the workflow of a move (a migration, its rollback or retirement, a failover) in the
 * request's transaction, and audits the request as `audit` says when it started one (a repeated
 * request finds its workflow and records nothing again). Answers whether it started one.
 */
export async function startAudited(
  trx: Trx,
  ctx: RequestContext,
  w: { id: string; tenantId: string; type: string; input: unknown },
  audit: {
    action: string;
    target: { kind: string; id: string; slug: string };
    before: unknown;
    after: unknown;
  },
): Promise<boolean> {
  const { created } = await startWorkflow(trx, {
    ...w,
    actor: ctx.actor,
    requestId: ctx.requestId,
    correlationId: ctx.correlationId,
  });
  if (created)
    await appendAudit(
      trx,
      auditEntryOf(ctx, { tenantId: w.tenantId, ...audit, outcome: 'success', decision: null }),
    );
  return created;
}

/** The write freeze's start, checkpointed (a re-run keeps the first). */
export async function recordFreezeStart(trx: Trx, migrationId: string, output: unknown): Promise<void> {
  await sql`update tenant_migrations set freeze_started_at = coalesce(freeze_started_at, ${(output as { frozenAt: string }).frozenAt}::timestamptz)
    where id = ${migrationId}`.execute(trx);
}

/** The write freeze undone (its step compensated): writes allowed again, its length recorded. */
export async function recordFreezeUndone(db: Db, migrationId: string): Promise<void> {
  await asPlatform(db, (trx) =>
    sql`update tenant_migrations set writes_frozen = false, freeze_ended_at = now(),
          freeze_ms = (extract(epoch from now() - freeze_started_at) * 1000)::int
        where id = ${migrationId}`.execute(trx),
  );
}

export async function readMigration(trx: Trx, id: string): Promise<MigrationRow> {
  const r = await sql<MigrationRow>`select * from tenant_migrations where id = ${id}`.execute(trx);
  const row = r.rows[0];
  if (!row) throw new ProviderError(`migration ${id} is gone`, 'MigrationGone', false);
  return row;
}

export const migrationRow = (db: Db, id: string) => asPlatform(db, (trx) => readMigration(trx, id));

/** Where a tenant is placed, as a migration or failover shows it (both sides). */
export type Binding = Pick<
  Placement,
  'cell' | 'cellUuid' | 'region' | 'isolation' | 'networkPartition' | 'dataPartition'
>;

export function bindingOf(p: Placement): Binding {
  return {
    cell: p.cell,
    cellUuid: p.cellUuid,
    region: p.region,
    isolation: p.isolation,
    networkPartition: p.networkPartition,
    dataPartition: p.dataPartition,
  };
}

export function changeOf(
  kind: 'Tenant' | 'IntegrationResource',
  before: Parameters<typeof stateOf>[0],
  after: Parameters<typeof stateOf>[0],
  action: Change['action'],
): Change {
  const b = stateOf(before);
  const a = stateOf(after);
  return {
    kind,
    objectId: after.id,
    slug: after.slug,
    tenantId: kind === 'Tenant' ? after.id : String(after.tenant_id),
    action,
    generation: Number(after.generation),
    before: b,
    after: a,
    changes: diff(b, a),
  };
}

/** A stable UUID for one part of one migration (secret keys), like workflow ids. */
export function workflowKey(migrationId: string, resourceId: string, part: string): string {
  return workflowIdOfParts('migration-key', migrationId, resourceId, part);
}

/**
 * The migration record and audit of a switch between its two sides, in the switch's transaction:
 * `forward` (the cut-over) is CutOver with the freeze's length and the rollback window from now;
 * `back` (a rollback) is RolledBack with the rollback's freeze. Both audited with the placements.
 */
export async function recordSwitch(
  trx: Trx,
  ctx: RequestContext,
  o: { tenantId: string; tenantSlug: string; migrationId: string; from: Placement; to: Placement },
  direction: 'forward' | 'back',
): Promise<void> {
  if (direction === 'forward')
    await sql`
      update tenant_migrations set state = 'CutOver', cut_over_at = now(), writes_frozen = false,
        freeze_ended_at = now(), freeze_ms = (extract(epoch from now() - freeze_started_at) * 1000)::int,
        rollback_until = now() + make_interval(secs => rollback_window_seconds), updated_at = now()
      where id = ${o.migrationId}`.execute(trx);
  else
    await sql`
      update tenant_migrations set state = 'RolledBack', rolled_back_at = now(), writes_frozen = false,
        rollback_verification = coalesce(rollback_verification, '{}'::jsonb) || jsonb_build_object(
          'freezeMs', (extract(epoch from now() - (rollback_verification->>'frozenAt')::timestamptz) * 1000)::int),
        updated_at = now()
      where id = ${o.migrationId}`.execute(trx);
  await appendAudit(
    trx,
    auditEntryOf(ctx, {
      tenantId: o.tenantId,
      action: direction === 'forward' ? 'migration.cut_over' : 'migration.rolled_back',
      target: { kind: 'Migration', id: o.migrationId, slug: o.tenantSlug },
      before: { placement: bindingOf(o.from) },
      after: { placement: bindingOf(o.to) },
      outcome: 'success',
      decision: null,
    }),
  );
}
