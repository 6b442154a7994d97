import { randomUUID } from 'node:crypto';
import { setTimeout } from 'node:timers/promises';
import { sql } from 'kysely';
import { recordAuditAttempt } from '../audit/append-audit.js';
import { type Change, type ObjectState, recordChange } from '../changes/change-path.js';
import type { Config } from '../config/config.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope, type Trx } from '../db/database.js';
import { type DiffEntry, diff } from '../domain/diff.js';
import { isUuid } from '../domain/identifiers.js';
import { allowedActions, type LifecycleAction, type LifecycleState, nextState } from '../domain/lifecycle.js';
import { APPLY_ORDER, IMMUTABLE_FIELDS, type Kind, type Manifest } from '../domain/manifest.js';
import { validateManifests } from '../domain/manifest-parser.js';
import {
  ConflictError,
  FieldErrors,
  mapDatabaseError,
  NotFoundError,
  ValidationError,
} from '../errors/errors.js';
import type { ChangeAction } from '../events/event-types.js';
import { type Placement, PlacementPolicy, type Verdict } from '../placement/placement.policy.js';
import { PolicyError } from '../placement/policy-error.js';
import { LIST_FILTERS, resolve, tenantOf } from './kinds.js';
import {
  countLive,
  findById,
  findBySlug,
  insertObject,
  listObjects,
  type ObjectRow,
  updateObject,
} from './object.repository.js';
import { type ApiObject, initialConditions, stateOf, toApiObject } from './representation.js';

export type ApplyAction = 'created' | 'configured' | 'unchanged' | 'deleted';

export interface ApplyOutcome {
  kind: Kind;
  name: string;
  uuid: string;
  action: ApplyAction;
  generation: number;
  changes: DiffEntry[];
  object: ApiObject;
  /** The placement, residency and quota checks the change met (issue 8). */
  verdicts?: Verdict[];
  /** A tenant's placement decision (its binding to a cell). */
  placement?: Placement | null;
  /** A WebhookEndpoint's generated signing secret: in the creating response only, stored nowhere else. */
  generatedSecret?: string;
}

export interface ApplyOptions {
  dryRun?: boolean;
  /** `create` refuses an object that exists; `replace` requires it to be `target`. */
  mode?: 'apply' | 'create' | 'replace';
  target?: { kind: Kind; id: string };
  /** From If-Match: the generation the caller last saw. */
  expectedGeneration?: number;
}

export interface ListOptions {
  filters: Record<string, string>;
  cursor?: string | undefined;
  limit: number;
  includeDeleted?: boolean;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface VersionRecord {
  generation: number;
  action: string;
  state: unknown;
  changes: DiffEntry[];
  actor: unknown;
  requestId: string;
  correlationId: string;
  createdAt: string;
}

/** How often a transaction aborted by a deadlock or serialization failure is tried in all. */
const TRANSACTION_ATTEMPTS = 4;

class Rollback<T> {
  constructor(readonly value: T) {}
}

const kindCode = (kind: Kind) =>
  kind === 'IntegrationResource' ? 'integration_resource' : kind.toLowerCase();

function getPath(obj: unknown, path: string): unknown {
  return path
    .split('/')
    .reduce<unknown>(
      (o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined),
      obj,
    );
}

function encodeCursor(row: ObjectRow): string {
  return Buffer.from(JSON.stringify([row.slug, row.id])).toString('base64url');
}

function decodeCursor(cursor: string): { slug: string; id: string } {
  try {
    const [slug, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (typeof slug === 'string' && typeof id === 'string' && isUuid(id)) return { slug, id };
  } catch {
    // fall through
  }
  throw new ValidationError(
    'cursor.invalid',
    'The cursor is not one this server issued.',
    [{ pointer: '/cursor', code: 'cursor.invalid', message: 'malformed' }],
    400,
  );
}

/**
 * The registry: customers, systems, tenants, deployments and integration resources. Every mutation
 * goes through the change path (lineage + audit + outbox + reconcile job in the same transaction).
 */
export class RegistryService {
  private readonly policy = new PlacementPolicy();

  constructor(
    private readonly db: Db,
    private readonly config: Config,
  ) {}

  /**
   * Runs `work` in one transaction in the caller's scope. A deadlock or serialization failure (two
   * multi-tenant applies taking audit chain heads in opposite order) aborts the whole transaction, so
   * it is retried from the start, a few times with jittered backoff, before surfacing as 409.
   */
  private async run<T>(ctx: RequestContext, work: (trx: Trx) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await inScope(this.db, ctx.scope, work);
      } catch (err) {
        if (err instanceof Rollback) return err.value as T;
        const code = (err as { code?: unknown }).code;
        if ((code === '40P01' || code === '40001') && attempt < TRANSACTION_ATTEMPTS) {
          await setTimeout(Math.random() * 20 * 2 ** attempt);
          continue;
        }
        throw mapDatabaseError(err);
      }
    }
  }

