import net from 'node:net';
import type { FastifyRequest } from 'fastify';
import inject from 'light-my-request';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { toProblem } from './problem.js';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer({
    configure: (c) => {
      c.bodyLimitBytes = 64 * 1024;
    },
  });
});
afterAll(async () => s?.close());

const PROBLEM = /^application\/problem\+json/;

/** Sends raw bytes and reads the whole answer (the server closes the connection after it). */
function rawRequest(text: string): Promise<{ status: number; contentType: string; body: unknown }> {
  const { port } = new URL(s.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(text));
    let data = '';
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
    });
    socket.on('error', (err) => (data ? undefined : reject(err)));
    socket.on('close', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({
        status: Number(head.split(' ')[1]),
        contentType: /content-type: ([^\r\n]+)/i.exec(head)?.[1] ?? '',
        body: body ? JSON.parse(body) : undefined,
      });
    });
  });
}

describe("Fastify's own errors answer problem+json with a stable code", () => {
  it('400 for malformed JSON', async () => {
    const r = await s.request('POST', '/v1/apply', { raw: '{"kind": ' });
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toMatch(PROBLEM);
    expect(r.body).toMatchObject({ status: 400, code: 'body.malformed', instance: expect.any(String) });
  });

  it('404 for an unknown route', async () => {
    const r = await s.request('GET', '/v1/nothing-here');
    expect(r.status).toBe(404);
    expect(r.headers.get('content-type')).toMatch(PROBLEM);
    expect(r.body).toMatchObject({ status: 404, code: 'route.not_found' });
  });

  it('413 for a body over the limit', async () => {
    const r = await s.request('POST', '/v1/apply', { raw: JSON.stringify({ pad: 'x'.repeat(70 * 1024) }) });
    expect(r.status).toBe(413);
    expect(r.headers.get('content-type')).toMatch(PROBLEM);
    expect(r.body).toMatchObject({ status: 413, code: 'body.too_large' });
  });

  it('414 for a path parameter over 100 characters (and 100 is still routed)', async () => {
    const r = await s.request('GET', `/v1/tenants/${'a'.repeat(101)}`);
    expect(r.status).toBe(414);
    expect(r.headers.get('content-type')).toMatch(PROBLEM);
    expect(r.body).toMatchObject({ status: 414, title: 'URI Too Long', code: 'uri.param_too_long' });
    const routed = await s.request('GET', `/v1/tenants/${'a'.repeat(100)}`);
    expect(routed.body.code).toBe('tenant.not_found');
  });

  it('400 for a malformed URL', async () => {
    const r = await s.request('GET', '/v1/tenants/%E0%A4%A');
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toMatch(PROBLEM);
    expect(r.body).toMatchObject({ status: 400, code: 'url.malformed' });
  });

  it('431 for headers over the limit, before Fastify has a request', async () => {
    const r = await rawRequest(`GET /v1/whoami HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(20_000)}\r\n\r\n`);
    expect(r.status).toBe(431);
    expect(r.contentType).toMatch(PROBLEM);
    expect(r.body).toMatchObject({ status: 431, code: 'headers.too_large' });
  });

  it('400 for a request that is not HTTP', async () => {
    const r = await rawRequest('NOT HTTP AT ALL\r\n\r\n');
    expect(r.status).toBe(400);
    expect(r.contentType).toMatch(PROBLEM);
    expect(r.body).toMatchObject({ status: 400, code: 'request.malformed' });
  });

  it('503 with Connection: close for a request that arrives while the server closes', async () => {
    const other = await startTestServer({ database: s.t });
    const closing = other.app.close();
    let r = await inject(other.app.routing, { method: 'GET', url: '/v1/whoami' });
    for (let i = 0; i < 100 && r.statusCode !== 503; i++) {
      await new Promise((done) => setTimeout(done, 10));
      r = await inject(other.app.routing, { method: 'GET', url: '/v1/whoami' });
    }
    await closing;
    await other.close();
    expect(r.statusCode).toBe(503);
    expect(r.headers['content-type']).toMatch(PROBLEM);
    expect(r.headers.connection).toBe('close');
    expect(r.headers['retry-after']).toBe('1');
    expect(r.json()).toMatchObject({ status: 503, code: 'server.closing' });
  });
});

describe('database errors are mapped in one place (toProblem)', () => {
  const request = { id: 'req-1', routeOptions: { config: {} } } as unknown as FastifyRequest;
  const errorOf = async (work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (err) {
      return err;
    }
    throw new Error('expected an error');
  };

  it('a terminated connection and a refused connection are 503 database.unavailable, not 500', async () => {
    const client = new pg.Client({ connectionString: s.t.ownerUrl });
    client.on('error', () => {});
    await client.connect();
    const terminated = await errorOf(() => client.query('select pg_terminate_backend(pg_backend_pid())'));
    await client.end().catch(() => {});
    expect((terminated as { code?: string }).code).toBe('57P01');
    expect(toProblem(terminated, request)).toMatchObject({ status: 503, code: 'database.unavailable' });

    const server = net.createServer();
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise((done) => server.close(done));
    const refused = await errorOf(() =>
      new pg.Client({ connectionString: `postgres://u:p@127.0.0.1:${port}/db` }).connect(),
    );
    expect(toProblem(refused, request)).toMatchObject({ status: 503, code: 'database.unavailable' });
  });

  it('constraint, isolation and value errors keep their 4xx', async () => {
    const c = await s.t.owner.connect();
    await c.query('create temporary table once_only (v int primary key)');
    const unique = await errorOf(() => c.query('insert into once_only values (1), (1)'));
    c.release();
    expect(toProblem(unique, request)).toMatchObject({ status: 409, code: 'object.duplicate' });
    // Found by Schemathesis: a NUL character in a string field answered 500.
    const otto = await s.token({ subject: 'otto', roles: ['platform-operator'], sessionId: null });
    const nul = await s.request('POST', '/v1/break-glass', {
      token: otto,
      body: { reason: 'incident 9: \u0000 in the reason' },
    });
    expect(nul.status).toBe(400);
    expect(nul.body).toMatchObject({ code: 'value.invalid' });
    const grants = await s.t.owner.query(`select count(*)::int as n from break_glass_grants`);
    expect(grants.rows[0].n).toBe(0);
    const badValue = await errorOf(() => s.t.owner.query(`select 'nope'::uuid`));
    expect(toProblem(badValue, request)).toMatchObject({ status: 400, code: 'value.invalid' });
  });
});

describe('the OpenAPI documents the shared error answers', () => {
  it('401 and 403 on every authenticated route, 429 where rate-limited, 414 with path parameters', async () => {
    const doc = (await s.request('GET', '/openapi.json')).body as {
      security: unknown[];
      paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown> }>>;
    };
    const unlimited = new Set([
      '/v1/tenants/{ref}/limit-overrides',
      '/v1/tenants/{ref}/limit-overrides/{id}',
    ]);
    let checked = 0;
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const authenticated = (op.security ?? doc.security).length > 0;
        const has = (status: number) => op.responses[String(status)] !== undefined;
        const where = `${method.toUpperCase()} ${path}`;
        if (authenticated) expect(has(401) && has(403), where).toBe(true);
        if (authenticated && path.startsWith('/v1/') && !unlimited.has(path))
          expect(has(429), where).toBe(true);
        if (path.includes('{')) expect(has(414), where).toBe(true);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(50);
  });
});
