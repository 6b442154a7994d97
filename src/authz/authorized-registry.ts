import type { ChangeToAuthorize, RequestContext } from '../context/request-context.js';
import type { Db } from '../db/database.js';
import type { LifecycleAction } from '../domain/lifecycle.js';
import type { Kind } from '../registry/kinds/index.js';
import type { ServedObject } from '../registry/object-cache.js';
import type {
  ApplyOptions,
  ApplyOutcome,
  ListOptions,
  Page,
  RegistryApi,
  RegistryService,
  VersionRecord,
} from '../registry/registry.service.js';
import type { ApiObject } from '../registry/representation.js';
import { auditRefusal } from './audit-refusal.js';
import type { Authorizer } from './authorizer.js';
import { checkManifestTenants } from './tenant-spoofing.js';

/** The authorization area of a kind: the same words as its events (`integrationresource.created`). */
export const areaOf = (kind: Kind | string) => kind.toLowerCase();

/** The Cedar action of one change in the change path. */
export function changeAction(change: Pick<ChangeToAuthorize, 'kind' | 'action'>): string {
  const area = areaOf(change.kind);
  if (change.action === 'create' || change.action === 'update') return `${area}.write`;
  return `${area}.${change.action}`;
}

/** Every action the change path can ask about, declared to the authorizer at start-up. */
export function registryActions(kinds: readonly Kind[]): string[] {
  const out = ['registry.apply'];
  for (const k of kinds) out.push(`${areaOf(k)}.read`, `${areaOf(k)}.write`, `${areaOf(k)}.delete`);
  out.push('tenant.activate', 'tenant.suspend', 'tenant.resume', 'tenant.archive');
  return out;
}

export function resourceOf(kind: Kind, obj: Pick<ApiObject, 'metadata'> | ServedObject) {
  // A WebhookEndpoint names its tenant (UUID) in metadata.tenant; a platform-wide one has none.
  const tenantId =
    kind === 'Tenant'
      ? obj.metadata.uuid
      : kind === 'WebhookEndpoint'
        ? (obj.metadata.tenant ?? null)
        : (obj.metadata.tenantUuid ?? null);
  return {
    kind,
    id: obj.metadata.uuid,
    tenantId,
    customerId: kind === 'Customer' ? obj.metadata.uuid : null,
  };
}

/**
 * Policy as a decorator (CONVENTIONS.md): the registry as routes see it. Every mutation is decided
 * per changed object inside the change path (the decision is written into the audit record) and
 * every read is decided on the object read; tenant-scoped callers also run under row-level
 * security. Refusals (403) are audited in a transaction of their own. Routes never get the
 * undecorated RegistryService.
 */
export class AuthorizedRegistryService implements RegistryApi {
  constructor(
    private readonly inner: RegistryService,
    private readonly authz: Authorizer,
    private readonly db: Db,
  ) {}

  /** The context with the change path's policy gate. */
  private gated(ctx: RequestContext): RequestContext {
    return {
      ...ctx,
      authorize: (change) =>
        this.authz.authorize(ctx, changeAction(change), {
          kind: change.kind,
          id: change.objectId,
          tenantId: change.tenantId,
          customerId: change.kind === 'Customer' ? change.objectId : null,
        }),
    };
  }

  /** Audits a refusal (403) and rethrows; other errors pass through. */
  private async refused<T>(ctx: RequestContext, action: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      await auditRefusal(this.db, ctx, err, action);
      throw err;
    }
  }

  private read(ctx: RequestContext, kind: Kind, obj: ApiObject, action = `${areaOf(kind)}.read`): ApiObject {
    this.authz.authorize(ctx, action, resourceOf(kind, obj));
    return obj;
  }

  apply(ctx: RequestContext, docs: unknown[], opts: ApplyOptions = {}): Promise<ApplyOutcome[]> {
    return this.refused(ctx, 'registry.apply', async () => {
      await checkManifestTenants(this.db, ctx, docs);
      // Replacing a known object: decided on it first, so that a refusal is a 403 rather than
      // whatever row-level security makes of the write.
      if (opts.target)
        this.read(
          ctx,
          opts.target.kind,
          await this.inner.get(ctx, opts.target.kind, opts.target.id),
          `${areaOf(opts.target.kind)}.write`,
        );
      return this.inner.apply(this.gated(ctx), docs, opts);
    });
  }

  get(
    ctx: RequestContext,
    kind: Kind,
    ref: string,
    opts: { includeDeleted?: boolean } = {},
  ): Promise<ApiObject> {
    return this.refused(ctx, `${areaOf(kind)}.read`, async () =>
      this.read(ctx, kind, await this.inner.get(ctx, kind, ref, opts)),
    );
  }

  /** The same decision as `get`, on the object served (from the read cache or the database). */
  serve(
    ctx: RequestContext,
    kind: Kind,
    ref: string,
    opts: { includeDeleted?: boolean } = {},
  ): Promise<ServedObject> {
    return this.refused(ctx, `${areaOf(kind)}.read`, async () => {
      const served = await this.inner.serve(ctx, kind, ref, opts);
      this.authz.authorize(ctx, `${areaOf(kind)}.read`, resourceOf(kind, served));
      return served;
    });
  }

  list(ctx: RequestContext, kind: Kind, opts: ListOptions): Promise<Page<ApiObject>> {
    return this.refused(ctx, `${areaOf(kind)}.read`, async () => {
      // Row-level security narrows the page to what the caller's scope sees; each item is decided too.
      const page = await this.inner.list(ctx, kind, opts);
      for (const item of page.items) this.read(ctx, kind, item);
      return page;
    });
  }

  history(ctx: RequestContext, kind: Kind, ref: string): Promise<VersionRecord[]> {
    return this.refused(ctx, `${areaOf(kind)}.read`, async () => {
      this.read(ctx, kind, await this.inner.get(ctx, kind, ref, { includeDeleted: true }));
      return this.inner.history(ctx, kind, ref);
    });
  }

  transition(
    ctx: RequestContext,
    ref: string,
    action: LifecycleAction,
    expectedGeneration?: number,
  ): Promise<ApiObject> {
    return this.refused(ctx, `tenant.${action}`, () =>
      this.inner.transition(this.gated(ctx), ref, action, expectedGeneration),
    );
  }

  delete(ctx: RequestContext, kind: Kind, ref: string, expectedGeneration?: number): Promise<ApiObject> {
    return this.refused(ctx, `${areaOf(kind)}.delete`, () =>
      this.inner.delete(this.gated(ctx), kind, ref, expectedGeneration),
    );
  }
}