  /** Applies manifests in dependency order, all or nothing; `dryRun` does the same and rolls back. */
  async apply(ctx: RequestContext, docs: unknown[], opts: ApplyOptions = {}): Promise<ApplyOutcome[]> {
    // Schema errors and resolution errors of the valid documents are reported together.
    const { valid, errors: schemaErrors } = validateManifests(docs);
    // Kinds in dependency order; within a kind by name, so that concurrent applies lock rows and
    // audit chains in one order and don't deadlock (what still can, across kinds, run() retries).
    const key = (m: Manifest) => m.metadata.uuid?.toLowerCase() ?? m.metadata.name ?? '';
    const ordered = valid.sort(
      (a, b) =>
        APPLY_ORDER.indexOf(a.m.kind) - APPLY_ORDER.indexOf(b.m.kind) ||
        (key(a.m) < key(b.m) ? -1 : key(a.m) > key(b.m) ? 1 : a.i - b.i),
    );
    return this.audited(ctx, opts, () => this.applyAll(ctx, ordered, schemaErrors, opts));
  }

  /** A change refused by placement or quota policy is audited as denied (unless it was a dry run). */
  private async audited<T>(ctx: RequestContext, opts: ApplyOptions, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof PolicyError && !opts.dryRun) {
        await recordAuditAttempt(this.db, ctx, {
          tenantId: err.attempt.tenantId,
          action: `${err.attempt.kind.toLowerCase()}.${err.attempt.action}`,
          outcome: 'denied',
          target: { kind: err.attempt.kind, slug: err.attempt.slug },
          decision: { code: err.code, details: err.details },
        });
      }
      throw err;
    }
  }

  private applyAll(
    ctx: RequestContext,
    ordered: ReturnType<typeof validateManifests>['valid'],
    schemaErrors: ReturnType<typeof validateManifests>['errors'],
    opts: ApplyOptions,
  ): Promise<ApplyOutcome[]> {
    return this.run(ctx, async (trx) => {
      const errors = new FieldErrors();
      errors.list.push(...schemaErrors);
      const results: ApplyOutcome[] = [];
      const seen = new Map<string, number>();
      for (const { m, i } of ordered) {
        const outcome = await this.applyOne(trx, ctx, m, `/${i}`, errors, opts);
        if (!outcome) continue;
        const key = `${m.kind}/${outcome.uuid}`;
        if (seen.has(key))
          errors.add(`/${i}`, 'manifest.duplicate', `the same ${m.kind} is also document ${seen.get(key)}`);
        seen.set(key, i);
        results[i] = outcome;
      }
      errors.throwIfAny('manifest.invalid', 'One or more manifests cannot be applied.');
      const out = results.filter((r) => r !== undefined);
      if (opts.dryRun) throw new Rollback(out);
      return out;
    });
  }

  private async applyOne(
    trx: Trx,
    ctx: RequestContext,
    m: Manifest,
    at: string,
    errors: FieldErrors,
    opts: ApplyOptions,
  ): Promise<ApplyOutcome | undefined> {
    const before = errors.list.length;
    const res = await resolve(m, { trx, config: this.config, errors, at });
    if (!res) return undefined;

    let existing: ObjectRow | undefined;
    const givenUuid = m.metadata.uuid?.toLowerCase();
    if (givenUuid !== undefined) {
      if (!isUuid(givenUuid)) {
        errors.add(
          `${at}/metadata/uuid`,
          'uuid.invalid',
          `"${m.metadata.uuid}" is not a UUID (8-4-4-4-12 hexadecimal)`,
        );
        return undefined;
      }
      existing = await findById(trx, m.kind, givenUuid, { includeDeleted: true, forUpdate: true });
      if (existing?.deleted_at) {
        errors.add(
          `${at}/metadata/uuid`,
          'object.deleted',
          `${m.kind} ${givenUuid} was deleted; a UUID is never reused`,
        );
        return undefined;
      }
      if (!existing) {
        const other = await findBySlug(trx, m.kind, res.slug);
        if (other) {
          errors.add(
            `${at}/metadata/uuid`,
            'uuid.immutable',
            `${m.kind} "${res.slug}" exists with UUID ${other.id}; a UUID never changes`,
          );
          return undefined;
        }
      } else if (existing.slug !== res.slug) {
        this.immutableErrors(m, existing, at, errors);
        if (errors.list.length === before)
          errors.add(
            `${at}/metadata/name`,
            'field.immutable',
            `the object's slug is "${existing.slug}" and cannot change`,
          );
        return undefined;
      }
    } else {
      existing = await findBySlug(trx, m.kind, res.slug, { forUpdate: true });
    }

    if (opts.target && (opts.target.kind !== m.kind || !existing || existing.id !== opts.target.id)) {
      throw new ConflictError(
        `${kindCode(m.kind)}.target_mismatch`,
        'The manifest names a different object than the URL.',
        { status: 422 },
      );
    }
    if (existing && opts.mode === 'create') {
      throw new ConflictError(`${kindCode(m.kind)}.exists`, `${m.kind} "${existing.slug}" already exists.`, {
        details: { uuid: existing.id },
      });
    }

    const labels = m.metadata.labels ?? {};
    if (!existing) {
      const id = givenUuid ?? randomUUID();
      const tenantId = res.tenant === 'self' ? id : res.tenant;
      const platform = ctx.scope.kind === 'platform';
      const policyInput = { m, tenantId, id, slug: res.slug, existing, at, platform };
      const policy = await this.policy.beforeWrite(trx, policyInput);
      const row = await insertObject(trx, m.kind, {
        id,
        slug: res.slug,
        spec: JSON.stringify(res.spec ?? m.spec),
        labels: JSON.stringify(labels),
        conditions: JSON.stringify(initialConditions()),
        ...res.columns,
        ...policy.columns,
      });
      const after = stateOf(row);
      const changes = diff({}, after);
      await recordChange(trx, ctx, {
        kind: m.kind,
        objectId: id,
        slug: res.slug,
        tenantId,
        action: 'create',
        generation: 1,
        before: null,
        after,
        changes,
      });
      await this.policy.afterWrite(trx, ctx, policyInput, policy);
      return {
        kind: m.kind,
        name: res.slug,
        uuid: id,
        action: 'created',
        generation: 1,
        changes,
        object: toApiObject(m.kind, row),
        verdicts: policy.verdicts,
        ...(m.kind === 'Tenant' ? { placement: policy.placement ?? null } : {}),
        ...(res.generatedSecret ? { generatedSecret: res.generatedSecret } : {}),
      };
    }

    const expected = m.metadata.generation ?? opts.expectedGeneration;
    if (expected !== undefined && expected !== Number(existing.generation)) {
      throw new ConflictError(
        'object.generation_conflict',
        `${m.kind} "${existing.slug}" is at generation ${existing.generation}, not ${expected}.`,
        {
          status: opts.expectedGeneration !== undefined && m.metadata.generation === undefined ? 412 : 409,
          details: { currentGeneration: Number(existing.generation), expectedGeneration: expected },
          errors: [
            {
              pointer: `${at}/metadata/generation`,
              code: 'object.generation_conflict',
              message: 'stale generation',
            },
          ],
        },
      );
    }
    this.immutableErrors(m, existing, at, errors);
    if (errors.list.length > before) return undefined;

    const prior = stateOf(existing);
    const spec = res.spec ?? m.spec;
    const next: ObjectState = { ...prior, metadata: { ...prior.metadata, labels }, spec };
    let changes = diff(prior, next);
    if (changes.length === 0) {
      return {
        kind: m.kind,
        name: existing.slug,
        uuid: existing.id,
        action: 'unchanged',
        generation: Number(existing.generation),
        changes,
        object: toApiObject(m.kind, existing),
      };
    }
    const policyInput = {
      m,
      tenantId: tenantOf(m.kind, existing),
      id: existing.id,
      slug: existing.slug,
      existing,
      at,
      platform: ctx.scope.kind === 'platform',
    };
    const policy = await this.policy.beforeWrite(trx, policyInput);
    const row = await updateObject(trx, m.kind, existing.id, {
      spec: JSON.stringify(spec),
      labels: JSON.stringify(labels),
      phase: 'Pending',
      ...policy.columns,
      ...res.updateColumns,
    });
    changes = diff(prior, stateOf(row));
    const generation = Number(row.generation);
    await recordChange(trx, ctx, {
      kind: m.kind,
      objectId: row.id,
      slug: row.slug,
      tenantId: tenantOf(m.kind, row),
      action: 'update',
      generation,
      before: prior,
      after: stateOf(row),
      changes,
    });
    await this.policy.afterWrite(trx, ctx, policyInput, policy);
    return {
      kind: m.kind,
      name: row.slug,
      uuid: row.id,
      action: 'configured',
      generation,
      changes,
      object: toApiObject(m.kind, row),
      verdicts: policy.verdicts,
      ...(m.kind === 'Tenant' ? { placement: policy.placement ?? (row.placement as Placement | null) } : {}),
    };
  }

  private immutableErrors(m: Manifest, existing: ObjectRow, at: string, errors: FieldErrors): void {
    for (const path of IMMUTABLE_FIELDS[m.kind]) {
      const was = getPath(existing.spec, path);
      const now = getPath(m.spec, path);
      if (JSON.stringify(was) !== JSON.stringify(now)) {
        errors.add(
          `${at}/spec/${path}`,
          'field.immutable',
          `cannot change after creation (was ${JSON.stringify(was) ?? 'absent'})`,
        );
      }
    }
  }

  private async locate(
    trx: Trx,
    kind: Kind,
    ref: string,
    opts: { includeDeleted?: boolean; forUpdate?: boolean } = {},
  ): Promise<ObjectRow> {
    const row = isUuid(ref)
      ? await findById(trx, kind, ref.toLowerCase(), opts)
      : await findBySlug(trx, kind, ref, opts);
    if (!row)
      throw new NotFoundError(`${kindCode(kind)}.not_found`, `${kind} "${ref}" does not exist.`, {
        kind,
        ref,
      });
    return row;
  }

  async get(
    ctx: RequestContext,
    kind: Kind,
    ref: string,
    opts: { includeDeleted?: boolean } = {},
  ): Promise<ApiObject> {
    return this.run(ctx, async (trx) => toApiObject(kind, await this.locate(trx, kind, ref, opts)));
  }

  async list(ctx: RequestContext, kind: Kind, opts: ListOptions): Promise<Page<ApiObject>> {
    const filters = LIST_FILTERS[kind];
    const where = Object.entries(opts.filters).map(([name, value]) => {
      const f = filters[name];
      if (!f)
        throw ValidationError.field(
          `/${name}`,
          'filter.unknown',
          `${kind} cannot be filtered by "${name}"; filters: ${Object.keys(filters).join(', ')}`,
        );
      return f(value);
    });
    const limit = Math.min(Math.max(1, opts.limit), this.config.pageSizeMax);
    const after = opts.cursor ? decodeCursor(opts.cursor) : undefined;
    return this.run(ctx, async (trx) => {
      const rows = await listObjects(trx, kind, {
        where,
        after,
        limit: limit + 1,
        includeDeleted: opts.includeDeleted ?? false,
      });
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return {
        items: page.map((r) => toApiObject(kind, r)),
        nextCursor: rows.length > limit && last ? encodeCursor(last) : null,
      };
    });
  }

  /** The lineage of one object: every desired-state version with who, when and what changed. */
  async history(ctx: RequestContext, kind: Kind, ref: string): Promise<VersionRecord[]> {
    return this.run(ctx, async (trx) => {
      const row = await this.locate(trx, kind, ref, { includeDeleted: true });
      const r = await sql<{
        generation: string;
        action: string;
        state: unknown;
        changes: DiffEntry[];
        actor: unknown;
        request_id: string;
        correlation_id: string;
        created_at: Date;
      }>`
        select generation, action, state, changes, actor, request_id, correlation_id, created_at
        from object_versions where object_kind = ${kind} and object_id = ${row.id} order by generation`.execute(
        trx,
      );
      return r.rows.map((v) => ({
        generation: Number(v.generation),
        action: v.action,
        state: v.state,
        changes: v.changes,
        actor: v.actor,
        requestId: v.request_id,
        correlationId: v.correlation_id,
        createdAt: v.created_at.toISOString(),
      }));
    });
  }

  /** A tenant lifecycle action (DESIGN.md §1); `delete` also removes the tenant's deployments and resources. */
  async transition(
    ctx: RequestContext,
    ref: string,
    action: LifecycleAction,
    expectedGeneration?: number,
  ): Promise<ApiObject> {
    return this.run(ctx, async (trx) => {
      const row = await this.locate(trx, 'Tenant', ref, { forUpdate: true });
      this.checkGeneration('Tenant', row, expectedGeneration);
      const from = row.lifecycle as LifecycleState;
      const to = nextState(from, action);
      if (!to) {
        throw new ConflictError(
          'lifecycle.invalid_transition',
          `A ${from} tenant cannot ${action}; allowed: ${allowedActions(from).join(', ') || 'none'}.`,
          {
            details: { from, action, allowed: allowedActions(from) },
          },
        );
      }
      if (action === 'delete') {
        for (const d of await listObjects(trx, 'Deployment', {
          where: [sql`tenant_id = ${row.id}`],
          limit: 100_000,
          includeDeleted: false,
        })) {
          await this.softDelete(trx, ctx, 'Deployment', d);
        }
        for (const r of await listObjects(trx, 'IntegrationResource', {
          where: [sql`tenant_id = ${row.id}`],
          limit: 100_000,
          includeDeleted: false,
        })) {
          await this.softDelete(trx, ctx, 'IntegrationResource', r);
        }
        return toApiObject('Tenant', await this.softDelete(trx, ctx, 'Tenant', row));
      }
      const updated = await updateObject(trx, 'Tenant', row.id, { lifecycle: to, phase: 'Pending' });
      await this.record(trx, ctx, 'Tenant', action, row, updated);
      return toApiObject('Tenant', updated);
    });
  }

  /** Deletes an object, leaving a tombstone; resources go before their deployment. */
  async delete(
    ctx: RequestContext,
    kind: Kind,
    ref: string,
    expectedGeneration?: number,
  ): Promise<ApiObject> {
    if (kind === 'Tenant') return this.transition(ctx, ref, 'delete', expectedGeneration);
    return this.run(ctx, async (trx) => {
      const row = await this.locate(trx, kind, ref, { forUpdate: true });
      this.checkGeneration(kind, row, expectedGeneration);
      if (kind === 'Customer' && (await countLive(trx, 'Tenant', 'customer_id', row.id)) > 0) {
        throw new ConflictError(
          'customer.has_tenants',
          `Customer "${row.slug}" still has tenants; delete them first.`,
        );
      }
      if (kind === 'System' && (await countLive(trx, 'Deployment', 'system_id', row.id)) > 0) {
        throw new ConflictError('system.in_use', `System "${row.slug}" still has deployments.`);
      }
      if (kind === 'Deployment') {
        for (const r of await listObjects(trx, 'IntegrationResource', {
          where: [sql`deployment_id = ${row.id}`],
          limit: 100_000,
          includeDeleted: false,
        })) {
          await this.softDelete(trx, ctx, 'IntegrationResource', r);
        }
      }
      return toApiObject(kind, await this.softDelete(trx, ctx, kind, row));
    });
  }

  private checkGeneration(kind: Kind, row: ObjectRow, expected: number | undefined): void {
    if (expected !== undefined && expected !== Number(row.generation)) {
      throw new ConflictError(
        'object.generation_conflict',
        `${kind} "${row.slug}" is at generation ${row.generation}, not ${expected}.`,
        {
          status: 412,
          details: { currentGeneration: Number(row.generation), expectedGeneration: expected },
        },
      );
    }
  }

  private async softDelete(trx: Trx, ctx: RequestContext, kind: Kind, row: ObjectRow): Promise<ObjectRow> {
    await this.policy.beforeDelete(trx, kind, row);
    const updated = await updateObject(trx, kind, row.id, {
      lifecycle: 'Deleted',
      phase: 'Terminating',
      deleted_at: new Date(),
    });
    await this.record(trx, ctx, kind, 'delete', row, updated);
    await this.policy.afterDelete(trx, ctx, kind, updated);
    return updated;
  }

  private async record(
    trx: Trx,
    ctx: RequestContext,
    kind: Kind,
    action: ChangeAction,
    before: ObjectRow,
    after: ObjectRow,
  ): Promise<void> {
    const prior = stateOf(before);
    const next = stateOf(after);
    const change: Change = {
      kind,
      objectId: after.id,
      slug: after.slug,
      tenantId: tenantOf(kind, after),
      action,
      generation: Number(after.generation),
      before: prior,
      after: next,
      changes: diff(prior, next),
    };
    await recordChange(trx, ctx, change);
  }
}

/** The registry as routes use it; the authorization decorator (src/authz) implements it too. */
export type RegistryApi = Pick<
  RegistryService,
  'apply' | 'get' | 'list' | 'history' | 'transition' | 'delete'
>;
