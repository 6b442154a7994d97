import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelay } from './backoff.js';

describe('backoffDelay', () => {
  const opts = { baseMs: 100, capMs: 10_000 };

  it('grows exponentially up to the cap, jittered over the whole range', () => {
    expect(backoffDelay(1, opts, () => 0.999999)).toBe(99);
    expect(backoffDelay(4, opts, () => 0.999999)).toBe(799);
    expect(backoffDelay(30, opts, () => 0.999999)).toBe(9999);
    expect(backoffDelay(30, opts, () => 0)).toBe(0);
  });

  it('never leaves [0, min(cap, base·2^(n−1))]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (n, r) => {
          const d = backoffDelay(n, opts, () => r);
          return d >= 0 && d <= Math.min(opts.capMs, opts.baseMs * 2 ** (n - 1));
        },
      ),
    );
  });
});
