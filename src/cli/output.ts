import { stringify } from 'yaml';
import { KIND_DEFINITIONS } from '../registry/kinds/index.js';
import type { Column, ObjectView } from '../registry/kinds/kind.js';

/** `table` the columns an operator looks for, `wide` more of them; `json`/`yaml` the API's objects. */
export type OutputFormat = 'table' | 'wide' | 'yaml' | 'json';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'wide', 'json', 'yaml'];

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   '))
    .join('\n');
}

export const isTable = (format: OutputFormat) => format === 'table' || format === 'wide';

/**
 * A list in `json`/`yaml`: always `{"items": [...]}` (as the API's list responses), whatever the
 * command and however many items; undefined for the table formats.
 */
export function renderList(items: unknown[], format: OutputFormat): string | undefined {
  if (format === 'json') return JSON.stringify({ items }, null, 2);
  if (format === 'yaml') return stringify({ items }).trimEnd();
  return undefined;
}

/** One object in `json`/`yaml`; undefined for the table formats. */
export function renderOne(item: unknown, format: OutputFormat): string | undefined {
  if (format === 'json') return JSON.stringify(item, null, 2);
  if (format === 'yaml') return stringify(item).trimEnd();
  return undefined;
}

type KindObject = ObjectView & { kind: string };

/** `tenantry get`: a list (or one object) of one kind, with the kind's own columns. */
export function renderObjects(
  items: KindObject[],
  format: OutputFormat,
  path: string,
  single = false,
): string {
  const structured = single ? renderOne(items[0], format) : renderList(items, format);
  if (structured !== undefined) return structured;
  const def = KIND_DEFINITIONS.find((d) => d.path === path);
  const columns: readonly Column[] = def
    ? [...def.cli.columns, ...(format === 'wide' ? def.cli.wide : [])]
    : [];
  const now = Date.now();
  return table([columns.map((c) => c.header), ...items.map((o) => columns.map((c) => c.value(o, now)))]);
}
