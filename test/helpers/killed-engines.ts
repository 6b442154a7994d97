import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { defaultDataplaneUrl } from '../../src/controller/providers.js';
import type { TestDatabase } from './test-database.js';
import { spawnEngine } from './workflows.js';

/**
 * Crash tests: a workflow engine in a process of its own (test/fixtures/workflow-process.ts) that
 * logs each step it runs and SIGKILLs itself at a step boundary, and what its log says ran.
 */

/** A new, empty step log `name` in `dataDir`. */
export function stepLog(dataDir: string, name: string): string {
  const log = path.join(dataDir, name);
  fs.writeFileSync(log, '');
  return log;
}

/**
 * An engine process over `t`'s databases (data folder `dataDir`) that logs its steps to `log` and
 * kills itself at `killAt` (`before:<step>` or `after:<step>`); `env` adds to its environment.
 */
export function killingEngine(
  t: TestDatabase,
  o: { dataDir: string; log: string; killAt: string; env?: Record<string, string> },
): Promise<ChildProcess> {
  return spawnEngine({
    APP_URL: t.appUrl,
    PLATFORM_URL: t.platformUrl,
    DATAPLANE_URL: defaultDataplaneUrl(t.ownerUrl),
    DATA_DIR: o.dataDir,
    ...o.env,
    STEP_LOG: o.log,
    KILL_AT: o.killAt,
  });
}

/**
 * The steps run, in order, when the engine running `steps` dies at `killAt` and another resumes:
 * each once, and the one it died after (its effect done, not its checkpoint) twice.
 */
export function runsAfterKill(steps: readonly string[], killAt: string): string[] {
  const [when, step] = killAt.split(':') as [string, string];
  const at = steps.indexOf(step);
  return when === 'before' ? [...steps] : [...steps.slice(0, at + 1), ...steps.slice(at)];
}
