import fs from 'node:fs';
import path from 'node:path';
import { parseDocuments } from '../../src/domain/manifest-parser.js';

export const EXAMPLE_DIR = path.resolve(import.meta.dirname, '../../examples/circlek');

/** The seed-000 Circle K hierarchy as manifest documents. */
export function circleK(): unknown[] {
  return fs
    .readdirSync(EXAMPLE_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => parseDocuments(fs.readFileSync(path.join(EXAMPLE_DIR, f), 'utf8')));
}

export const clone = <T>(v: T): T => structuredClone(v);
