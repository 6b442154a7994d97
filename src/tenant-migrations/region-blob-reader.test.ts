import { randomBytes, randomUUID } from 'node:crypto';
import { BlobClient, BlobServiceClient, ContainerClient } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Azurite, azuriteUnavailableReason, startAzurite } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { AgentKey } from '../agent/agent-webhook-secrets.js';
import { loadConfig } from '../config/config.js';
import type { ProviderSet } from '../controller/providers.js';
import { createAzureBlobProvider } from '../providers/azure-blob/index.js';
import type { DesiredResource } from '../providers/provider.js';
import { openSealed, RegionDataPlane, sealToOf } from './region-dataplane.js';

/**
 * A region migration's blob reader (src/tenant-migrations/region-dataplane.ts `blobReader`) in the
 * prefix layout, where one container holds every resource's folder: what it hands over (sealed for
 * the receiving side) reads the resource's own blobs and nothing else of the container.
 */
const reason = skipReason('region blob reader on Azurite', azuriteUnavailableReason());

const resource = (scopeSlug: string): DesiredResource => ({
  id: randomUUID(),
  type: 'blob-container',
  tenantId: randomUUID(),
  tenantSlug: 'rb-eu-dev',
  scopeSlug,
  physicalName: scopeSlug,
});

describe.skipIf(reason)('a region blob reader in the prefix layout', () => {
  let azurite: Azurite;
  let service: BlobServiceClient;
  const run = randomBytes(3).toString('hex');
  /** A region's side whose storage account keeps every resource in a folder of `container`. */
  const providersOf = (container: string): ProviderSet => {
    const env = {
      TENANTRY_AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      TENANTRY_AZURE_BLOB_CONTAINER: container,
    };
    const none = { missing: 'not in this test' };
    const blobs = createAzureBlobProvider(loadConfig({}, env).azureBlob!);
    return { database: none, 'blob-container': { provider: blobs }, 'kafka-topic': none };
  };

  beforeAll(async () => {
    azurite = await startAzurite();
    service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  }, 60_000);
  afterAll(async () => {
    await azurite?.stop();
  });

  it('hands over a read-only SAS of each of the resource’s blobs, sealed; no other folder is reachable', async () => {
    const eu = providersOf(`eu-${run}`);
    const us = providersOf(`us-${run}`);
    const blobsOf = (p: ProviderSet) =>
      ('provider' in p['blob-container'] ? p['blob-container'].provider : undefined)!;
    const plan = resource(`rb-eu-dev-plan-${run}`);
    const other = resource(`rb-eu-dev-other-${run}`);
    await blobsOf(eu).ensure(plan);
    await blobsOf(eu).ensure(other);
    await blobsOf(us).ensure(plan);
    const shared = service.getContainerClient(`eu-${run}`);
    const bodies: Record<string, Buffer> = {};
    for (const n of ['a.bin', 'b/c.bin']) {
      bodies[`${plan.physicalName}/${n}`] = randomBytes(2_000);
      await shared
        .getBlockBlobClient(`${plan.physicalName}/${n}`)
        .uploadData(bodies[`${plan.physicalName}/${n}`]!);
    }
    await shared.getBlockBlobClient(`${other.physicalName}/secret.bin`).uploadData(randomBytes(100));

    const usKey = { key: await AgentKey.generate(), cell: 'us-cell' };
    const source = new RegionDataPlane({
      dataplaneUrl: () => 'postgres://x@127.0.0.1:1/x',
      providers: eu,
      region: 'eu',
    });
    const target = new RegionDataPlane({
      dataplaneUrl: () => 'postgres://x@127.0.0.1:1/x',
      providers: us,
      region: 'us',
      opener: async () => usKey,
    });
    const { reader } = await source.blobReader({ desired: plan, hours: 1, sealTo: sealToOf(usKey) });
    expect(reader).toMatch(/^sealed:ey/);
    expect(reader).not.toContain('sig=');
    // Another key (an agent that restarted) does not open it.
    await expect(
      openSealed({ key: await AgentKey.generate(), cell: 'us-cell' }, reader!, `blobs of ${plan.id}`),
    ).rejects.toMatchObject({ reason: 'SealedForAnotherKey', retryable: true });

    const opened = JSON.parse(await openSealed(usKey, reader!, `blobs of ${plan.id}`)) as {
      blobs: Record<string, string>;
    };
    // The resource's blobs only (not its folder's marker, not another resource's), each its own SAS: read only, an hour.
    expect(Object.keys(opened.blobs).sort()).toEqual(Object.keys(bodies).sort());
    for (const url of Object.values(opened.blobs)) {
      const q = new URL(url).searchParams;
      expect({ sr: q.get('sr'), sp: q.get('sp') }).toEqual({ sr: 'b', sp: 'r' });
      expect(new Date(q.get('se')!).getTime() - Date.now()).toBeLessThanOrEqual(3600_000);
    }
    const [name, url] = Object.entries(opened.blobs)[0]!;
    expect((await new BlobClient(url).downloadToBuffer()).equals(bodies[name]!)).toBe(true);
    // Its signature on another blob of the container, or to list the container: refused (403).
    const u = new URL(url);
    u.pathname = u.pathname.replace(name, `${other.physicalName}/secret.bin`);
    await expect(new BlobClient(u.toString()).downloadToBuffer()).rejects.toMatchObject({ statusCode: 403 });
    const listing = new URL(url);
    listing.pathname = listing.pathname.slice(0, listing.pathname.indexOf(name) - 1);
    await expect(new ContainerClient(listing.toString()).listBlobsFlat().next()).rejects.toMatchObject({
      statusCode: 403,
    });

    // The receiving side copies them with what it was handed, checksummed on both sides.
    const r = await target.pullBlobs({ desired: plan, from: { reader } });
    expect(r.copied).toBe(2);
    expect(r.target).toEqual(r.source);
    expect(r.source.map((x) => x.name)).toEqual(Object.keys(bodies).sort());
  });
});
