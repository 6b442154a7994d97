import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { findChromium } from '../../test/infra/chromium.js';
import { skipReason } from '../../test/infra/engines.js';
import { DEFAULT_CLAIMS } from '../config/config.js';

/**
 * Console sign-in at a real OpenID provider (panva's oidc-provider on loopback, its development
 * login and consent pages): authorization code + PKCE, then the API verifies the provider's JWT
 * access token like any other.
 */
const executablePath = findChromium();
const reason = skipReason(
  'console OpenID Connect sign-in (browser)',
  executablePath
    ? undefined
    : 'no Chromium found (apt-get install chromium-headless-shell, or set TENANTRY_CHROMIUM)',
);
const AUDIENCE = 'https://api.tenantry.test';
const SHOTS = path.resolve(import.meta.dirname, '../../test-results/console');

describe.skipIf(reason)('console sign-in with OpenID Connect (authorization code + PKCE)', () => {
  let idp: http.Server;
  let issuer = '';
  let s: TestServer;
  let browser: Browser;
  const tokenRequests: string[] = [];

  beforeAll(async () => {
    let handler: http.RequestListener = () => undefined;
    idp = http.createServer((req, res) => {
      if (req.url?.startsWith('/token')) {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => tokenRequests.push(body));
      }
      handler(req, res);
    });
    await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
    issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
    s = await startTestServer({
      configure: (config) => {
        config.identity.trustedIssuers = [
          { issuer, audience: [AUDIENCE], algorithms: ['RS256'], claims: DEFAULT_CLAIMS },
        ];
        config.console.oidc = {
          issuer,
          clientId: 'tenantry-console',
          clientSecret: undefined,
          scope: 'openid api',
          resource: AUDIENCE,
        };
      },
    });
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const provider = new Provider(issuer, {
      clients: [
        {
          client_id: 'tenantry-console',
          grant_types: ['authorization_code'],
          response_types: ['code'],
          redirect_uris: [`${s.url}/console/login/callback`],
          token_endpoint_auth_method: 'none',
        },
      ],
      jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] as never },
      features: {
        devInteractions: { enabled: true },
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
      extraTokenClaims: () => ({ roles: ['platform-admin'] }),
    });
    handler = provider.callback();
    browser = await chromium.launch({ executablePath: executablePath as string });
  });
  afterAll(async () => {
    await browser?.close();
    await s?.close();
    await new Promise((r) => idp?.close(r));
  });

  it('signs in at the provider and lands in the console as that principal', async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${s.url}/console/login`);
    await page.getByRole('link', { name: `Sign in with ${new URL(issuer).host}` }).click();
    // oidc-provider's development login and consent pages.
    await page.locator('input[name="login"]').fill('alice');
    await page.locator('input[name="password"]').fill('any');
    await page.getByRole('button', { name: /sign-in/i }).click();
    await page.getByRole('button', { name: /continue/i }).click();
    await page.waitForURL('**/console/tree');
    expect(await page.locator('header .who').textContent()).toContain(`alice@${issuer}`);
    await page.screenshot({ path: path.join(SHOTS, 'oidc-signed-in.png'), fullPage: true });
    // PKCE: the code was exchanged with its verifier.
    expect(tokenRequests.some((b) => new URLSearchParams(b).get('code_verifier'))).toBe(true);
    await page.context().close();
  });

  it('refuses a callback that this browser did not start', async () => {
    const page = await (await browser.newContext()).newPage();
    const res = await page.goto(`${s.url}/console/login/callback?code=stolen&state=forged`);
    expect(res?.status()).toBe(400);
    expect(await page.getByRole('alert').textContent()).toContain('not started here');
    await page.context().close();
  });
});
