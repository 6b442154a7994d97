import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { BuiltinIssuer } from './builtin-issuer.js';

describe('built-in issuer', () => {
  it('keeps its key in a 0600 file, created once and reused', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'issuer-'));
    const file = path.join(dir, 'identity', 'key.pem');
    const first = await BuiltinIssuer.load('urn:t', 'tenantry', file);
    const again = await BuiltinIssuer.load('urn:t', 'tenantry', file);
    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.keyId).toBe(first.keyId);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    // Its published JWKS verifies its tokens; the private part is never published.
    const token = await first.mint({ subject: 'alice', roles: ['tenant-reader'], tenant: 'acme-eu-prod' });
    const { payload } = await jwtVerify(token, createLocalJWKSet(again.jwks()), {
      issuer: 'urn:t',
      audience: 'tenantry',
    });
    expect(payload).toMatchObject({ sub: 'alice', roles: ['tenant-reader'], tenant: 'acme-eu-prod' });
    expect(JSON.stringify(first.jwks())).not.toContain('"d"');
    expect(first.openidConfiguration('http://h')).toMatchObject({
      issuer: 'urn:t',
      jwks_uri: 'http://h/.well-known/jwks.json',
    });
  });

  it("gives outbound calls Tenantry's own service identity, cached per audience", async () => {
    const issuer = await BuiltinIssuer.ephemeral('urn:t', 'tenantry');
    const a = await issuer.serviceToken('https://hooks.example');
    expect(await issuer.serviceToken('https://hooks.example')).toBe(a);
    expect(decodeJwt(a)).toMatchObject({
      iss: 'urn:t',
      sub: 'tenantry',
      aud: 'https://hooks.example',
      principal_kind: 'service',
      roles: ['service'],
    });
    expect(decodeJwt(a).sid).toBeUndefined();
  });
});
