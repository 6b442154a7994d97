import { appendFileSync, writeSync } from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

/**
 * Ends every run with one plain line, `tests: N passed, N failed, N skipped`, that any CI reads
 * without knowing vitest's colourful summary (the CI that lands submissions counts tests from it).
 */
export default class ClosingLineReporter implements Reporter {
  private count = { passed: 0, failed: 0, skipped: 0 };

  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const count = this.count;
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const state = t.result().state;
        if (state === 'passed') count.passed++;
        else if (state === 'failed') count.failed++;
        else count.skipped++;
      }
      if (m.state() === 'failed' && [...m.children.allTests()].length === 0) count.failed++;
    }
  }

  /**
   * After the default reporter's summary (it prints in its own onFinished, listed before this one).
   * Written to fd 1 directly: on a terminal vitest wraps process.stdout.write to redraw its status
   * window, which could put cursor codes in front of the line. With TENANTRY_TEST_TALLY set, the
   * counts are also appended to that file, so `.ci/run` can close on the total of all its runs.
   */
  onFinished(): void {
    const c = this.count;
    const line = `tests: ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`;
    writeSync(1, `\n${line}\n`);
    const tally = process.env.TENANTRY_TEST_TALLY;
    if (tally) appendFileSync(tally, `${c.passed} ${c.failed} ${c.skipped}\n`);
  }
}
