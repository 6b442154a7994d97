import { randomBytes, randomUUID } from 'node:crypto';
import { BlobServiceClient } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Azurite,
  azuriteConnectionString,
  azuriteUnavailableReason,
  startAzurite,
} from '../../../test/infra/azurite.js';
import { skipReason } from '../../../test/infra/engines.js';
import { freePort } from '../../../test/infra/kafka-broker.js';
import { loadConfig } from '../../config/config.js';
import { type DesiredResource, ProviderError } from '../provider.js';
import { type AzureBlobProvider, createAzureBlobProvider } from './index.js';

let azurite: Azurite | undefined;
let reason = azuriteUnavailableReason();
if (!reason) {
  try {
    azurite = await startAzurite();
    console.log(`Azurite ready in ${azurite.startMillis} ms`);
  } catch (err) {
    reason = `Azurite did not start: ${(err as Error).message.split('\n')[0]}`;
  }
}
skipReason('Azure Blob provider tests', reason);

function container(scopeSlug: string): DesiredResource {
  return {
    id: randomUUID(),
    type: 'blob-container',
    tenantId: '6846a7a4-4e09-41a8-918c-9c8e2aa938ac',
    tenantSlug: 'circlek-eu-prod',
    scopeSlug,
    physicalName: scopeSlug,
  };
}

const fresh = () => `circlek-eu-prod-${randomBytes(4).toString('hex')}`;

async function rejection(p: Promise<unknown>): Promise<ProviderError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProviderError);
  return err as ProviderError;
}

