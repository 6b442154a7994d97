import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope, type Trx } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors/errors.js';
import { writeInScope } from '../idempotency/idempotent-write.js';
import {
  type StepRecord,
  toWorkflow,
  WORKFLOW_STATES,
  type Workflow,
  type WorkflowRegistry,
  type WorkflowRow,
  type WorkflowState,
} from './workflow.js';

export interface WorkflowDetail extends Workflow {
  tenantSlug: string | null;
  steps: StepRecord[];
}

interface StepRow {
  position: number;
  name: string;
  state: 'Completed' | 'Failed' | 'Compensated';
  attempts: number;
  error: string | null;
  started_at: Date;
  ended_at: Date;
}

/**
 * Workflows as the API shows and operators steer them: list, describe (every step of the type with
 * its state, attempts, start, end and error), retry a Waiting one, cancel an open one. Reads and
 * writes run in the caller's scope, so a tenant's principals see only their tenant's workflows.
 */
export class WorkflowsService {
  constructor(
    private readonly db: Db,
    private readonly registry: WorkflowRegistry,
  ) {}

  /**
   * Newest first, a page of `limit` with a keyset cursor: the id of the page's last workflow, whose
   * (created_at, id) the next page continues below (workflows_recent, migration 0047), so a page is
   * one index range however many workflows there are, and none is skipped or repeated.
   */
  async list(
    ctx: RequestContext,
    q: {
      tenant?: string | undefined;
      state?: string | undefined;
      limit: number;
      cursor?: string | undefined;
    },
  ): Promise<{ items: Workflow[]; nextCursor: string | null }> {
    if (q.state !== undefined && !(WORKFLOW_STATES as readonly string[]).includes(q.state))
      throw ValidationError.field(
        '/state',
        'workflow.state_invalid',
        `state must be one of ${WORKFLOW_STATES.join(', ')}`,
      );
    if (q.cursor !== undefined && !isUuid(q.cursor))
      throw ValidationError.field(
        '/cursor',
        'cursor.invalid',
        'The cursor is the id of a workflow of a page.',
      );
    return inScope(this.db, ctx.scope, async (trx) => {
      // A tenant's principals see their tenant's workflows (row-level security); named here too, so
      // that the plan follows the tenant's index rather than the policy's guess.
      const tenantId =
        q.tenant !== undefined
          ? await this.tenantId(trx, q.tenant)
          : ctx.scope.kind === 'tenant'
            ? ctx.scope.tenantId
            : undefined;
      const r = await sql<WorkflowRow>`
        select * from workflows w
        where true
          ${tenantId ? sql`and w.tenant_id = ${tenantId}` : sql``}
          ${q.state ? sql`and w.state = ${q.state}` : sql``}
          ${
            q.cursor
              ? sql`and (w.created_at, w.id) < (select c.created_at, c.id from workflows c where c.id = ${q.cursor.toLowerCase()})`
              : sql``
          }
        order by w.created_at desc, w.id desc
        limit ${q.limit + 1}`.execute(trx);
      const items = r.rows.slice(0, q.limit).map(toWorkflow);
      return { items, nextCursor: r.rows.length > q.limit ? (items.at(-1)?.id ?? null) : null };
    });
  }

  async get(ctx: RequestContext, id: string): Promise<WorkflowDetail> {
    return inScope(this.db, ctx.scope, (trx) => this.detail(trx, id));
  }

  /** A Waiting workflow runs its failed step again, attempts counted from zero. */
  async retry(ctx: RequestContext, id: string): Promise<WorkflowDetail> {
    return writeInScope(this.db, ctx, async (trx) => {
      const w = await this.row(trx, id, true);
      if (w.state !== 'Waiting')
        throw new ConflictError(
          'workflow.not_waiting',
          `Only a Waiting workflow can be retried; this one is ${w.state}.`,
          {
            details: { state: w.state },
          },
        );
      await sql`update workflows set state = 'Running', attempts = 0, run_after = now(), updated_at = now()
        where id = ${id}`.execute(trx);
      await this.audit(trx, ctx, w, 'workflow.retry', 'Running');
      await sql`select pg_notify('tenantry_workflows', ${id})`.execute(trx);
      return this.detail(trx, id);
    });
  }

