import { describe, expect, it } from 'vitest';
import { BuiltinIssuer } from './builtin-issuer.js';
import { TokenVerifier } from './token-verifier.js';

describe('verified-token cache', () => {
  it('pays for the signature once per token, and never admits a token past its exp', async () => {
    const issuer = await BuiltinIssuer.ephemeral('urn:t', 'tenantry');
    const verifier = new TokenVerifier([], 0, 30, issuer, 60);
    const token = await issuer.mint({ subject: 'alice', roles: ['tenant-reader'], ttlSeconds: 1 });
    const first = await verifier.verify(token);
    // The same verified result, not a second verification.
    expect(await verifier.verify(token)).toBe(first);
    const other = await issuer.mint({ subject: 'bob', roles: ['tenant-reader'] });
    expect((await verifier.verify(other)).payload.sub).toBe('bob');

    await new Promise((r) => setTimeout(r, 1100 - (Date.now() % 1000) + 1000));
    await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'token.expired' });
  });

  it('verifies every time when turned off', async () => {
    const issuer = await BuiltinIssuer.ephemeral('urn:t', 'tenantry');
    const verifier = new TokenVerifier([], 0, 30, issuer, 0);
    const token = await issuer.mint({ subject: 'alice', roles: ['tenant-reader'] });
    expect(await verifier.verify(token)).not.toBe(await verifier.verify(token));
  });
});