describe.skipIf(reason)('Azure Blob provider (Azurite)', () => {
  let provider: AzureBlobProvider;
  let service: BlobServiceClient;

  beforeAll(() => {
    // Through loadConfig, as `tenantry serve` does.
    const config = loadConfig({}, { TENANTRY_AZURE_STORAGE_CONNECTION_STRING: azurite!.connectionString });
    provider = createAzureBlobProvider(config.azureBlob!);
    service = BlobServiceClient.fromConnectionString(azurite!.connectionString);
  });

  afterAll(async () => {
    await provider?.close();
    await azurite?.stop();
  });

  it('creates the seed-000 container, private, and re-ensuring changes nothing', async () => {
    const desired = container('circlek-eu-prod-plan');
    expect(await provider.observe(desired)).toMatchObject({
      exists: false,
      drift: ['container circlek-eu-prod-plan does not exist'],
    });
    const observed = await provider.ensure(desired);
    expect(observed).toMatchObject({
      exists: true,
      drift: [],
      details: { container: 'circlek-eu-prod-plan', publicAccess: 'none' },
    });
    const props = await service.getContainerClient('circlek-eu-prod-plan').getProperties();
    expect(props.blobPublicAccess).toBeUndefined();
    expect(props.metadata).toMatchObject({
      tenantry_resource: desired.id,
      tenantry_scope: 'circlek-eu-prod-plan',
    });

    await service.getContainerClient('circlek-eu-prod-plan').uploadBlockBlob('plan/export.csv', 'a,b', 3);
    for (let i = 0; i < 3; i++) expect((await provider.ensure(desired)).drift).toEqual([]);
    const names: string[] = [];
    for await (const c of service.listContainers({ prefix: 'circlek-eu-prod-plan' })) names.push(c.name);
    expect(names).toEqual(['circlek-eu-prod-plan']);
    // Re-ensuring keeps the data.
    expect(
      await service.getContainerClient('circlek-eu-prod-plan').getBlobClient('plan/export.csv').exists(),
    ).toBe(true);
  });

  it('public access switched on behind its back is drift, and ensure makes it private again', async () => {
    const desired = container(fresh());
    await provider.ensure(desired);
    await service.getContainerClient(desired.physicalName).setAccessPolicy('container');
    expect((await provider.observe(desired)).drift).toEqual([
      `container ${desired.physicalName} allows public container access; private desired`,
    ]);
    expect(await provider.ensure(desired)).toMatchObject({ drift: [], details: { publicAccess: 'none' } });
    expect(
      (await service.getContainerClient(desired.physicalName).getProperties()).blobPublicAccess,
    ).toBeUndefined();
  });

  it('a container deleted behind its back is observed missing and recreated', async () => {
    const desired = container(fresh());
    await provider.ensure(desired);
    await service.getContainerClient(desired.physicalName).delete();
    expect((await provider.observe(desired)).exists).toBe(false);
    expect((await provider.ensure(desired)).exists).toBe(true);
    expect(await service.getContainerClient(desired.physicalName).exists()).toBe(true);
  });

  it('delete removes the container with its blobs, and deleting again succeeds', async () => {
    const desired = container(fresh());
    await provider.ensure(desired);
    await service.getContainerClient(desired.physicalName).uploadBlockBlob('x.txt', 'x', 1);
    await provider.delete(desired);
    expect(await service.getContainerClient(desired.physicalName).exists()).toBe(false);
    await provider.delete(desired);
    expect((await provider.observe(desired)).exists).toBe(false);
  });

  it('prefix layout: one shared private container, a folder per scope, delete touches only its folder', async () => {
    const shared = `tenantry-${randomBytes(4).toString('hex')}`;
    const config = loadConfig(
      {},
      {
        TENANTRY_AZURE_STORAGE_CONNECTION_STRING: azurite!.connectionString,
        TENANTRY_AZURE_BLOB_CONTAINER: shared,
      },
    ).azureBlob!;
    expect(config.mode).toBe('prefix');
    const byPrefix = createAzureBlobProvider(config);
    const plan = container('circlek-eu-prod-plan');
    const store = container('circlek-eu-prod-store-pl');
    expect(await byPrefix.observe(plan)).toMatchObject({ exists: false });
    expect(await byPrefix.ensure(plan)).toMatchObject({
      exists: true,
      drift: [],
      details: { container: shared, prefix: 'circlek-eu-prod-plan/' },
    });
    await byPrefix.ensure(plan);
    await byPrefix.ensure(store);
    const client = service.getContainerClient(shared);
    expect((await client.getProperties()).blobPublicAccess).toBeUndefined();
    await client.uploadBlockBlob('circlek-eu-prod-plan/in/orders.csv', 'o', 1);
    await client.uploadBlockBlob('circlek-eu-prod-store-pl/in/stock.csv', 's', 1);

    await byPrefix.delete(plan);
    await byPrefix.delete(plan);
    const left: string[] = [];
    for await (const b of client.listBlobsFlat()) left.push(b.name);
    expect(left.sort()).toEqual([
      'circlek-eu-prod-store-pl/.tenantry',
      'circlek-eu-prod-store-pl/in/stock.csv',
    ]);
    expect(await byPrefix.observe(plan)).toMatchObject({
      exists: false,
      drift: [`folder ${shared}/circlek-eu-prod-plan/ does not exist`],
    });
    expect(await byPrefix.observe(store)).toMatchObject({ exists: true, drift: [] });
  });

  it('a name Azure refuses is a permanent InvalidName error', async () => {
    for (const name of ['ab', 'double--hyphen', `x${'y'.repeat(63)}`, 'Upper']) {
      expect(await rejection(provider.ensure(container(name)))).toMatchObject({
        reason: 'InvalidName',
        retryable: false,
      });
    }
  });

  it('a wrong account key is permanent NotAuthorized; an unreachable service is retryable', async () => {
    const wrongKey = createAzureBlobProvider({
      mode: 'container',
      container: '',
      connectionString: azuriteConnectionString(azurite!.blobEndpoint, randomBytes(64).toString('base64')),
    });
    expect(await rejection(wrongKey.observe(container(fresh())))).toMatchObject({
      reason: 'NotAuthorized',
      retryable: false,
    });

    const nowhere = createAzureBlobProvider(
      {
        mode: 'container',
        container: '',
        connectionString: azuriteConnectionString(`http://127.0.0.1:${await freePort()}/devstoreaccount1`),
      },
      { maxTries: 1 },
    );
    expect(await rejection(nowhere.ensure(container(fresh())))).toMatchObject({
      reason: 'StorageUnavailable',
      retryable: true,
    });
  });

  it('a malformed connection string is refused at construction', () => {
    expect(() =>
      createAzureBlobProvider({
        mode: 'container',
        container: '',
        connectionString: 'not a connection string',
      }),
    ).toThrow(ProviderError);
  });

  it("a suspended tenant's container loses its stored access policies, kept in its metadata; resume restores them", async () => {
    const active = container(fresh());
    const suspended = { ...active, suspended: true };
    await provider.ensure(active);
    const client = service.getContainerClient(active.physicalName);
    const expiresOn = new Date('2030-01-01T00:00:00Z');
    await client.setAccessPolicy(undefined, [{ id: 'apps', accessPolicy: { permissions: 'r', expiresOn } }]);
    expect((await provider.observe(suspended)).drift).toEqual([
      `container ${active.physicalName} holds stored access policies (apps) while its tenant is suspended`,
    ]);
    expect(await provider.ensure(suspended)).toMatchObject({ drift: [] });
    // Idempotent: the second ensure keeps what the first saved (it does not save "none" over it).
    expect(await provider.ensure(suspended)).toMatchObject({ drift: [] });
    expect((await client.getAccessPolicy()).signedIdentifiers).toEqual([]);
    const props = await client.getProperties();
    expect(props.metadata).toMatchObject({ tenantry_resource: active.id });
    expect(props.metadata?.tenantry_suspended_policies).toBeDefined();
    // A workflow that records the grant after this still learns what there is to give back.
    expect((await provider.observeAccess(active)).identifiers).toMatchObject([
      { id: 'apps', permissions: 'r' },
    ]);

    expect((await provider.observe(active)).drift).toEqual([
      `container ${active.physicalName} still lacks the stored access policies its tenant's suspension took away`,
    ]);
    expect(await provider.ensure(active)).toMatchObject({ drift: [] });
    const restored = (await client.getAccessPolicy()).signedIdentifiers;
    expect(
      restored.map((i) => [i.id, i.accessPolicy.permissions, i.accessPolicy.expiresOn?.toISOString()]),
    ).toEqual([['apps', 'r', expiresOn.toISOString()]]);
    expect(Object.keys((await client.getProperties()).metadata ?? {})).not.toContain(
      'tenantry_suspended_policies',
    );
    expect(await provider.observe(active)).toMatchObject({ drift: [] });
  });
});
