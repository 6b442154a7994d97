/**
 * Tenant waves of a promotion stage (issue 21), pure: which wave each tenant falls in, which are
 * skipped (pinned), whether a tenant is deferred (its maintenance window, a freeze), and whether
 * the blast-radius budget is spent.
 */

export const EARLY_ACCESS_LABEL = 'tenantry.dev/early-access';

export interface WaveSelector {
  labels?: Record<string, string>;
  plans?: string[];
  regions?: string[];
  /** Only tenants that opted in to early access (label `tenantry.dev/early-access: "true"`). */
  earlyAccess?: boolean;
}
export interface WavePlan {
  name: string;
  selector?: WaveSelector;
}

export interface TenantFacts {
  id: string;
  region: string;
  plan: string | null;
  labels: Record<string, string>;
}

export function matches(sel: WaveSelector | undefined, t: TenantFacts): boolean {
  if (!sel) return true;
  if (sel.labels && Object.entries(sel.labels).some(([k, v]) => t.labels[k] !== v)) return false;
  if (sel.plans && !(t.plan !== null && sel.plans.includes(t.plan))) return false;
  if (sel.regions && !sel.regions.includes(t.region)) return false;
  if (sel.earlyAccess !== undefined && (t.labels[EARLY_ACCESS_LABEL] === 'true') !== sel.earlyAccess)
    return false;
  return true;
}

/**
 * The wave of each tenant: the first wave whose selector matches; a tenant no selector matches
 * goes in the last wave (so no tenant is left out). No waves: one wave of every tenant.
 */
export function assignWaves(
  waves: readonly WavePlan[],
  tenants: readonly TenantFacts[],
): Map<string, number> {
  const out = new Map<string, number>();
  const last = Math.max(0, waves.length - 1);
  for (const t of tenants) {
    const i = waves.findIndex((w) => matches(w.selector, t));
    out.set(t.id, i === -1 ? last : i);
  }
  return out;
}

export interface Budget {
  /** Stop when more than this many tenants failed verification. */
  maxFailures?: number;
  /** Stop when more than this share (percent of the stage's targets) failed. */
  maxFailurePercent?: number;
}

/** Whether `failed` failures out of `total` targets exceed the budget (no budget: the first failure does). */
export function budgetSpent(budget: Budget | undefined, failed: number, total: number): boolean {
  if (failed === 0) return false;
  const max = budget?.maxFailures;
  const pct = budget?.maxFailurePercent;
  if (max === undefined && pct === undefined) return failed > 0;
  if (max !== undefined && failed > max) return true;
  if (pct !== undefined && total > 0 && (failed / total) * 100 > pct) return true;
  return false;
}

export interface Window {
  startsAt: number;
  endsAt: number;
}

/** The end of the window in force at `now`, or undefined (windows may overlap: the latest end). */
export function windowEnd(windows: readonly Window[], now: number): number | undefined {
  let end: number | undefined;
  for (const w of windows) if (w.startsAt <= now && now < w.endsAt) end = Math.max(end ?? 0, w.endsAt);
  return end;
}
