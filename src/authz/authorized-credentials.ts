import type { RequestContext } from '../context/request-context.js';
import type { Db } from '../db/database.js';
import type { RegistryApi } from '../registry/registry.service.js';
import type { DatabaseCredentials, ResourceCredentialsService } from '../registry/resource-credentials.js';
import { auditRefusal } from './audit-refusal.js';
import { resourceOf } from './authorized-registry.js';
import type { Authorizer } from './authorizer.js';

/** The Cedar action of reading a resource's credentials: in the `write` group (not `read`). */
export const CREDENTIALS_ACTION = 'integrationresource.credentials';

/**
 * Policy as a decorator around ResourceCredentialsService: the resource is read through the
 * authorized registry (row-level security: another tenant's resource is 404), then
 * `integrationresource.credentials` is decided on it. Its verb is no read verb, so the default
 * policies grant it to platform admins and the owning tenant's admins only, not to readers,
 * operators or services. A refusal (403) is audited.
 */
export class AuthorizedResourceCredentials {
  constructor(
    private readonly inner: ResourceCredentialsService,
    private readonly registry: RegistryApi,
    private readonly authz: Authorizer,
    private readonly db: Db,
  ) {}

  async read(ctx: RequestContext, ref: string): Promise<DatabaseCredentials> {
    const resource = await this.registry.get(ctx, 'IntegrationResource', ref);
    try {
      this.authz.authorize(ctx, CREDENTIALS_ACTION, resourceOf('IntegrationResource', resource));
    } catch (err) {
      await auditRefusal(this.db, ctx, err, CREDENTIALS_ACTION);
      throw err;
    }
    return this.inner.reveal(ctx, resource);
  }
}
