/**
 * Pure: when to try a failed delivery again. `schedule[n-1]` is the ceiling of the delay after
 * attempt n; full jitter draws the delay uniformly from [0, ceiling] so receivers recovering from an
 * outage are not hit by every sender at once. A `Retry-After` from the receiver is a floor.
 * Returns null when the schedule is exhausted (→ dead letter).
 */
export function nextAttemptDelay(
  attempt: number,
  schedule: readonly number[],
  retryAfterMs: number | null,
  random: () => number = Math.random,
): number | null {
  const ceiling = schedule[attempt - 1];
  if (ceiling === undefined) return null;
  const jittered = Math.floor(random() * ceiling);
  return Math.max(jittered, retryAfterMs ?? 0);
}

/** `Retry-After`: delay-seconds or an HTTP date; null when absent or malformed. Capped at one day. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (!value) return null;
  const ms = /^\d{1,9}$/.test(value.trim()) ? Number(value.trim()) * 1000 : Date.parse(value) - now;
  if (!Number.isFinite(ms)) return null;
  return Math.min(Math.max(0, ms), 86_400_000);
}
