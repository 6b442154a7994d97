import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { TOKEN_RATE } from './service-clients.js';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => {
  await s?.close();
});

const tokenRequest = (clientId: string) =>
  fetch(`${s.url}/v1/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: clientId,
      client_secret: 'guess',
    }),
  });

describe('client-credentials token endpoint rate limit', () => {
  it('a client id gets a bounded number of attempts per window: past it, 429 oauth.rate_limited with Retry-After, whatever the secret', async () => {
    const guessed = `svc-${Date.now()}`;
    for (let i = 0; i < TOKEN_RATE.perClient; i++) {
      const r = await tokenRequest(guessed);
      expect(r.status).toBe(401);
      await r.body?.cancel();
    }
    // The allowance refills continuously (GCRA): on a slow machine a few more pass, never many.
    let refused = await tokenRequest(guessed);
    for (let extra = 0; refused.status === 401 && extra < TOKEN_RATE.perClient; extra++) {
      await refused.body?.cancel();
      refused = await tokenRequest(guessed);
    }
    expect(refused.status).toBe(429);
    expect(refused.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await refused.json()).toMatchObject({
      code: 'oauth.rate_limited',
      status: 429,
      detail: expect.stringMatching(/for this client \(60 per 60s\)/),
    });
    // Another client id from the same address still has its own allowance.
    const other = await tokenRequest(`${guessed}-other`);
    expect(other.status).toBe(401);
    expect(await other.json()).toMatchObject({ code: 'oauth.invalid_client' });
  });
});
