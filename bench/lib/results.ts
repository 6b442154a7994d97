import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { settings } from './settings.js';

export interface Measurement {
  label: string;
  /** Operations per second. */
  value: number;
  unit: string;
  /** Latency percentiles in milliseconds, where measured. */
  latencyMs?: { p50: number; p99: number };
}

/**
 * What a row is held to. Goals come from the issues: most are ratios to the same-run baseline, a few
 * are absolute (a rate, a p99 latency) and some are ceilings (memory).
 */
export type Goal =
  | { ratioAtLeast: number }
  | { ratioAtMost: number }
  | { valueAtLeast: number }
  | { valueAtMost: number }
  | { p99AtMostMs: number }
  /** The figure within ±`ratioWithin` of its baseline (a cost that should stay flat). */
  | { ratioWithin: number };

export interface Row {
  benchmark: string;
  figure: Measurement;
  /** Measured in the same run, with the same connection count. */
  baseline: Measurement;
  /** figure / baseline. */
  ratio: number;
  /** Null when the row is reported only. */
  goal: Goal | null;
  /** The goal in words (or why there is none). */
  goalNote: string;
  met: boolean | null;
}

export function row(
  benchmark: string,
  figure: Measurement,
  baseline: Measurement,
  goal: Goal | null,
  note = '',
): Row {
  const ratio = baseline.value > 0 ? figure.value / baseline.value : 0;
  return {
    benchmark,
    figure,
    baseline,
    ratio,
    goal,
    goalNote: goal === null ? note || 'report only' : describe(goal, figure) + (note ? ` (${note})` : ''),
    met: goal === null ? null : isMet(goal, figure, ratio),
  };
}

function isMet(goal: Goal, figure: Measurement, ratio: number): boolean {
  if ('ratioAtLeast' in goal) return ratio >= goal.ratioAtLeast;
  if ('ratioAtMost' in goal) return ratio <= goal.ratioAtMost;
  if ('valueAtLeast' in goal) return figure.value >= goal.valueAtLeast;
  if ('valueAtMost' in goal) return figure.value <= goal.valueAtMost;
  if ('ratioWithin' in goal) return Math.abs(ratio - 1) <= goal.ratioWithin;
  return figure.latencyMs !== undefined && figure.latencyMs.p99 <= goal.p99AtMostMs;
}

function describe(goal: Goal, figure: Measurement): string {
  if ('ratioAtLeast' in goal) return `ratio >= ${pct(goal.ratioAtLeast)}`;
  if ('ratioAtMost' in goal) return `ratio <= ${pct(goal.ratioAtMost)}`;
  if ('valueAtLeast' in goal) return `>= ${goal.valueAtLeast.toLocaleString('en-US')} ${figure.unit}`;
  if ('valueAtMost' in goal) return `<= ${goal.valueAtMost.toFixed(0)} ${figure.unit}`;
  if ('ratioWithin' in goal) return `ratio within 100% ± ${pct(goal.ratioWithin)}`;
  return `p99 <= ${goal.p99AtMostMs} ms`;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const rate = (m: Measurement) =>
  `${m.value >= 100 ? m.value.toFixed(0) : Number(m.value.toPrecision(3))} ${m.unit}`;
const latency = (m: Measurement) =>
  m.latencyMs ? `p50 ${m.latencyMs.p50} ms, p99 ${m.latencyMs.p99} ms` : '';

export function formatTable(rows: Row[]): string {
  const header = ['Benchmark', 'Figure', 'Baseline (same run)', 'Ratio', 'Goal', 'Met'];
  // A latency goal is read from the figure's percentiles: its rate and ratio would say nothing.
  const byLatency = (r: Row) => r.goal !== null && 'p99AtMostMs' in r.goal && r.figure.latencyMs;
  const cells = rows.map((r) => [
    r.benchmark,
    byLatency(r) ? latency(r.figure) : rate(r.figure),
    `${r.baseline.label}: ${rate(r.baseline)}`,
    byLatency(r) ? '-' : pct(r.ratio),
    r.goalNote,
    r.met === null ? '-' : r.met ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(widths[i] ?? 0)).join(' | ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...cells.map(line)];
  const latencies = rows
    .flatMap((r) => [r.figure, r.baseline])
    .filter((m, i, all) => m.latencyMs && all.findIndex((o) => o.label === m.label) === i)
    .map((m) => `  ${m.label}: ${latency(m)}`);
  if (latencies.length > 0) out.push('', 'Latency:', ...latencies);
  return out.join('\n');
}

export const RESULTS_FILE = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'results',
  'latest.json',
);

export async function writeResults(rows: Row[], startedAt: Date): Promise<string> {
  await fs.mkdir(path.dirname(RESULTS_FILE), { recursive: true });
  const report = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      loadavg: os.loadavg(),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
    },
    settings: { ...settings, durability: 'fsync on, synchronous_commit on' },
    rows,
  };
  await fs.writeFile(RESULTS_FILE, `${JSON.stringify(report, null, 2)}\n`);
  return RESULTS_FILE;
}
