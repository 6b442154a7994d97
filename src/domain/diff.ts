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

/**
 * JSON with object keys sorted, so equal values have equal text. Audit hashes are computed over it
 * (format v1 is frozen: the output must never change); written as plain loops because verifying an
 * audit log runs it on every record.
 */
export function canonicalJson(value: unknown): string {
  if (typeof value !== 'object' || value === null) return JSON.stringify(value ?? null);
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + canonicalJson(value[i]);
    return `${out}]`;
  }
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object).sort();
  let out = '{';
  for (const k of keys) {
    const v = object[k];
    if (v === undefined) continue;
    out += `${out.length === 1 ? '' : ','}${JSON.stringify(k)}:${canonicalJson(v)}`;
  }
  return `${out}}`;
}
