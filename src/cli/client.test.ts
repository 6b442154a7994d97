import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiError, TenantryClient } from './client.js';

/** A real HTTP server on loopback whose answers the test scripts, recording every request. */
async function scripted(
  answer: (n: number, req: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<{ url: string; seen: { method: string; key: string | undefined }[]; close(): Promise<void> }> {
  const seen: { method: string; key: string | undefined }[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      seen.push({ method: req.method ?? '', key: req.headers['idempotency-key'] as string | undefined });
      answer(seen.length, req, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const unavailable = (res: http.ServerResponse) =>
  res
    .writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '0' })
    .end(JSON.stringify({ status: 503, code: 'database.unavailable', detail: 'retry shortly' }));

let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  await close?.();
  close = undefined;
});

describe('CLI client across a database outage', () => {
  it('sends a POST again after 503 with the same Idempotency-Key until it is answered', async () => {
    const s = await scripted((n, _req, res) =>
      n <= 2
        ? unavailable(res)
        : res.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}'),
    );
    close = s.close;
    const r = await new TenantryClient({ server: s.url }).request('POST', '/v1/apply', { kind: 'List' });
    expect(r.status).toBe(201);
    expect(s.seen).toHaveLength(3);
    expect(s.seen[0]?.key).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(s.seen.map((x) => x.key)).size).toBe(1);
  });

  it('sends a POST again with the same key when the connection broke before the answer', async () => {
    const s = await scripted((n, req, res) => {
      if (n === 1) req.socket.destroy();
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"replayed":true}');
    });
    close = s.close;
    const r = await new TenantryClient({ server: s.url }).request('POST', '/v1/tenants/x/suspend');
    expect(r.body).toEqual({ replayed: true });
    expect(s.seen).toHaveLength(2);
    expect(s.seen[1]?.key).toBe(s.seen[0]?.key);
  });

  it('keeps a key the caller gave, and gives up with the 503 once its retry time is over', async () => {
    const s = await scripted((_n, _req, res) => unavailable(res));
    close = s.close;
    const client = new TenantryClient({ server: s.url, retryForMs: 300 });
    const err = await client.request('POST', '/v1/apply', {}, { 'Idempotency-Key': 'mine' }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(503);
    expect((err as ApiError).problem.code).toBe('database.unavailable');
    expect(s.seen.length).toBeGreaterThan(1);
    expect(s.seen.every((x) => x.key === 'mine')).toBe(true);
  });

  it('sends no key on reads, and does not retry a 4xx', async () => {
    const s = await scripted((_n, _req, res) =>
      res.writeHead(404, { 'content-type': 'application/problem+json' }).end('{"code":"tenant.not_found"}'),
    );
    close = s.close;
    const err = await new TenantryClient({ server: s.url }).request('GET', '/v1/tenants/x').catch((e) => e);
    expect((err as ApiError).status).toBe(404);
    expect(s.seen).toEqual([{ method: 'GET', key: undefined }]);
  });
});
