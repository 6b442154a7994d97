import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';

/** The key object of each secret, made once (bounded: the oldest goes past KEYS_KEPT). */
const keys = new Map<string, KeyObject>();
const KEYS_KEPT = 1024;

function keyOf(secret: string): KeyObject {
  let k = keys.get(secret);
  if (!k) {
    k = createSecretKey(Buffer.from(secret.replace(/^whsec_/, ''), 'base64'));
    if (keys.size >= KEYS_KEPT) keys.delete(keys.keys().next().value as string);
    keys.set(secret, k);
  }
  return k;
}

/**
 * Standard Webhooks signature (https://www.standardwebhooks.com): HMAC-SHA256 over
 * `{webhook-id}.{webhook-timestamp}.{body}` keyed with the base64-decoded part of the `whsec_`
 * secret, sent as `v1,<base64>`; several (during a rotation's overlap) are space-separated, and a
 * receiver accepts the request if any one verifies. Signed with node:crypto: the `standardwebhooks`
 * package is the independent check our tests verify against, so it must not also do the signing.
 */
export function signatureHeader(secrets: string[], id: string, timestamp: number, body: string): string {
  const content = `${id}.${timestamp}.${body}`;
  return secrets
    .map((secret) => `v1,${createHmac('sha256', keyOf(secret)).update(content).digest('base64')}`)
    .join(' ');
}
