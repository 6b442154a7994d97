import { describe, expect, it } from 'vitest';
import { BuiltinIssuer } from './builtin-issuer.js';
import { TokenVerifier } from './token-verifier.js';

describe('verified-token cache', () => {
  it('pays for the signature once per token, and never admits a token past its exp', async () => {
    const issuer = await BuiltinIssuer.ephemeral('urn:t', 'tenantry');
    const verifier = new TokenVerifier([], 0, 30, issuer, 60);
    // Long enough to be verified before it expires on a loaded machine (a 1 s token could expire
    // between mint and the first verify when they straddled a second boundary).
    const token = await issuer.mint({ subject: 'alice', roles: ['tenant-reader'], ttlSeconds: 3 });
    const first = await verifier.verify(token);
    const exp = first.payload.exp as number;
    // The same verified result, not a second verification.
    expect(await verifier.verify(token)).toBe(first);
    const other = await issuer.mint({ subject: 'bob', roles: ['tenant-reader'] });
    expect((await verifier.verify(other)).payload.sub).toBe('bob');

    // Until past its exp (whole seconds), then the cached result must not be returned.
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 1100));
    await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'token.expired' });
  });

  it('verifies every time when turned off', async () => {
    const issuer = await BuiltinIssuer.ephemeral('urn:t', 'tenantry');
    const verifier = new TokenVerifier([], 0, 30, issuer, 0);
    const token = await issuer.mint({ subject: 'alice', roles: ['tenant-reader'] });
    expect(await verifier.verify(token)).not.toBe(await verifier.verify(token));
  });
});
