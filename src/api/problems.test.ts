import net from 'node:net';
import type { FastifyRequest } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { toProblem } from '../http/problem.js';

/** Every error answer is RFC 9457 problem+json with a stable code, Fastify's and Node's own included. */
let s: TestServer;

beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s?.close());

const isProblem = (
  res: { status: number; headers: Headers; body: unknown },
  status: number,
  code: string,
) => {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ status, code, type: `https://tenantry.dev/problems/${code}` });
};

/** Sends raw bytes and returns the status line, headers and body of the answer. */
function raw(request: string): Promise<{ status: number; head: string; body: string }> {
  const { port } = new URL(s.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    let data = '';
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), head: head.toLowerCase(), body });
    });
    socket.write(request);
  });
}

describe('request bodies are validated by their schema', () => {
  const requeue = '/v1/webhooks/some-endpoint/requeue';
  it('refuses more deliveryIds than maxItems, and duplicates, with a pointer', async () => {
    const id = '0190a5a0-0000-7000-8000-000000000001';
    const tooMany = Array.from(
      { length: 1001 },
      (_, i) => `0190a5a0-0000-7000-8000-${String(i).padStart(12, '0')}`,
    );
    for (const deliveryIds of [tooMany, [id, id], [], ['not-a-uuid']]) {
      const res = await s.request('POST', requeue, { body: { deliveryIds } });
      isProblem(res, 422, 'field.invalid');
      expect((res.body as { errors: { pointer: string }[] }).errors[0]?.pointer).toMatch(/^\/deliveryIds/);
    }
  });
  it('takes an absent body as {} where no property is required', async () => {
    const res = await s.request('POST', requeue);
    isProblem(res, 404, 'webhookendpoint.not_found');
  });
  it('names an unknown field by its pointer', async () => {
    const res = await s.request('POST', requeue, { body: { deliveryIds: undefined, extra: 1 } });
    isProblem(res, 422, 'body.invalid');
    expect(res.body).toMatchObject({ errors: [{ pointer: '/extra', code: 'field.unknown' }] });
  });
  it('does not coerce: a string where an integer belongs is refused, and nothing is written', async () => {
    const res = await s.request('POST', '/v1/tenants/nobody/limit-overrides', {
      body: { name: 'rate.read', value: '5', reason: 'because' },
    });
    isProblem(res, 422, 'body.invalid');
    expect(res.body).toMatchObject({ errors: [{ pointer: '/value' }] });
    expect(Number((await s.t.owner.query('select count(*) as n from limit_overrides')).rows[0].n)).toBe(0);
  });
  it('break-glass: a reason shorter than its minLength is refused', async () => {
    const res = await s.request('POST', '/v1/break-glass', { body: { reason: 'short' } });
    isProblem(res, 422, 'body.invalid');
    expect(res.body).toMatchObject({ errors: [{ pointer: '/reason' }] });
  });
});

describe("Fastify's and Node's own errors", () => {
  it('400: malformed JSON', async () => {
    isProblem(await s.request('POST', '/v1/apply', { raw: '{"a":' }), 400, 'body.malformed');
  });
  it('404: no such route', async () => {
    isProblem(await s.request('GET', '/v1/no-such-thing'), 404, 'route.not_found');
  });
  it('413: a body over the limit', async () => {
    const big = JSON.stringify({ reason: 'x'.repeat(2 * 1024 * 1024) });
    isProblem(await s.request('POST', '/v1/break-glass', { raw: big }), 413, 'body.too_large');
  });
  it('414: a path parameter over 100 characters', async () => {
    isProblem(await s.request('GET', `/v1/tenants/${'a'.repeat(101)}`), 414, 'path.too_long');
  });
  it('431: headers over the limit', async () => {
    const res = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(res.status).toBe(431);
    expect(res.head).toContain('content-type: application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({ status: 431, code: 'request.headers_too_large' });
  });
  it('400: a request that is not HTTP', async () => {
    const res = await raw('NOT HTTP AT ALL\r\n\r\n');
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ status: 400, code: 'request.malformed' });
  });
});

