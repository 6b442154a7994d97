import type { SecretBinding, SecretCipher } from '../secrets/secret-cipher.js';
import type { PlainSecret, SecretEntry, StoredSecret } from './webhook-secrets.js';

/** The endpoint a signing secret belongs to: its tenant (null: platform-wide) and its slug. */
export interface EndpointRef {
  tenantId: string | null;
  slug: string;
}

/**
 * A signing secret is bound to its endpoint and its own fingerprint: copied to another endpoint,
 * another tenant, or another entry of the same endpoint, it does not decrypt.
 */
const binding = (at: EndpointRef, fingerprint: string): SecretBinding => ({
  tenantId: at.tenantId,
  row: `webhook_endpoints/${at.slug}/${fingerprint}`,
});

/** Seals the entries that are in clear (new ones); sealed entries stay as they are. */
export function sealSecrets(
  cipher: SecretCipher,
  secrets: (StoredSecret | PlainSecret)[],
  at: EndpointRef,
): Promise<StoredSecret[]> {
  return Promise.all(
    secrets.map(async (s) =>
      'secret' in s
        ? {
            sealed: await cipher.seal(s.secret, binding(at, s.fingerprint)),
            fingerprint: s.fingerprint,
            notAfter: s.notAfter,
          }
        : s,
    ),
  );
}

/** Opens stored entries for signing (the dispatcher, just before it signs). */
export function openSecrets(
  cipher: SecretCipher,
  secrets: StoredSecret[],
  at: EndpointRef,
): Promise<PlainSecret[]> {
  return Promise.all(
    secrets.map(async (s: SecretEntry & { sealed: string }) => ({
      secret: await cipher.open(s.sealed, binding(at, s.fingerprint)),
      fingerprint: s.fingerprint,
      notAfter: s.notAfter,
    })),
  );
}
