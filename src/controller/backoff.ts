/**
 * Retry delay after the `attempt`-th failure in a row (1-based): "full jitter" — uniformly random in
 * [0, min(cap, base × 2^(attempt−1))] — so that many objects failing together (a provider outage)
 * do not retry in lockstep when it comes back.
 */
export function backoffDelay(
  attempt: number,
  opts: { baseMs: number; capMs: number },
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(opts.capMs, opts.baseMs * 2 ** Math.min(attempt - 1, 40));
  return Math.floor(random() * ceiling);
}
