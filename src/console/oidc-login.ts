import * as client from 'openid-client';
import type { ConsoleOidcConfig } from '../config/config.js';

/** What the browser keeps (sealed, in a short-lived cookie) between the redirect and the callback. */
export interface OidcFlow {
  verifier: string;
  state: string;
  nonce: string;
  redirectUri: string;
  startedAt: number;
}

/** A flow must come back within this long. */
export const FLOW_SECONDS = 600;

/**
 * Console sign-in at a trusted OpenID provider: authorization code with PKCE (S256), state and
 * nonce, through panva's openid-client. The access token it yields is what the console presents to
 * the API, which verifies it like any other token of that issuer.
 */
export class OidcLogin {
  private configuration: Promise<client.Configuration> | undefined;
  constructor(readonly options: ConsoleOidcConfig) {}

  private config(): Promise<client.Configuration> {
    const o = this.options;
    // Discovery once; a failure is tried again on the next sign-in.
    this.configuration ??= client
      .discovery(
        new URL(o.issuer),
        o.clientId,
        o.clientSecret,
        o.clientSecret ? undefined : client.None(),
        // Plain http only for a loopback issuer (development and tests).
        /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:|\/|$)/.test(o.issuer)
          ? { execute: [client.allowInsecureRequests] }
          : undefined,
      )
      .catch((err) => {
        this.configuration = undefined;
        throw err;
      });
    return this.configuration;
  }

  async start(redirectUri: string): Promise<{ url: string; flow: OidcFlow }> {
    const config = await this.config();
    const verifier = client.randomPKCECodeVerifier();
    const flow: OidcFlow = {
      verifier,
      state: client.randomState(),
      nonce: client.randomNonce(),
      redirectUri,
      startedAt: Date.now(),
    };
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: this.options.scope,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: flow.state,
      nonce: flow.nonce,
      ...(this.options.resource ? { resource: this.options.resource } : {}),
    });
    return { url: url.href, flow };
  }

  /** Exchanges the code of the callback URL for the access token. */
  async finish(callbackUrl: URL, flow: OidcFlow): Promise<string> {
    const tokens = await client.authorizationCodeGrant(
      await this.config(),
      callbackUrl,
      { pkceCodeVerifier: flow.verifier, expectedState: flow.state, expectedNonce: flow.nonce },
      this.options.resource ? { resource: this.options.resource } : undefined,
    );
    return tokens.access_token;
  }
}