  /**
   * Cancels an open workflow: its completed steps are undone, last first, and it ends Cancelled
   * with the tenant back in its previous lifecycle. A running one stops at its next checkpoint.
   */
  async cancel(ctx: RequestContext, id: string): Promise<WorkflowDetail> {
    return writeInScope(this.db, ctx, async (trx) => {
      const w = await this.row(trx, id, true);
      if (!['Pending', 'Running', 'Waiting'].includes(w.state))
        throw new ConflictError('workflow.not_cancellable', `A ${w.state} workflow cannot be cancelled.`, {
          details: { state: w.state },
        });
      await sql`update workflows
        set cancel_requested = ${JSON.stringify(ctx.actor)},
            state = case when state in ('Pending', 'Waiting') then 'Compensating' else state end,
            run_after = now(), updated_at = now()
        where id = ${id}`.execute(trx);
      await this.audit(trx, ctx, w, 'workflow.cancel', 'Compensating');
      await sql`select pg_notify('tenantry_workflows', ${id})`.execute(trx);
      return this.detail(trx, id);
    });
  }

  private async audit(trx: Trx, ctx: RequestContext, w: WorkflowRow, action: string, to: WorkflowState) {
    await appendAudit(
      trx,
      auditEntryOf(ctx, {
        tenantId: w.tenant_id,
        action,
        target: { kind: 'Workflow', id: w.id, slug: w.type },
        before: { state: w.state, error: w.error },
        after: { state: to },
        outcome: 'success',
        decision: null,
      }),
    );
  }

  private async tenantId(trx: Trx, ref: string): Promise<string> {
    const r = await sql<{ id: string }>`
      select id from tenants where ${isUuid(ref) ? sql`id = ${ref.toLowerCase()}` : sql`slug = ${ref}`}
      order by deleted_at nulls first limit 1`.execute(trx);
    const id = r.rows[0]?.id;
    if (!id) throw new NotFoundError('tenant.not_found', `No tenant "${ref}".`);
    return id;
  }

  private async row(trx: Trx, id: string, forUpdate = false): Promise<WorkflowRow> {
    const r = isUuid(id)
      ? await sql<WorkflowRow>`select * from workflows where id = ${id.toLowerCase()} ${forUpdate ? sql`for update` : sql``}`.execute(
          trx,
        )
      : { rows: [] };
    const w = r.rows[0];
    if (!w) throw new NotFoundError('workflow.not_found', `No workflow ${id}.`);
    return w;
  }

  private async detail(trx: Trx, id: string): Promise<WorkflowDetail> {
    const w = await this.row(trx, id);
    const rows = await sql<StepRow>`
      select position, name, state, attempts, error, started_at, ended_at from workflow_steps
      where tenant_id = ${w.tenant_id} and workflow_id = ${w.id} order by position`.execute(trx);
    const slug = await sql<{ slug: string }>`select slug from tenants where id = ${w.tenant_id}`.execute(trx);
    const byPosition = new Map(rows.rows.map((r) => [r.position, r]));
    const names = this.registry.get(w.type)?.steps.map((s) => s.name) ?? rows.rows.map((r) => r.name);
    let current = true;
    const steps: StepRecord[] = names.map((name, position) => {
      const r = byPosition.get(position);
      if (r)
        return {
          position,
          name,
          state: r.state,
          attempts: r.attempts,
          startedAt: r.started_at.toISOString(),
          endedAt: r.ended_at.toISOString(),
          error: r.error,
        };
      // The first step without a checkpoint of a running workflow is the one being worked on.
      const running = current && w.state === 'Running';
      current = false;
      return {
        position,
        name,
        state: running ? 'Running' : 'Pending',
        attempts: running ? w.attempts : 0,
        startedAt: null,
        endedAt: null,
        error: running ? w.error : null,
      };
    });
    return { ...toWorkflow(w), tenantSlug: slug.rows[0]?.slug ?? null, steps };
  }
}
