import { setTimeout } from 'node:timers/promises';
import { sql } from 'kysely';
import { recordAuditAttempt } from '../audit/append-audit.js';
import type { Config } from '../config/config.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope, readInScope, type Trx } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import type { LifecycleAction, LifecycleState } from '../domain/lifecycle.js';
import { validateManifests } from '../domain/manifest-parser.js';
import { FieldErrors, mapDatabaseError, ValidationError } from '../errors/errors.js';
import { writeInScope } from '../idempotency/idempotent-write.js';
import { PolicyError } from '../placement/policy-error.js';
import { startLifecycleWorkflow } from '../workflows/start-lifecycle-workflow.js';
import {
  type ApplyAction,
  type ApplyOptions,
  type ApplyOutcome,
  applyManifest,
  type RegistryDeps,
} from './apply-manifests.js';
import { APPLY_ORDER, definitionOf, type Kind, LIST_FILTERS, type Manifest, TABLES } from './kinds/index.js';
import { listObjects, type ObjectRow, readLineage, type VersionRecord } from './object.repository.js';
import { ObjectCache, type ServedObject, servedObject } from './object-cache.js';
import { deleteObject, locate, objectNotFound } from './object-changes.js';
import { type ApiObject, toApiObject } from './representation.js';
import { transitionTenant } from './tenant-lifecycle.js';

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

/** How often a transaction aborted by a deadlock or serialization failure is tried in all. */
const TRANSACTION_ATTEMPTS = 4;

class Rollback<T> {
  constructor(readonly value: T) {}
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
  private readonly config: Config;

  constructor(
    private readonly db: Db,
    private readonly deps: RegistryDeps,
    /** The API process's read cache of GET answers (absent: every GET reads the database). */
    private readonly objects?: ObjectCache,
  ) {
    this.config = deps.config;
  }

  /**
   * Runs `work` in one transaction in the caller's scope. A deadlock or serialization failure (two
   * multi-tenant applies taking audit chain heads in opposite order) aborts the whole transaction, so
   * it is retried from the start, a few times with jittered backoff, before surfacing as 409.
   */
  private async run<T>(
    ctx: RequestContext,
    work: (trx: Trx) => Promise<T>,
    opts: { write?: boolean } = {},
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        // A write under an Idempotency-Key commits with its answer (src/idempotency/idempotent-write.ts).
        if (opts.write) return await writeInScope(this.db, ctx, work);
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
    return this.run(
      ctx,
      async (trx) => {
        const errors = new FieldErrors();
        errors.list.push(...schemaErrors);
        const results: ApplyOutcome[] = [];
        const seen = new Map<string, number>();
        for (const { m, i } of ordered) {
          const outcome = await applyManifest(trx, ctx, this.deps, m, `/${i}`, errors, opts);
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
      },
      { write: true },
    );
  }

  async get(
    ctx: RequestContext,
    kind: Kind,
    ref: string,
    opts: { includeDeleted?: boolean } = {},
  ): Promise<ApiObject> {
    // One statement (migration 0036): the scope and the read in the statement's own transaction.
    let row: ObjectRow | undefined;
    try {
      row = await readInScope<ObjectRow>(
        this.db,
        ctx.scope,
        TABLES[kind],
        isUuid(ref) ? { id: ref.toLowerCase(), includeDeleted: opts.includeDeleted === true } : { slug: ref },
      );
    } catch (err) {
      throw mapDatabaseError(err);
    }
    if (!row) throw objectNotFound(kind, ref);
    return toApiObject(kind, row);
  }

  /**
   * One object as GET answers it, serialised: from the process's read cache when an entry read
   * under the caller's scope is there (src/registry/object-cache.ts), else `get` (and kept).
   */
  async serve(
    ctx: RequestContext,
    kind: Kind,
    ref: string,
    opts: { includeDeleted?: boolean } = {},
  ): Promise<ServedObject> {
    const cache = this.objects;
    if (!cache?.caches(kind)) return servedObject(await this.get(ctx, kind, ref, opts));
    const key = ObjectCache.key(ctx.scope, kind, ref, opts.includeDeleted === true);
    const hit = cache.get(key);
    if (hit) return hit;
    const began = cache.begin();
    const served = servedObject(await this.get(ctx, kind, ref, opts));
    cache.set(key, served, began);
    return served;
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
    // A tenant's objects are its rows only (row-level security decides that); said here too, so the
    // planner follows the tenant's own rows instead of guessing at the policy (migration 0047).
    const owner = definitionOf(kind).scope;
    if (ctx.scope.kind === 'tenant' && (owner === 'self' || owner === 'tenant'))
      where.push(sql`${sql.ref(owner === 'self' ? 'id' : 'tenant_id')} = ${ctx.scope.tenantId}`);
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
    return this.run(ctx, async (trx) =>
      readLineage(trx, kind, (await locate(trx, kind, ref, { includeDeleted: true })).id),
    );
  }

  /** A tenant lifecycle action (DESIGN.md §1); `delete` also removes the tenant's deployments and resources. */
  async transition(
    ctx: RequestContext,
    ref: string,
    action: LifecycleAction,
    expectedGeneration?: number,
  ): Promise<ApiObject> {
    return this.run(
      ctx,
      async (trx) => {
        const before = await locate(trx, 'Tenant', ref, { forUpdate: true });
        const row = await transitionTenant(trx, ctx, this.deps.policy, ref, action, expectedGeneration);
        // The workflow that makes the transition true starts with it (src/workflows).
        await startLifecycleWorkflow(trx, ctx, {
          tenantId: row.id,
          tenantSlug: row.slug,
          action,
          from: before.lifecycle as LifecycleState,
          to: row.lifecycle as LifecycleState,
          generation: Number(row.generation),
        });
        return toApiObject('Tenant', row);
      },
      { write: true },
    );
  }

  /** Deletes an object, leaving a tombstone; resources go before their deployment. */
  async delete(
    ctx: RequestContext,
    kind: Kind,
    ref: string,
    expectedGeneration?: number,
  ): Promise<ApiObject> {
    if (kind === 'Tenant') return this.transition(ctx, ref, 'delete', expectedGeneration);
    return this.run(ctx, async (trx) =>
      toApiObject(kind, await deleteObject(trx, ctx, this.deps.policy, kind, ref, expectedGeneration)),
    );
  }
}

export type { ApplyAction, ApplyOptions, ApplyOutcome, RegistryDeps, VersionRecord };

/** The registry as routes use it; the authorization decorator (src/authz) implements it too. */
export type RegistryApi = Pick<
  RegistryService,
  'apply' | 'get' | 'serve' | 'list' | 'history' | 'transition' | 'delete'
>;