describe('database errors are mapped in toProblem', () => {
  const request = { id: 'r1' } as FastifyRequest;
  it.each([
    [
      { code: '57P01', message: 'terminating connection due to administrator command' },
      503,
      'database.unavailable',
    ],
    [{ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }, 503, 'database.unavailable'],
    [new Error('Connection terminated unexpectedly'), 503, 'database.unavailable'],
    [new Error('apply failed', { cause: { code: '57P01' } }), 503, 'database.unavailable'],
    [{ code: 'EHOSTUNREACH', message: 'connect EHOSTUNREACH' }, 503, 'database.unavailable'],
    [{ code: '23505', constraint: 'x' }, 409, 'object.duplicate'],
    [{ code: '22P02' }, 400, 'value.invalid'],
    [new Error('something else'), 500, 'internal'],
  ])('%o → %i %s', (err, status, code) => {
    expect(toProblem(err, request)).toMatchObject({ status, code });
  });
});

describe('real PostgreSQL errors are mapped in toProblem', () => {
  const request = { id: 'r1' } as FastifyRequest;
  const errorOf = async (work: () => Promise<unknown>): Promise<unknown> => {
    try {
      await work();
    } catch (err) {
      return err;
    }
    throw new Error('expected an error');
  };

  it('a terminated connection and a refused one are 503 database.unavailable; a duplicate is 409', async () => {
    const client = new pg.Client({ connectionString: s.t.ownerUrl });
    client.on('error', () => {});
    await client.connect();
    const terminated = await errorOf(() => client.query('select pg_terminate_backend(pg_backend_pid())'));
    await client.end().catch(() => {});
    expect((terminated as { code?: string }).code).toBe('57P01');
    expect(toProblem(terminated, request)).toMatchObject({ status: 503, code: 'database.unavailable' });

    const closed = net.createServer();
    await new Promise<void>((done) => closed.listen(0, '127.0.0.1', done));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise((done) => closed.close(done));
    const refused = await errorOf(() =>
      new pg.Client({ connectionString: `postgres://u:p@127.0.0.1:${port}/db` }).connect(),
    );
    expect(toProblem(refused, request)).toMatchObject({ status: 503, code: 'database.unavailable' });

    const c = await s.t.owner.connect();
    await c.query('create temporary table once_only (v int primary key)');
    const duplicate = await errorOf(() => c.query('insert into once_only values (1), (1)'));
    c.release();
    expect(toProblem(duplicate, request)).toMatchObject({ status: 409, code: 'object.duplicate' });
  });

  it('a NUL character in a string field is 400 request.invalid_character (issue 16), and nothing is written (found by Schemathesis)', async () => {
    const otto = await s.token({ subject: 'otto', roles: ['platform-operator'], sessionId: null });
    const nul = await s.request('POST', '/v1/break-glass', {
      token: otto,
      body: { reason: 'incident 9: \u0000 in the reason' },
    });
    // Refused by the input guard before the database sees it (src/http/input-guard.ts).
    isProblem(nul, 400, 'request.invalid_character');
    const grants = await s.t.owner.query('select count(*)::int as n from break_glass_grants');
    expect(grants.rows[0].n).toBe(0);
  });
});

describe('while closing', () => {
  it('answers 503 problem+json', async () => {
    const other = await startTestServer();
    const socket = net.connect(Number(new URL(other.url).port), '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    const closing = other.app.close();
    const answer = new Promise<string>((resolve) => {
      let data = '';
      socket.on('data', (c) => {
        data += c.toString('utf8');
      });
      socket.on('close', () => resolve(data));
    });
    socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    const text = await answer;
    await closing;
    await other.close().catch(() => undefined);
    expect(text.split(' ')[1]).toBe('503');
    expect(text.toLowerCase()).toContain('application/problem+json');
    expect(text).toContain('"code":"server.closing"');
  });
});
