import autocannon from 'autocannon';
import type { Measurement } from './results.js';
import { settings } from './settings.js';

export interface Run {
  count: number;
  seconds: number;
  latencyMs?: { p50: number; p99: number };
}

/** One side of a comparison: something that can put load on a system for a while and count it. */
export interface Side {
  label: string;
  unit: string;
  run(seconds: number): Promise<Run>;
}

/** `op` in a closed loop on `workers` (default `settings.connections`) concurrent workers. */
export function closedLoop(
  label: string,
  op: (worker: number) => Promise<void>,
  workers = settings.connections,
): Side {
  return {
    label,
    unit: 'tx/s',
    async run(seconds) {
      const until = Date.now() + seconds * 1000;
      let count = 0;
      const start = performance.now();
      await Promise.all(
        Array.from({ length: workers }, async (_, w) => {
          while (Date.now() < until) {
            await op(w);
            count++;
          }
        }),
      );
      return { count, seconds: (performance.now() - start) / 1000 };
    },
  };
}

type HttpLoad = Omit<autocannon.Options, 'url' | 'duration'>;

/** autocannon with `settings.connections` connections (unless `load` says); counts 2xx responses, refuses any other outcome. */
export function httpLoad(label: string, url: string, load: HttpLoad = {}): Side {
  return {
    label,
    unit: 'req/s',
    async run(seconds) {
      const r = await autocannon({
        url,
        connections: settings.connections,
        pipelining: 1,
        timeout: 30,
        ...load,
        duration: seconds,
      });
      if (r.errors > 0 || r.timeouts > 0 || r.non2xx > 0) {
        throw new Error(
          `${label}: ${r.non2xx} non-2xx responses, ${r.errors} errors, ${r.timeouts} timeouts`,
        );
      }
      return { count: r['2xx'], seconds: r.duration, latencyMs: { p50: r.latency.p50, p99: r.latency.p99 } };
    },
  };
}

function report(side: Side, runs: Run[]): Measurement {
  const count = runs.reduce((s, r) => s + r.count, 0);
  const seconds = runs.reduce((s, r) => s + r.seconds, 0);
  const value = count / seconds;
  const lat = runs.flatMap((r) => (r.latencyMs ? [r.latencyMs] : []));
  const latencyMs =
    lat.length > 0
      ? {
          p50: Math.max(...lat.map((l) => l.p50)),
          p99: Math.max(...lat.map((l) => l.p99)),
        }
      : undefined;
  console.log(
    `  ${side.label}: ${value.toFixed(0)} ${side.unit} (${count} in ${seconds.toFixed(1)}s` +
      `${latencyMs ? `, p50 ${latencyMs.p50} ms, p99 ${latencyMs.p99} ms` : ''})`,
  );
  return { label: side.label, value, unit: side.unit, ...(latencyMs ? { latencyMs } : {}) };
}

/** A warm-up (discarded), then one measurement of `settings.seconds`. */
export async function measure(side: Side, seconds = settings.seconds): Promise<Measurement> {
  await side.run(settings.warmupSeconds);
  return report(side, [await side.run(seconds)]);
}

/**
 * A figure and its baseline on a noisy machine: both warmed up, then measured in A-B-B-A order,
 * `settings.seconds` each in two halves, so drift in the machine's load falls on both sides alike.
 */
export async function compare(figure: Side, baseline: Side): Promise<[Measurement, Measurement]> {
  await baseline.run(settings.warmupSeconds);
  await figure.run(settings.warmupSeconds);
  const half = settings.seconds / 2;
  const b1 = await baseline.run(half);
  const f1 = await figure.run(half);
  const f2 = await figure.run(half);
  const b2 = await baseline.run(half);
  return [report(figure, [f1, f2]), report(baseline, [b1, b2])];
}
