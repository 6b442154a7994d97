/**
 * `blob-container` resources on Azure Blob Storage through `@azure/storage-blob`.
 *
 * Two layouts (TENANTRY_AZURE_BLOB_CONTAINER chooses):
 *  - `container` (default): one private container per scope, named `physicalName` (the scope slug,
 *    seed 000: `circlek-eu-prod-plan`);
 *  - `prefix`: one shared private container holding a `<scope-slug>/` folder per scope, marked by the
 *    blob `<scope-slug>/.tenantry` (Blob Storage has no empty folders). Deleting the resource
 *    deletes every blob under the prefix and nothing else.
 * Public access is drift: ensure turns it off again.
 *
 * While the tenant is suspended (`desired.suspended`) its container holds no stored access policy,
 * so every SAS token signed against one (`si=`) is refused with 403. Ensure keeps the policies it
 * takes away in the container's own metadata (SUSPENDED_KEY) before removing them, and a later
 * ensure of the active tenant puts exactly those back: whoever runs the provider (the controller,
 * the embedded agent, a remote agent, a new agent after a re-join) finds them where they were.
 */
import type * as StorageBlob from '@azure/storage-blob';
import type {
  BlobServiceClient,
  ContainerClient,
  PublicAccessType,
  RestError,
  SignedIdentifier,
  StoragePipelineOptions,
} from '@azure/storage-blob';
import type { AzureBlobConfig } from '../../config/config.js';
import type { AccessControl, AccessGrant } from '../access.js';
import { lazyModule } from '../lazy-module.js';
import {
  type DesiredResource,
  type ObservedResource,
  ProviderError,
  type ResourceProvider,
} from '../provider.js';

/** `@azure/storage-blob` (~12 MiB of RSS), loaded by the first call of a provider. */
export const storageBlob = lazyModule<typeof StorageBlob>(() => import('@azure/storage-blob'));

/** Azure's container name rule: 3-63 of lowercase letters, digits and single inner hyphens. */
const CONTAINER_NAME = /^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;
const MARKER = '.tenantry';
/** Container metadata: the stored access policies a suspension took away (base64url JSON). */
const SUSPENDED_KEY = 'tenantry_suspended_policies';

export interface AzureBlobProviderOptions {
  /** Attempts per request, the first included (default 2); the controller backs off between calls. */
  maxTries?: number;
  /** Milliseconds per attempt (default 15000). */
  tryTimeoutMs?: number;
}

export class AzureBlobProvider implements ResourceProvider, AccessControl {
  readonly type = 'blob-container' as const;
  readonly name = 'azure-blob';
  private service: Promise<BlobServiceClient> | undefined;
  private readonly pipeline: StoragePipelineOptions;

  /**
   * The SDK is loaded at the first call, not here; a connection string that names neither an account
   * key nor a SAS is refused now, the SDK's full parse at that call (permanent InvalidConfiguration).
   */
  constructor(
    private readonly config: AzureBlobConfig,
    options: AzureBlobProviderOptions = {},
  ) {
    if (!connectionStringForm(config.connectionString))
      throw unusable(
        'it names neither an account (AccountName, AccountKey) nor a SAS (BlobEndpoint, SharedAccessSignature)',
      );
    this.pipeline = {
      retryOptions: {
        maxTries: options.maxTries ?? 2,
        tryTimeoutInMs: options.tryTimeoutMs ?? 15_000,
        retryDelayInMs: 200,
        maxRetryDelayInMs: 2000,
      },
      userAgentOptions: { userAgentPrefix: 'tenantry' },
    };
  }

  private client(): Promise<BlobServiceClient> {
    this.service ??= storageBlob.load().then((sdk) => {
      try {
        return sdk.BlobServiceClient.fromConnectionString(this.config.connectionString, this.pipeline);
      } catch (err) {
        throw unusable((err as Error).message, err);
      }
    });
    this.service.catch(() => {
      this.service = undefined;
    });
    return this.service;
  }

  async observe(desired: DesiredResource): Promise<ObservedResource> {
    const target = await this.target(desired);
    return this.call('observe', () => this.read(target, desired.suspended));
  }

