import { ValidationError } from '../errors/errors.js';

/** Shared readers of environment settings; each area's parser (./*.config.ts) uses them. */

export function list(value: string | undefined, fallback: readonly string[]): string[] {
  if (!value) return [...fallback];
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

export const LABEL = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

/** An integer setting from the environment, at least `min` (default 1). */
export function integerSetting(
  name: string,
  raw: string | number | undefined,
  fallback: number,
  min = 1,
): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw ValidationError.field(
      `/${name}`,
      'config.invalid',
      `${name} must be an integer of at least ${min}, got "${raw}".`,
    );
  return n;
}

/** A non-negative integer setting (0 allowed). */
export function nonNegativeInt(name: string, value: string | undefined, fallback: number): number {
  return integerSetting(name, value, fallback, 0);
}

/** Reads `NAME_<SUFFIX>` before `NAME`; `name()` is the variable a value came from (for errors). */
export interface Variables {
  get(name: string): string | undefined;
  name(name: string): string;
}

export function variables(env: NodeJS.ProcessEnv, suffix?: string): Variables {
  const own = (name: string) => (suffix ? `${name}_${suffix}` : name);
  return {
    get: (name) => env[own(name)] || env[name] || undefined,
    name: (name) => (suffix && env[own(name)] ? own(name) : name),
  };
}

export function byRegion<T>(
  env: NodeJS.ProcessEnv,
  regions: string[],
  marker: string,
  read: (vars: Variables) => T | undefined,
): Record<string, T> {
  const out: Record<string, T> = {};
  for (const region of regions) {
    const suffix = region.toUpperCase().replace(/-/g, '_');
    if (!env[`${marker}_${suffix}`]) continue;
    const value = read(variables(env, suffix));
    if (value) out[region] = value;
  }
  return out;
}
