import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tamper } from '../../test/helpers/audit.js';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { verifyAuditExport } from '../audit/export-audit.js';

let s: TestServer;
const EU_PROD = '6846a7a4-4e09-41a8-918c-9c8e2aa938ac';

async function exportText(query = ''): Promise<string> {
  const res = await fetch(`${s.url}/v1/audit/export${query}`, {
    headers: { authorization: `Bearer ${s.adminToken}` },
  });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('application/x-ndjson');
  return res.text();
}

beforeAll(async () => {
  s = await startTestServer();
  const applied = await s.request('POST', '/v1/apply', { body: circleK() });
  expect(applied.status).toBe(200);
});
afterAll(async () => s?.close());

describe('audit API', () => {
  it('searches by tenant slug and action prefix, newest first, with pagination', async () => {
    const all = await s.request('GET', '/v1/audit?tenant=circlek-eu-prod&limit=500');
    expect(all.status).toBe(200);
    expect(all.body.items.length).toBeGreaterThan(3);
    expect(all.body.items.every((r: { tenantId: string }) => r.tenantId === EU_PROD)).toBe(true);
    const times = all.body.items.map((r: { time: string }) => r.time);
    expect([...times].sort().reverse()).toEqual(times);

    const tenants = await s.request('GET', '/v1/audit?action=tenant.*&limit=2');
    expect(tenants.body.items).toHaveLength(2);
    expect(tenants.body.nextCursor).toEqual(expect.any(String));
    const next = await s.request(
      'GET',
      `/v1/audit?action=tenant.*&limit=2&cursor=${encodeURIComponent(tenants.body.nextCursor)}`,
    );
    expect(next.body.items[0].id).not.toBe(tenants.body.items[1].id);
    expect(next.body.items.every((r: { action: string }) => r.action.startsWith('tenant.'))).toBe(true);
  });

  it('refuses bad queries with 400 and the offending field', async () => {
    const bad = await s.request('GET', '/v1/audit?outcome=maybe');
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0].pointer).toBe('/outcome');
    const unknown = await s.request('GET', '/v1/audit?colour=red');
    expect(unknown.status).toBe(400);
    const time = await s.request('GET', '/v1/audit/export?since=yesterday');
    expect(time.status).toBe(400);
    expect(time.body.errors[0].pointer).toBe('/since');
    const missing = await s.request('GET', '/v1/audit/verify?tenant=no-such-tenant');
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('tenant.not_found');
  });

  it('verifies, exports and verifies the export offline with the published key', async () => {
    const cp = await s.request('POST', '/v1/audit/checkpoints');
    expect(cp.status).toBe(201);
    const v = await s.request('GET', '/v1/audit/verify');
    expect(v.status).toBe(200);
    expect(v.body.ok).toBe(true);
    expect(v.body.checkpoints.valid).toBe(1);
    const chain = v.body.chains.find((c: { chain: string }) => c.chain === EU_PROD);
    expect(chain.anchoredThrough).toBe(chain.lastSeq);

    const key = await s.request('GET', '/v1/audit/public-key');
    expect(key.body.pem).toContain('BEGIN PUBLIC KEY');
    const text = await exportText();
    const offline = await verifyAuditExport(Readable.from([text]), [key.body.pem]);
    expect(offline.ok).toBe(true);
    expect(offline.records).toBe(v.body.records);
  });

  it('exports a time window that verifies on its own and is anchored by a later checkpoint', async () => {
    const since = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    for (const verb of ['suspend', 'resume', 'suspend']) {
      expect((await s.request('POST', `/v1/tenants/circlek-eu-prod/${verb}`)).status).toBe(200);
      // Each verb starts a lifecycle workflow; the next verb is refused until it ends.
      await settleWorkflows(s.t);
    }
    await s.request('POST', '/v1/audit/checkpoints');
    const text = await exportText(`?since=${since}&tenant=circlek-eu-prod`);
    const lines = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const records = lines.filter((l) => l.type === 'record');
    // Each verb's change, and the start of the lifecycle workflow it asked for (same transaction).
    expect(records.map((r) => r.action)).toEqual([
      'tenant.suspend',
      'workflow.start',
      'tenant.resume',
      'workflow.start',
      'tenant.suspend',
      'workflow.start',
    ]);
    const last = records[5].seq;
    const window = lines.find((l) => l.type === 'window');
    expect(window).toMatchObject({ chain: EU_PROD, fromSeq: records[0].seq, toSeq: last });
    const { pem } = s.audit.publicKey();
    const offline = await verifyAuditExport(Readable.from([text]), [pem]);
    expect(offline.ok).toBe(true);
    expect(offline.chains[0]).toMatchObject({
      anchoredThrough: last,
      window: { toSeq: last },
    });

    // A record removed from the middle of the window is found.
    const cut = lines.filter((l) => l !== records[1]).map((l) => JSON.stringify(l));
    const broken = await verifyAuditExport(Readable.from([`${cut.join('\n')}\n`]), [pem]);
    expect(broken.ok).toBe(false);
    expect(broken.firstProblem?.code).toBe('record.missing');
  });

  it('names the first altered record when the database is tampered with', async () => {
    const { rows } = await s.t.owner.query(
      `select a.id, p.seq from audit_records a join audit_positions p on p.record_id = a.id
       where a.chain = $1 and a.action = 'tenant.create'`,
      [EU_PROD],
    );
    await tamper(s.t.owner, `update audit_records set actor_principal = 'mallory' where id = $1`, [
      rows[0].id,
    ]);
    const v = await s.request('GET', '/v1/audit/verify?tenant=circlek-eu-prod');
    expect(v.status).toBe(200);
    expect(v.body.ok).toBe(false);
    expect(v.body.firstProblem).toMatchObject({
      code: 'record.altered',
      recordId: rows[0].id,
      chain: EU_PROD,
    });
  });
});
