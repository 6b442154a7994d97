import fs from 'node:fs/promises';
import path from 'node:path';
import {
  type DesiredResource,
  type ObservedResource,
  ProviderError,
  type ResourceProvider,
} from '../provider.js';

/** Azure's container naming rule, so a container that works here also works on Azure. */
const CONTAINER = /^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;

/**
 * Blob containers of the embedded default: one folder per container under `<dataDir>/blobs/`.
 */
export class LocalDiskBlobProvider implements ResourceProvider {
  readonly type = 'blob-container' as const;
  readonly name = 'local-disk';
  readonly root: string;

  constructor(dataDir: string) {
    this.root = path.join(dataDir, 'blobs');
  }

  private dir(desired: DesiredResource): string {
    if (!CONTAINER.test(desired.physicalName)) {
      throw new ProviderError(
        `"${desired.physicalName}" is not a valid container name (3-63 lowercase letters, digits, single hyphens)`,
        'InvalidName',
        false,
      );
    }
    return path.join(this.root, desired.physicalName);
  }

  async observe(desired: DesiredResource): Promise<ObservedResource> {
    const dir = this.dir(desired);
    const stat = await fs.stat(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw this.failure('inspect', dir, err);
    });
    if (stat && !stat.isDirectory()) {
      return { exists: false, details: { path: dir }, drift: [`${dir} is not a directory`] };
    }
    return { exists: stat !== undefined, details: { path: dir }, drift: [] };
  }

  async ensure(desired: DesiredResource): Promise<ObservedResource> {
    const dir = this.dir(desired);
    await fs.mkdir(dir, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
      throw this.failure('create', dir, err);
    });
    return this.observe(desired);
  }

  async delete(desired: DesiredResource): Promise<void> {
    const dir = this.dir(desired);
    await fs.rm(dir, { recursive: true, force: true }).catch((err: NodeJS.ErrnoException) => {
      throw this.failure('delete', dir, err);
    });
  }

  async close(): Promise<void> {}

  private failure(op: string, dir: string, err: NodeJS.ErrnoException): ProviderError {
    // Permissions, a full or read-only disk, a file in the way: an operator can fix these, so retry.
    return new ProviderError(`cannot ${op} ${dir}: ${err.code ?? err.message}`, 'StorageUnavailable', true, {
      cause: err,
    });
  }
}
