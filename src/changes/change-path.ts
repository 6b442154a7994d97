import { type RawBuilder, sql } from 'kysely';
import { auditEntryOf, prepareAuditAppend } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import type { Trx } from '../db/database.js';
import type { DiffEntry } from '../domain/diff.js';
import { TenantryError } from '../errors/errors.js';
import { appendEventSql } from '../events/append-event.js';
import { currentTraceparent, inSpan } from '../observability/tracing.js';
import { type ChangeAction, eventName, type Kind } from '../registry/kinds/index.js';
import { lockTenantWrites } from './tenant-write-lock.js';

/** The desired state of one object at one generation, as kept in lineage, audit and events. */
export interface ObjectState {
  metadata: { uuid: string; slug: string; labels: Record<string, string> };
  spec: unknown;
  lifecycle: string;
  /** A tenant's placement (its binding to a cell), see src/placement. */
  placement?: unknown;
}

export interface Change {
  kind: Kind;
  objectId: string;
  slug: string;
  /** The tenant the object belongs to (a tenant's own id for a Tenant); null for platform objects. */
  tenantId: string | null;
  action: ChangeAction;
  /** The generation after the change. */
  generation: number;
  before: ObjectState | null;
  after: ObjectState | null;
  changes: DiffEntry[];
}

/**
 * The change path. In the caller's transaction, and as one statement, writes the new version into
 * the lineage, the audit record (unsequenced: the audit sequencer chains it after commit, see
 * src/audit/audit-sequencer.ts), the outbox event (with its gap-free per-tenant sequence and its webhook
 * deliveries, see src/events/append-event.ts) and the reconcile job. The object row itself has
 * been written by the caller in the same transaction, so either all five persist or none does.
 *
 * Concurrency: the caller holds the object's row lock (or has just inserted it); the reconcile job
 * is upserted on (object_kind, object_id), so many changes to one object collapse into one job.
 * The audit record takes no lock shared with other changes.
 */
export function recordChange(trx: Trx, ctx: RequestContext, change: Change): Promise<void> {
  return inSpan(
    `change ${change.kind.toLowerCase()}.${change.action}`,
    {
      'tenantry.kind': change.kind,
      'tenantry.object_id': change.objectId,
      'tenantry.tenant_id': change.tenantId ?? 'platform',
      'tenantry.correlation_id': ctx.correlationId,
    },
    async () => {
      await writeChange(trx, ctx, change);
    },
  );
}

/**
 * The change path with the object's own write in the same statement: `write` (an
 * `update … returning *` of the object's row, or an insert) runs as the statement's first CTE, beside
 * the lineage, audit record, event and job, and its row is returned. One round trip for the whole
 * change. `change.after` is then the state the write leaves (the caller derives it from the values it
 * sets; the row is not read back first). The policy gate decides before anything is written.
 */
export function writeWithChange<Row>(
  trx: Trx,
  ctx: RequestContext,
  change: Change,
  write: RawBuilder<Row>,
): Promise<Row> {
  return inSpan(
    `change ${change.kind.toLowerCase()}.${change.action}`,
    {
      'tenantry.kind': change.kind,
      'tenantry.object_id': change.objectId,
      'tenantry.tenant_id': change.tenantId ?? 'platform',
      'tenantry.correlation_id': ctx.correlationId,
    },
    async () => {
      const row = await writeChange<Row>(trx, ctx, change, write);
      if (!row) throw new Error(`${change.kind} ${change.objectId}: the object's write matched no row`);
      return row;
    },
  );
}

