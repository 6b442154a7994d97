import { stringify } from 'yaml';

export type OutputFormat = 'table' | 'yaml' | 'json';

interface ObjectView {
  kind: string;
  metadata: { name: string; uuid: string; generation: number; createdAt: string; deletedAt?: string };
  status: {
    phase: string;
    lifecycle: string;
    observedGeneration: number;
    physicalName?: string;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

function age(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   '))
    .join('\n');
}

export function renderObjects(items: ObjectView[], format: OutputFormat): string {
  if (format === 'json') return JSON.stringify(items.length === 1 ? items[0] : { items }, null, 2);
  if (format === 'yaml') return items.map((i) => stringify(i)).join('---\n');
  const extra = items.some((i) => i.status.physicalName);
  const header = ['NAME', 'UUID', 'LIFECYCLE', 'PHASE', 'GEN', ...(extra ? ['PHYSICAL NAME'] : []), 'AGE'];
  return table([
    header,
    ...items.map((i) => [
      i.metadata.name,
      i.metadata.uuid,
      i.status.lifecycle,
      i.status.phase,
      `${i.status.observedGeneration}/${i.metadata.generation}`,
      ...(extra ? [i.status.physicalName ?? ''] : []),
      age(i.metadata.createdAt),
    ]),
  ]);
}
