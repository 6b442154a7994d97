import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'node_modules/.bin/depcruise');

/** Runs exactly `npm run lint:deps` (same binary, same config) in `cwd`. */
async function lintDeps(cwd: string): Promise<{ ok: boolean; violations: string[] }> {
  const args = ['src', '--config', path.join(ROOT, '.dependency-cruiser.cjs')];
  const run = await promisify(execFile)(BIN, args, { cwd }).then(
    (r) => ({ ok: true, stdout: r.stdout }),
    (err: { stdout: string }) => ({ ok: false, stdout: err.stdout }),
  );
  const violations = [...run.stdout.matchAll(/error ([a-z-]+): (\S+) →\s*(\S+)/g)].map(
    ([, rule, from, to]) => `${rule}: ${from} -> ${to}`,
  );
  return { ok: run.ok, violations };
}

describe('npm run lint:deps (the layering rules in .dependency-cruiser.cjs)', () => {
  it('fails imports that break a rule: a cycle, I/O reached from src/domain, routes importing the server', async () => {
    const { ok, violations } = await lintDeps(path.join(ROOT, 'test/fixtures/layering'));
    expect(ok).toBe(false);
    expect(violations).toEqual(
      expect.arrayContaining([
        'domain-is-pure: src/domain/naming.ts -> src/db/database.ts',
        'routes-do-not-import-the-server: src/things/things.routes.ts -> src/api/server.ts',
        expect.stringMatching(/^no-cycles: src\/things\/(a|b)\.ts -> src\/things\/(a|b)\.ts$/),
      ]),
    );
  }, 60_000);

  it('passes on the source tree', async () => {
    expect(await lintDeps(ROOT)).toEqual({ ok: true, violations: [] });
  }, 60_000);
});
