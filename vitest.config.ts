import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // The CLI tests start real processes (server, PostgreSQL, CLI) one after another: 20-40 s each on a
    // 2-core machine at load 25, over 60 s at load 29. A limit, not a goal: a hang still fails.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default', './test/closing-line-reporter.ts'],
  },
});