  async ensure(desired: DesiredResource): Promise<ObservedResource> {
    const target = await this.target(desired);
    return this.call('ensure', async () => {
      // No `access` option: the container is private. Already there (another worker, a retry): fine.
      await target.container.createIfNotExists({ metadata: target.prefix ? {} : metadataOf(desired) });
      const props = await target.container.getProperties();
      if (!target.prefix)
        await this.syncSuspension(target.container, props.metadata ?? {}, desired.suspended);
      else if (props.blobPublicAccess) await target.container.setAccessPolicy(undefined);
      if (target.prefix) {
        const marker = target.container.getBlockBlobClient(`${target.prefix}${MARKER}`);
        if (!(await marker.exists())) {
          const body = JSON.stringify({
            resource: desired.id,
            tenant: desired.tenantSlug,
            scope: desired.scopeSlug,
          });
          await marker.upload(body, Buffer.byteLength(body), {
            metadata: metadataOf(desired),
            blobHTTPHeaders: { blobContentType: 'application/json' },
          });
        }
      }
      return this.read(target, desired.suspended);
    });
  }

  /**
   * A suspended tenant's container: its policies saved in the metadata (with any saved before),
   * then removed. An active one's: the saved policies put back (with any added since), then the
   * metadata entry dropped. Each order survives a crash between its two writes. Public access is
   * turned off on the way (setAccessPolicy always writes it).
   */
  private async syncSuspension(
    container: ContainerClient,
    metadata: Record<string, string>,
    suspended: boolean | undefined,
  ): Promise<void> {
    const policy = await container.getAccessPolicy();
    const current = storedOf(policy.signedIdentifiers);
    const saved = savedOf(metadata);
    if (suspended) {
      if (current.length > 0) {
        const all = mergeById(saved ?? [], current);
        await container.setMetadata({ ...metadata, [SUSPENDED_KEY]: encodeSaved(all) });
        await container.setAccessPolicy(undefined, []);
      } else if (policy.blobPublicAccess) await container.setAccessPolicy(undefined, []);
      return;
    }
    if (saved) {
      await container.setAccessPolicy(undefined, signedOf(mergeById(saved, current)));
      const { [SUSPENDED_KEY]: _taken, ...rest } = metadata;
      await container.setMetadata(rest);
    } else if (policy.blobPublicAccess) await container.setAccessPolicy(undefined, signedOf(current));
  }

  async delete(desired: DesiredResource): Promise<void> {
    const target = await this.target(desired);
    await this.call('delete', async () => {
      if (!target.prefix) {
        await target.container.deleteIfExists();
        return;
      }
      if (!(await target.container.exists())) return;
      // The marker goes last: an interrupted delete is still visible, and the next one finishes it.
      const names: string[] = [];
      for await (const blob of target.container.listBlobsFlat({ prefix: target.prefix }))
        names.push(blob.name);
      const marker = `${target.prefix}${MARKER}`;
      for (const name of names.filter((n) => n !== marker)) {
        await target.container.deleteBlob(name, { deleteSnapshots: 'include' }).catch(ignoreNotFound);
      }
      await target.container.deleteBlob(marker, { deleteSnapshots: 'include' }).catch(ignoreNotFound);
    });
  }

  /**
   * The container's stored access policies: the SAS tokens handed to the tenant's apps are signed
   * against them (`si=`), so removing them revokes every such token at once and restoring them
   * makes the same tokens valid again. The observed grant includes the policies a suspended
   * tenant's ensure set aside in the metadata (a reconcile may run before a workflow's step that
   * records the grant, e.g. a region migration's freeze). In `prefix` mode the container is shared by every tenant
   * and holds no policy of this tenant's; there is nothing of its own to take away.
   */
  async observeAccess(desired: DesiredResource): Promise<AccessGrant> {
    const target = await this.target(desired);
    if (target.prefix) return { provider: this.name, shared: true, identifiers: [] };
    return this.call('observe access', async () => {
      if (!(await target.container.exists())) return { provider: this.name, identifiers: [] };
      // With those a suspended tenant's ensure set aside: whichever of the two ran first, none is lost.
      const [policy, props] = await Promise.all([
        target.container.getAccessPolicy(),
        target.container.getProperties(),
      ]);
      const saved = savedOf(props.metadata ?? {}) ?? [];
      return { provider: this.name, identifiers: mergeById(saved, storedOf(policy.signedIdentifiers)) };
    });
  }

