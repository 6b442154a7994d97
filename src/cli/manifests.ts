import fs from 'node:fs';
import path from 'node:path';
import { parseDocuments } from '../domain/manifest-parser.js';

export interface SourcedDocument {
  doc: unknown;
  file: string;
  index: number;
}

function filesUnder(p: string): string[] {
  const stat = fs.statSync(p);
  if (!stat.isDirectory()) return [p];
  return fs
    .readdirSync(p)
    .sort()
    .flatMap((name) => {
      const full = path.join(p, name);
      if (fs.statSync(full).isDirectory()) return filesUnder(full);
      return /\.(ya?ml|json)$/i.test(name) ? [full] : [];
    });
}

/** Reads `-f FILE|DIR|-` (directories recursively, files multi-document), remembering where each came from. */
export function readManifests(sources: string[]): SourcedDocument[] {
  const out: SourcedDocument[] = [];
  for (const source of sources) {
    const files = source === '-' ? ['-'] : filesUnder(source);
    for (const file of files) {
      const text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
      let docs: unknown[];
      try {
        docs = parseDocuments(text);
      } catch (err) {
        throw new Error(`${file === '-' ? '<stdin>' : file}: ${(err as Error).message}`);
      }
      docs.forEach((doc, index) => {
        out.push({ doc, file: file === '-' ? '<stdin>' : file, index });
      });
    }
  }
  return out;
}

/** Turns a pointer into the request body (`/7/spec/region`) into the file and document it came from. */
export function locate(pointer: string, docs: SourcedDocument[]): string {
  const m = /^\/(\d+)(.*)$/.exec(pointer);
  const d = m ? docs[Number(m[1])] : undefined;
  if (!m || !d) return pointer;
  return `${d.file} (document ${d.index + 1}) ${m[2] || '/'}`;
}