async function writeChange<Row>(
  trx: Trx,
  ctx: RequestContext,
  change: Change,
  write?: RawBuilder<Row>,
): Promise<Row | undefined> {
  const kind = change.kind;
  ctx.changed?.add(change.objectId);
  // A creation alters no verified identity (refusals are never cached); an update only if it renames.
  if (
    change.action === 'update'
      ? change.before?.metadata.slug !== change.after?.metadata.slug
      : change.action !== 'create'
  )
    ctx.identityChanged = true;
  // A suspended or archived tenant's own principals read but change nothing (issue 18).
  // An archived tenant's way on is deletion (placement and policy guard it), so deletes pass.
  if (ctx.scope.kind === 'tenant') {
    // A change of the tenant itself is judged by its lifecycle before the change (its row is locked
    // and known); any other change by its tenant's row, read here.
    const lifecycle =
      kind === 'Tenant' && change.before
        ? change.before.lifecycle
        : (
            await sql<{ lifecycle: string }>`
              select lifecycle from tenants where id = ${ctx.scope.tenantId}`.execute(trx)
          ).rows[0]?.lifecycle;
    if (lifecycle === 'Suspended' || (lifecycle === 'Archived' && change.action !== 'delete'))
      throw new TenantryError(
        'tenant.suspended',
        423,
        `The tenant is ${lifecycle.toLowerCase()}; it can read but not change anything.`,
        {
          details: { lifecycle },
        },
      );
  }
  // The policy gate (src/authz) decides before anything is written; a denial throws.
  const decision = ctx.authorize ? ctx.authorize(change) : null;
  const name = eventName(kind, change.action);
  const actor = JSON.stringify(ctx.actor);
  const eventData = {
    kind,
    uuid: change.objectId,
    slug: change.slug,
    generation: change.generation,
    previous: change.before,
    current: change.after,
    actor: ctx.actor,
    // The identity envelope travels with the event (never the token).
    appId: ctx.appId,
    sessionId: ctx.sessionId,
  };
  const subject = `${kind.toLowerCase()}s/${change.objectId}`;
  // The request's trace continues in the reconcile and the webhook attempts this change causes.
  const traceparent = currentTraceparent() ?? null;
  // The tenant write lock, shared as the change path holds it, before the object's reconcile job: an
  // update holds it already (findById forUpdate), a create takes it here (issue 15's lock order; a
  // status write, which locks parents' jobs, holds it exclusive).
  await lockTenantWrites(trx, change.tenantId, 'change');
  // The audit record goes in the same statement, unsequenced: no lock of its own; the audit
  // sequencer gives it its chain position and hash once this commits.
  const audit = prepareAuditAppend(
    auditEntryOf(ctx, {
      tenantId: change.tenantId,
      action: `${kind.toLowerCase()}.${change.action}`,
      target: { kind, id: change.objectId, slug: change.slug },
      before: change.before,
      after: change.after,
      outcome: 'success',
      decision,
    }),
  );
  const writes = sql`version as (
      insert into object_versions
        (tenant_id, object_kind, object_id, generation, action, slug, state, changes, actor, request_id, correlation_id)
      values (${change.tenantId}, ${kind}, ${change.objectId}, ${change.generation}, ${change.action}, ${change.slug},
              ${JSON.stringify(change.after)}, ${JSON.stringify(change.changes)}, ${actor}, ${ctx.requestId}, ${ctx.correlationId})
    ), audit as (${audit.insert}
    ), ${appendEventSql({ tenantId: change.tenantId, name, subject, data: eventData, correlationId: ctx.correlationId, traceparent })}`;
  const job = sql`insert into reconcile_jobs (object_kind, object_id, tenant_id, generation, traceparent)
    select ${kind}, ${change.objectId}::uuid, ${change.tenantId}::uuid, ${change.generation}::bigint, ${traceparent}
    from event_done
    on conflict (object_kind, object_id) do update
      set generation = greatest(reconcile_jobs.generation, excluded.generation),
          traceparent = excluded.traceparent,
          run_after = now(), attempts = 0, last_error = null, updated_at = now(),
          ticket = reconcile_jobs.ticket + 1`;
  if (!write) {
    await sql`with ${writes} ${job}`.execute(trx);
    return undefined;
  }
  // The object's write is the first CTE; its row comes back (the job's upsert always returns its one row).
  const r = await sql<Row>`
    with object as (${write}), ${writes}, job as (${job} returning 1)
    select object.* from object cross join job`.execute(trx);
  return r.rows[0];
}