  async revokeAccess(desired: DesiredResource, grant: AccessGrant): Promise<void> {
    const target = await this.target(desired);
    if (target.prefix || identifiersOf(grant).length === 0) return;
    await this.call('revoke access', async () => {
      if (await target.container.exists()) await target.container.setAccessPolicy(undefined, []);
    });
  }

  async restoreAccess(desired: DesiredResource, grant: AccessGrant): Promise<void> {
    const target = await this.target(desired);
    const identifiers = identifiersOf(grant);
    if (target.prefix || identifiers.length === 0) return;
    await this.call('restore access', async () => {
      if (!(await target.container.exists())) return;
      await target.container.setAccessPolicy(undefined, signedOf(identifiers));
    });
  }

  async close(): Promise<void> {
    // The SDK keeps no connections that need closing.
  }

  /** The container (and folder, in the prefix layout) of a resource: a region migration copies its blobs. */
  async blobsOf(
    desired: DesiredResource,
  ): Promise<{ container: ContainerClient; prefix: string; marker: string }> {
    const t = await this.target(desired);
    return { container: t.container, prefix: t.prefix ?? '', marker: `${t.prefix ?? ''}${MARKER}` };
  }

  private async target(
    desired: DesiredResource,
  ): Promise<{ container: ContainerClient; prefix: string | undefined }> {
    if (desired.type !== 'blob-container')
      throw new ProviderError(
        `Azure Blob provider cannot handle ${desired.type} resources`,
        'InvalidConfiguration',
        false,
      );
    const name = desired.physicalName;
    if (this.config.mode === 'prefix') {
      if (!/^[a-z0-9][a-z0-9-]{0,253}$/.test(name))
        throw new ProviderError(`Azure Blob: "${name}" is not a usable folder name`, 'InvalidName', false);
      return {
        container: (await this.client()).getContainerClient(this.config.container),
        prefix: `${name}/`,
      };
    }
    if (!CONTAINER_NAME.test(name))
      throw new ProviderError(
        `Azure Blob: "${name}" is not a legal container name (3-63 lowercase letters, digits and single hyphens, ` +
          'starting and ending with a letter or digit); use the prefix layout (TENANTRY_AZURE_BLOB_CONTAINER) for longer slugs',
        'InvalidName',
        false,
      );
    return { container: (await this.client()).getContainerClient(name), prefix: undefined };
  }

  private async read(
    target: { container: ContainerClient; prefix: string | undefined },
    suspended: boolean | undefined,
  ): Promise<ObservedResource> {
    const { container, prefix } = target;
    const where = prefix ? `${container.containerName}/${prefix}` : container.containerName;
    const details: Record<string, unknown> = { container: container.containerName, url: container.url };
    if (prefix) details.prefix = prefix;
    let access: PublicAccessType | undefined;
    let metadata: Record<string, string> = {};
    try {
      const props = await container.getProperties();
      access = props.blobPublicAccess;
      metadata = props.metadata ?? {};
    } catch (err) {
      if (isRestError(err) && err.statusCode === 404)
        return { exists: false, details, drift: [`container ${container.containerName} does not exist`] };
      throw err;
    }
    const drift: string[] = [];
    if (access)
      drift.push(`container ${container.containerName} allows public ${access} access; private desired`);
    if (prefix && !(await container.getBlobClient(`${prefix}${MARKER}`).exists()))
      return { exists: false, details, drift: [`folder ${where} does not exist`, ...drift] };
    if (!prefix && suspended) {
      const held = (await container.getAccessPolicy()).signedIdentifiers.map((i) => i.id);
      if (held.length > 0)
        drift.push(
          `container ${where} holds stored access policies (${held.join(', ')}) while its tenant is suspended`,
        );
    }
    if (!prefix && !suspended && savedOf(metadata))
      drift.push(
        `container ${where} still lacks the stored access policies its tenant's suspension took away`,
      );
    return { exists: true, details: { ...details, publicAccess: access ?? 'none' }, drift };
  }

  private async call<T>(action: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toProviderError(err, action);
    }
  }
}

function metadataOf(desired: DesiredResource): Record<string, string> {
  return {
    tenantry_resource: desired.id,
    tenantry_tenant: desired.tenantSlug,
    tenantry_scope: desired.scopeSlug,
  };
}

function ignoreNotFound(err: unknown): void {
  if (!(isRestError(err) && err.statusCode === 404)) throw err;
}

