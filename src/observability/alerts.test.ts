import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Metrics } from './metrics.js';

const metrics = new Metrics();

const ROOT = path.resolve(import.meta.dirname, '../..');
const RULES = path.join(ROOT, 'deploy/prometheus/tenantry-alerts.yml');
const DASHBOARD = path.join(ROOT, 'deploy/grafana/tenantry-ops.json');

interface Rule {
  alert: string;
  expr: string;
  annotations: { runbook_url: string };
}

/** Every tenantry_* series a PromQL expression reads, as registered metric names. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\btenantry_[a-z_]+\b/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, ''));
}

async function registered(): Promise<Set<string>> {
  const all = (await metrics.registry.getMetricsAsJSON()) as { name: string }[];
  return new Set(all.map((m) => m.name));
}

function promtool(...args: string[]): boolean {
  try {
    execFileSync('promtool', args, { stdio: 'pipe' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      console.warn('skipping promtool check: promtool is not installed (apt-get install prometheus)');
      return true;
    }
    throw new Error(String((err as { stdout?: Buffer }).stdout ?? err));
  }
}

describe('alert rules and dashboard', () => {
  it('links every alert to a runbook file and reads only metrics Tenantry exposes', async () => {
    const doc = parse(fs.readFileSync(RULES, 'utf8')) as { groups: { rules: Rule[] }[] };
    const rules = doc.groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        'TenantryReconcileFailing',
        'TenantryEventBacklog',
        'TenantryPolicyEvaluationFailures',
        'TenantryWebhookSuccessRateLow',
      ]),
    );
    const names = await registered();
    for (const r of rules) {
      expect(fs.existsSync(path.join(ROOT, r.annotations.runbook_url)), r.annotations.runbook_url).toBe(true);
      for (const m of metricNames(r.expr)) expect(names.has(m), `${r.alert}: ${m}`).toBe(true);
    }
    expect(promtool('check', 'rules', RULES)).toBe(true);
  });

  it('builds the dashboard from exposed metrics only', async () => {
    const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const names = await registered();
    for (const p of dash.panels)
      for (const t of p.targets)
        for (const m of metricNames(t.expr)) expect(names.has(m), `${p.title}: ${m}`).toBe(true);
  });
});
