/**
 * The time Tenantry's time-bound rules are judged by — retention windows and sweeps, soak times,
 * maintenance windows, pin expiry — as milliseconds since the epoch, like `Date.now()`. One type for
 * every domain; tests pass one they move forward instead of sleeping.
 */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
