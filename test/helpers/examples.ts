import fs from 'node:fs';
import path from 'node:path';
import { parseDocuments } from '../../src/domain/manifest-parser.js';

export const EXAMPLE_DIR = path.resolve(import.meta.dirname, '../../examples/circlek');

/** The runtime inventory of the example (services whose replicas are processes): only where asked for. */
export const RUNTIME_EXAMPLE = '40-runtime.yaml';

/** The seed-000 Circle K hierarchy as manifest documents; `runtime`: with its services (40-runtime.yaml). */
export function circleK(opts: { runtime?: boolean } = {}): unknown[] {
  return fs
    .readdirSync(EXAMPLE_DIR)
    .filter((f) => f.endsWith('.yaml') && (opts.runtime || f !== RUNTIME_EXAMPLE))
    .sort()
    .flatMap((f) => parseDocuments(fs.readFileSync(path.join(EXAMPLE_DIR, f), 'utf8')));
}

export const clone = <T>(v: T): T => structuredClone(v);
