import { createHash, randomBytes } from 'node:crypto';

/** One signing secret of an endpoint; only the fingerprint ever leaves the table. */
export interface SecretEntry {
  fingerprint: string;
  /** Null for the current secret; a rotated-out secret keeps signing until then (the overlap window). */
  notAfter: string | null;
}
/** A signing secret in clear: only in memory, while it is settled or used to sign. */
export interface PlainSecret extends SecretEntry {
  secret: string;
}
/** A signing secret as stored (webhook_endpoints.secrets): sealed (src/secrets, webhook-secret-sealing.ts). */
export interface StoredSecret extends SecretEntry {
  sealed: string;
}

export const generateWebhookSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`;

/** The reference a secret is shown as after creation: `ref:sha256:` and 16 hex digits. */
export const secretRef = (secret: string): string =>
  `ref:sha256:${createHash('sha256').update(secret).digest('hex').slice(0, 16)}`;

export type SecretChange<T extends SecretEntry> =
  | { kind: 'ok'; secrets: (T | PlainSecret)[]; ref: string; generated?: string }
  | { kind: 'unknown_ref' };

/**
 * Pure: the secrets after an apply. `given` is spec.secret (a whsec_ value, a ref, or absent).
 * Absent on creation → a new secret, returned once as `generated`. Absent or the current ref on
 * update → unchanged. A new whsec_ value → rotation: it becomes current and the previous ones keep
 * signing for `overlapMs` (receivers accept any valid signature, so rotation needs no downtime).
 * The entries kept are returned as they came (sealed ones stay sealed); new ones are in clear.
 */
export function applySecret<T extends SecretEntry = PlainSecret>(
  existing: T[] | null,
  given: string | undefined,
  now: Date,
  overlapMs: number,
): SecretChange<T> {
  const live = (existing ?? []).filter((s) => s.notAfter === null || Date.parse(s.notAfter) > now.getTime());
  const current = live.find((s) => s.notAfter === null);
  if (given === undefined || given.startsWith('ref:')) {
    if (current && (given === undefined || given === current.fingerprint))
      return { kind: 'ok', secrets: live, ref: current.fingerprint };
    if (given !== undefined) return { kind: 'unknown_ref' };
    const generated = generateWebhookSecret();
    const ref = secretRef(generated);
    return { kind: 'ok', secrets: [{ secret: generated, fingerprint: ref, notAfter: null }], ref, generated };
  }
  const ref = secretRef(given);
  if (current?.fingerprint === ref) return { kind: 'ok', secrets: live, ref };
  const until = new Date(now.getTime() + overlapMs).toISOString();
  const previous = live
    .filter((s) => s.fingerprint !== ref)
    .map((s) => ({ ...s, notAfter: s.notAfter !== null && s.notAfter < until ? s.notAfter : until }));
  return { kind: 'ok', secrets: [{ secret: given, fingerprint: ref, notAfter: null }, ...previous], ref };
}

/** The secrets that sign now: the current one and any still inside their overlap window. */
export const signingSecrets = (secrets: PlainSecret[], now: Date): string[] =>
  secrets.filter((s) => s.notAfter === null || Date.parse(s.notAfter) > now.getTime()).map((s) => s.secret);
