/**
 * Pure: the copy of a response body that an idempotency record may keep. A one-time secret (a
 * generated webhook signing secret, a password, a token) is never stored: its value is replaced by
 * a notice, so a replay says that the secret was shown once instead of showing it again.
 */
export const REDACTED_SECRET = '[redacted: a one-time secret is shown only in the first response]';

const SECRET_FIELD =
  /^(secret|secrets|password|passwd|token|accesstoken|refreshtoken|clientsecret|privatekey|apikey|credentials?)$|secret$|password$/i;
const SECRET_VALUE = /^whsec_/;
/** References to a secret (`ref:sha256:…`) say nothing about its value and stay. */
const REFERENCE = /^ref:/;

export function redactSecrets(value: unknown): { value: unknown; redacted: boolean } {
  let redacted = false;
  const walk = (v: unknown, secretField: boolean): unknown => {
    if (typeof v === 'string') {
      if ((secretField && !REFERENCE.test(v)) || SECRET_VALUE.test(v)) {
        redacted = true;
        return REDACTED_SECRET;
      }
      return v;
    }
    if (Array.isArray(v)) return v.map((x) => walk(x, secretField));
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, secretField || SECRET_FIELD.test(k));
      return out;
    }
    return v;
  };
  const out = walk(value, false);
  return { value: out, redacted };
}
