import { createHmac } from 'node:crypto';

/**
 * Standard Webhooks signature (https://www.standardwebhooks.com): HMAC-SHA256 over
 * `{webhook-id}.{webhook-timestamp}.{body}` keyed with the base64-decoded part of the `whsec_`
 * secret, sent as `v1,<base64>`; several (during a rotation's overlap) are space-separated, and a
 * receiver accepts the request if any one verifies. Signed with node:crypto: the `standardwebhooks`
 * package is the independent check our tests verify against, so it must not also do the signing.
 */
export function signatureHeader(secrets: string[], id: string, timestamp: number, body: string): string {
  return secrets
    .map((secret) => {
      const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
      return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
    })
    .join(' ');
}