/**
 * No answer, a timeout, 408/429/5xx and a container still being deleted are retryable
 * (`StorageUnavailable`); refused credentials and invalid requests are permanent.
 */
export function toProviderError(err: unknown, action: string): unknown {
  if (err instanceof ProviderError || !(isRestError(err) || isAbort(err))) return err;
  const status = isRestError(err) ? err.statusCode : undefined;
  const code = isRestError(err) ? err.code : undefined;
  const message = `Azure Blob: ${action}: ${err.message.split('\n')[0]}${code ? ` (${code})` : ''}`;
  if (status === undefined || status === 408 || status === 429 || status >= 500)
    return new ProviderError(message, 'StorageUnavailable', true, { cause: err });
  if (status === 409 && code === 'ContainerBeingDeleted')
    return new ProviderError(message, 'ContainerBeingDeleted', true, { cause: err });
  if (status === 401 || status === 403)
    return new ProviderError(message, 'NotAuthorized', false, { cause: err });
  if (code === 'InvalidResourceName' || code === 'OutOfRangeInput')
    return new ProviderError(message, 'InvalidName', false, { cause: err });
  return new ProviderError(message, 'InvalidConfiguration', false, { cause: err });
}

/** An HTTP failure of the SDK (none can exist before it is loaded). */
function isRestError(err: unknown): err is RestError {
  const sdk = storageBlob.loaded();
  return sdk !== undefined && err instanceof sdk.RestError;
}

function unusable(why: string, cause?: unknown): ProviderError {
  return new ProviderError(
    `Azure Blob: the connection string is not usable: ${why}`,
    'InvalidConfiguration',
    false,
    cause === undefined ? undefined : { cause },
  );
}

/** `Key=value;…` naming an account key or a SAS with its endpoint, or the emulator's shorthand. */
function connectionStringForm(connectionString: string): boolean {
  if (connectionString.startsWith('UseDevelopmentStorage=true')) return true;
  const keys = new Set(connectionString.split(';').map((part) => part.trim().split('=', 1)[0]));
  return (
    (keys.has('AccountName') && keys.has('AccountKey')) ||
    (keys.has('BlobEndpoint') && keys.has('SharedAccessSignature'))
  );
}

function isAbort(err: unknown): err is Error {
  return err instanceof Error && err.name === 'AbortError';
}

/** The `blob-container` provider for one storage account. */
export function createAzureBlobProvider(
  config: AzureBlobConfig,
  options?: AzureBlobProviderOptions,
): AzureBlobProvider {
  return new AzureBlobProvider(config, options);
}

interface StoredIdentifier {
  id: string;
  permissions: string | null;
  startsOn: string | null;
  expiresOn: string | null;
}

function identifiersOf(grant: AccessGrant): StoredIdentifier[] {
  return Array.isArray(grant.identifiers) ? (grant.identifiers as StoredIdentifier[]) : [];
}

function storedOf(signed: SignedIdentifier[]): StoredIdentifier[] {
  return signed.map((i) => ({
    id: i.id,
    permissions: i.accessPolicy.permissions ?? null,
    startsOn: i.accessPolicy.startsOn?.toISOString() ?? null,
    expiresOn: i.accessPolicy.expiresOn?.toISOString() ?? null,
  }));
}

function signedOf(identifiers: StoredIdentifier[]): SignedIdentifier[] {
  return identifiers.map((i) => ({
    id: i.id,
    accessPolicy: {
      ...(i.permissions ? { permissions: i.permissions } : {}),
      ...(i.startsOn ? { startsOn: new Date(i.startsOn) } : {}),
      ...(i.expiresOn ? { expiresOn: new Date(i.expiresOn) } : {}),
    },
  }));
}

/** `b` over `a`, by policy id. */
function mergeById(a: StoredIdentifier[], b: StoredIdentifier[]): StoredIdentifier[] {
  return [...new Map([...a, ...b].map((i) => [i.id, i])).values()];
}

const encodeSaved = (ids: StoredIdentifier[]) => Buffer.from(JSON.stringify(ids)).toString('base64url');

/** The policies a suspension saved in the container's metadata, or undefined when none were. */
function savedOf(metadata: Record<string, string>): StoredIdentifier[] | undefined {
  const raw = metadata[SUSPENDED_KEY];
  return raw === undefined
    ? undefined
    : (JSON.parse(Buffer.from(raw, 'base64url').toString()) as StoredIdentifier[]);
}
