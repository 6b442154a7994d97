/** Shared by every benchmark, so figures and their baselines are measured alike. */
export const settings = {
  /** Concurrent connections (database workers or HTTP connections) on both sides of every ratio. */
  connections: Number(process.env.BENCH_CONNECTIONS ?? 8),
  /** Length of one measurement, seconds. */
  seconds: Number(process.env.BENCH_SECONDS ?? 8),
  /** Discarded load before each measurement, seconds. */
  warmupSeconds: Number(process.env.BENCH_WARMUP_SECONDS ?? 2),
};
