import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import Provider from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circleK } from '../../test/helpers/examples.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { DEFAULT_CLAIMS } from '../config/config.js';

/**
 * Tokens from a real OpenID provider (panva's oidc-provider, started on loopback): discovery,
 * JWKS, RS256 JWT access tokens of the client-credentials grant, and key rotation.
 */
const AUDIENCE = 'https://api.tenantry.test';
const TENANT_A_ID = '8c9646e0-b9ce-426a-8849-a047e29afa9d';
let idp: http.Server;
let issuer = '';
let s: TestServer;

async function signingKey(kid: string): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}

/** A provider whose signing keys are `keys` (the first one signs). */
function provider(keys: JWK[]): Provider {
  return new Provider(issuer, {
    clients: [
      {
        client_id: 'billing-service',
        client_secret: 'a-long-enough-client-secret-for-tests',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    jwks: { keys: keys as never },
    features: {
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api',
          audience: AUDIENCE,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: () => ({ tenant: 'circlek-eu-uat', roles: ['service'] }),
  });
}

let handler: http.RequestListener = () => undefined;
let key1: JWK;

async function accessToken(): Promise<string> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: 'billing-service',
      client_secret: 'a-long-enough-client-secret-for-tests',
      scope: 'api',
      resource: AUDIENCE,
    }),
  });
  const body = (await res.json()) as { access_token?: string };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body.access_token!;
}

const kidOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()).kid;

beforeAll(async () => {
  idp = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
  key1 = await signingKey('key-1');
  handler = provider([key1]).callback();
  s = await startTestServer({
    configure: (config) => {
      config.identity.trustedIssuers = [
        { issuer, audience: [AUDIENCE], algorithms: ['RS256'], claims: DEFAULT_CLAIMS },
      ];
      config.identity.jwksCooldownSeconds = 0;
    },
  });
  expect((await s.request('POST', '/v1/apply', { body: circleK() })).status).toBe(200);
});
afterAll(async () => {
  await s?.close();
  await new Promise((r) => idp?.close(r));
});

describe('tokens from oidc-provider', () => {
  it('are verified through discovery and JWKS and become the envelope of a service principal', async () => {
    const token = await accessToken();
    const me = await s.request('GET', '/v1/whoami', { token });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({
      principal: { subject: `billing-service@${issuer}`, kind: 'service' },
      issuer,
      appId: 'billing-service',
      tenantId: TENANT_A_ID,
      scope: 'tenant',
      roles: ['service'],
    });
    // The service role reads its tenant, but may not write.
    expect((await s.request('GET', '/v1/tenants/circlek-eu-uat', { token })).status).toBe(200);
    expect((await s.request('GET', '/v1/tenants/circlek-eu-prod', { token })).status).toBe(403);
    const write = await s.request('POST', '/v1/apply', {
      token,
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Deployment',
          metadata: {},
          spec: { tenant: 'circlek-eu-uat', system: 'store', qualifier: 'svc' },
        },
      ],
    });
    expect(write.status).toBe(403);
  });

  it('follows key rotation: a token signed with a new kid triggers a JWKS refetch', async () => {
    const before = await accessToken();
    expect(kidOf(before)).toBe('key-1');
    expect((await s.request('GET', '/v1/whoami', { token: before })).status).toBe(200);
    // The provider rotates: key-2 signs from now on, key-1 is still published for tokens in flight.
    const key2 = await signingKey('key-2');
    handler = provider([key2, key1]).callback();
    const after = await accessToken();
    expect(kidOf(after)).toBe('key-2');
    expect((await s.request('GET', '/v1/whoami', { token: after })).status).toBe(200);
    expect((await s.request('GET', '/v1/whoami', { token: before })).status).toBe(200);
    // key-1 is retired: once the keys are refetched, its tokens are refused rather than trusted from a stale cache.
    handler = provider([await signingKey('key-3'), key2]).callback();
    expect(kidOf(await accessToken())).toBe('key-3');
    expect((await s.request('GET', '/v1/whoami', { token: await accessToken() })).status).toBe(200);
    const stale = await s.request('GET', '/v1/whoami', { token: before });
    expect(stale.status).toBe(401);
    expect(stale.body.code).toBe('token.key_unknown');
  });

  it('refuses a token of the provider for another audience', async () => {
    const other = await startTestServer({
      configure: (config) => {
        config.identity.trustedIssuers = [
          { issuer, audience: ['https://another-api.test'], algorithms: ['RS256'], claims: DEFAULT_CLAIMS },
        ];
      },
    });
    try {
      const r = await other.request('GET', '/v1/whoami', { token: await accessToken() });
      expect(r.status).toBe(401);
      expect(r.body.code).toBe('token.claim_invalid');
    } finally {
      await other.close();
    }
  });
});
