import { createPublicKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { openCheckpoint } from '../audit/checkpoint-note.js';
import { leafHash, verifyConsistency, verifyInclusion } from '../audit/merkle.js';

let s: TestServer;
const EU_PROD = '6846a7a4-4e09-41a8-918c-9c8e2aa938ac';

beforeAll(async () => {
  s = await startTestServer();
  expect((await s.request('POST', '/v1/apply', { body: circleK() })).status).toBe(200);
});
afterAll(async () => s?.close());

const hex = (h: string[]) => h.map((x) => Buffer.from(x, 'hex'));

describe('audit Merkle tree API', () => {
  it("serves a tenant's checkpoint, inclusion and consistency proofs that verify with the public key", async () => {
    const key = createPublicKey((await s.request('GET', '/v1/audit/public-key')).body.pem);
    const head = await s.request('GET', `/v1/audit/checkpoint?tenant=${EU_PROD}`);
    expect(head.status).toBe(200);
    const cp = openCheckpoint(head.body.checkpoint, [key]);
    expect(cp).toMatchObject({ origin: `tenantry/audit/${EU_PROD}`, size: head.body.size });

    const records = await s.request('GET', `/v1/audit?tenant=${EU_PROD}&limit=500`);
    const record = records.body.items.find((r: { seq: number }) => r.seq === 2);
    const proof = await s.request('GET', `/v1/audit/records/${record.id}/proof`);
    expect(proof.status).toBe(200);
    expect(proof.body).toMatchObject({ chain: EU_PROD, leafIndex: 1, treeSize: cp.size });
    const root = openCheckpoint(proof.body.checkpoint.checkpoint, [key]).root;
    const leaf = leafHash(Buffer.from(record.hash, 'hex'));
    expect(verifyInclusion(leaf, 1, proof.body.treeSize, hex(proof.body.proof), root)).toBe(true);

    const cons = await s.request('GET', `/v1/audit/consistency?tenant=${EU_PROD}&from=1&to=${cp.size}`);
    expect(cons.status).toBe(200);
    const first = await s.request('GET', `/v1/audit/consistency?tenant=${EU_PROD}&from=0&to=1`);
    const root1 = openCheckpoint(first.body.checkpoint.checkpoint, [key]).root;
    expect(verifyConsistency(1, cp.size, hex(cons.body.proof), root1, cp.root)).toBe(true);
  });

  it('serves the cosigned checkpoint once a witness cosigned one (null before), a tenant its own only', async () => {
    const none = await s.request('GET', `/v1/audit/checkpoint/cosigned?tenant=${EU_PROD}`);
    expect(none.status).toBe(200);
    expect(none.body).toEqual({ chain: EU_PROD, cosigned: null });
    const tenantToken = await s.token({ subject: 'eu-admin', tenant: EU_PROD, roles: ['tenant-admin'] });
    expect(
      (await s.request('GET', '/v1/audit/checkpoint/cosigned?tenant=platform', { token: tenantToken }))
        .status,
    ).toBe(403);
  });

  it('refuses bad sizes with 4xx, and a tenant sees only its own log', async () => {
    const bad = await s.request('GET', `/v1/audit/consistency?tenant=${EU_PROD}&from=5000`);
    expect(bad.status).toBe(422);
    expect((await s.request('GET', '/v1/audit/consistency?from=-1')).status).toBe(400);
    expect((await s.request('GET', '/v1/audit/records/not-a-uuid/proof')).status).toBe(404);

    const platformRecord = (await s.request('GET', '/v1/audit?tenant=platform&limit=1')).body.items[0];
    const tenantToken = await s.token({ subject: 'eu-admin', tenant: EU_PROD, roles: ['tenant-admin'] });
    const own = await s.request('GET', '/v1/audit/checkpoint', { token: tenantToken });
    expect(own.status).toBe(200);
    expect(own.body.chain).toBe(EU_PROD);
    expect(
      (await s.request('GET', '/v1/audit/checkpoint?tenant=platform', { token: tenantToken })).status,
    ).toBe(403);
    if (platformRecord) {
      const other = await s.request('GET', `/v1/audit/records/${platformRecord.id}/proof`, {
        token: tenantToken,
      });
      expect(other.status).toBe(404);
    }
  });
});
