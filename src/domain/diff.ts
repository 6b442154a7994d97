/**
 * A structured diff between two JSON values, as JSON-pointer paths with old and new values.
 * (fast-json-patch's compare() gives operations without the old value, which lineage and dry runs
 * need, so this small walk is written here.)
 */
export interface DiffEntry {
  op: 'add' | 'remove' | 'replace';
  path: string;
  from?: unknown;
  to?: unknown;
}

const escapePointer = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function diff(before: unknown, after: unknown, path = ''): DiffEntry[] {
  if (isObject(before) && isObject(after)) {
    const out: DiffEntry[] = [];
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    for (const k of keys) {
      const p = `${path}/${escapePointer(k)}`;
      if (!(k in after) || after[k] === undefined) {
        if (before[k] !== undefined) out.push({ op: 'remove', path: p, from: before[k] });
      } else if (!(k in before) || before[k] === undefined) out.push({ op: 'add', path: p, to: after[k] });
      else out.push(...diff(before[k], after[k], p));
    }
    return out;
  }
  if (Array.isArray(before) && Array.isArray(after) && before.length === after.length) {
    return before.flatMap((b, i) => diff(b, after[i], `${path}/${i}`));
  }
  if (canonicalJson(before) === canonicalJson(after)) return [];
  return [{ op: 'replace', path: path || '/', from: before, to: after }];
}

/** JSON with object keys sorted, so equal values have equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isObject(value)) {
    const keys = Object.keys(value)
      .filter((k) => value[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}
