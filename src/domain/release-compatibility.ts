import semver from 'semver';

/**
 * Release compatibility (issue 21), pure: what changed between a system's previous release and a
 * new one, and whether the new version's bump (patch, minor, major) admits it.
 *
 * Rules:
 * - A published event version (type + version) never changes in place: removing one of its fields,
 *   changing a field's type, or making a required field optional is refused whatever the bump
 *   (publish the change as the next event version; consumers opt in).
 * - Adding an event version, an optional or required field to one, an API or an API operation
 *   needs at least a minor.
 * - Dropping a published event version, an API or an API operation needs a major.
 * - Artifacts and configuration references alone are a patch.
 */

export type Level = 'patch' | 'minor' | 'major';
const RANK: Record<Level, number> = { patch: 0, minor: 1, major: 2 };

export interface EventField {
  type: 'string' | 'number' | 'integer' | 'boolean' | 'object' | 'array';
  required?: boolean;
}
export interface ProducedEvent {
  type: string;
  version: number;
  fields: Record<string, EventField>;
}
export interface ProvidedApi {
  name: string;
  version: number;
  operations: string[];
}
export interface ReleaseInterfaces {
  produces?: { events?: ProducedEvent[]; apis?: ProvidedApi[] };
}

export interface Finding {
  /** `forbidden`: refused whatever the bump; else the least bump this change needs. */
  level: Level | 'forbidden';
  code: string;
  /** JSON pointer into the new release's manifest. */
  pointer: string;
  message: string;
}

const key = (type: string, version: number) => `${type} v${version}`;

/** Every difference between `prev` and `next` that the bump rules judge. */
export function compareInterfaces(prev: ReleaseInterfaces, next: ReleaseInterfaces): Finding[] {
  const out: Finding[] = [];
  const prevEvents = new Map((prev.produces?.events ?? []).map((e) => [key(e.type, e.version), e]));
  const nextEvents = next.produces?.events ?? [];
  const seen = new Set<string>();
  nextEvents.forEach((e, i) => {
    const k = key(e.type, e.version);
    seen.add(k);
    const at = `/spec/produces/events/${i}`;
    const old = prevEvents.get(k);
    if (!old) {
      out.push({ level: 'minor', code: 'release.event_added', pointer: at, message: `adds event ${k}` });
      return;
    }
    for (const [name, f] of Object.entries(old.fields)) {
      const now = e.fields[name];
      if (!now)
        out.push({
          level: 'forbidden',
          code: 'release.event_field_removed',
          pointer: `${at}/fields`,
          message: `removes field "${name}" from published event ${k}; publish the change as ${key(e.type, e.version + 1)} (consumers opt in)`,
        });
      else if (now.type !== f.type)
        out.push({
          level: 'forbidden',
          code: 'release.event_field_changed',
          pointer: `${at}/fields/${name}`,
          message: `changes field "${name}" of published event ${k} from ${f.type} to ${now.type}; publish it as ${key(e.type, e.version + 1)}`,
        });
      else if (f.required && !now.required)
        out.push({
          level: 'forbidden',
          code: 'release.event_field_changed',
          pointer: `${at}/fields/${name}`,
          message: `makes required field "${name}" of published event ${k} optional; publish it as ${key(e.type, e.version + 1)}`,
        });
    }
    for (const name of Object.keys(e.fields))
      if (!old.fields[name])
        out.push({
          level: 'minor',
          code: 'release.event_field_added',
          pointer: `${at}/fields/${name}`,
          message: `adds field "${name}" to event ${k}`,
        });
  });
  for (const k of prevEvents.keys())
    if (!seen.has(k))
      out.push({
        level: 'major',
        code: 'release.event_removed',
        pointer: '/spec/produces/events',
        message: `stops producing event ${k}`,
      });

  const prevApis = new Map((prev.produces?.apis ?? []).map((a) => [key(a.name, a.version), a]));
  const seenApis = new Set<string>();
  (next.produces?.apis ?? []).forEach((a, i) => {
    const k = key(a.name, a.version);
    seenApis.add(k);
    const at = `/spec/produces/apis/${i}`;
    const old = prevApis.get(k);
    if (!old) {
      out.push({ level: 'minor', code: 'release.api_added', pointer: at, message: `adds API ${k}` });
      return;
    }
    for (const op of old.operations)
      if (!a.operations.includes(op))
        out.push({
          level: 'major',
          code: 'release.api_operation_removed',
          pointer: `${at}/operations`,
          message: `removes operation "${op}" of API ${k}`,
        });
    for (const op of a.operations)
      if (!old.operations.includes(op))
        out.push({
          level: 'minor',
          code: 'release.api_operation_added',
          pointer: `${at}/operations`,
          message: `adds operation "${op}" to API ${k}`,
        });
  });
  for (const k of prevApis.keys())
    if (!seenApis.has(k))
      out.push({
        level: 'major',
        code: 'release.api_removed',
        pointer: '/spec/produces/apis',
        message: `removes API ${k}`,
      });
  return out;
}

/** The bump from `prev` to `next` (a pre-release counts as the level it leads to). */
export function bumpOf(prev: string, next: string): Level {
  const d = semver.diff(prev, next);
  if (d === 'major' || d === 'premajor') return 'major';
  if (d === 'minor' || d === 'preminor') return 'minor';
  return 'patch';
}

export interface Verdict {
  bump: Level;
  /** What the changes need at least. */
  required: Level;
  /** Refused changes: forbidden ones, and those that need more than the bump gives. */
  refused: Finding[];
  findings: Finding[];
}

/** Judges `next` (version `nextVersion`) against the previous release. */
export function judgeRelease(
  prev: { version: string; spec: ReleaseInterfaces },
  next: { version: string; spec: ReleaseInterfaces },
): Verdict {
  const bump = bumpOf(prev.version, next.version);
  const findings = compareInterfaces(prev.spec, next.spec);
  let required: Level = 'patch';
  for (const f of findings) if (f.level !== 'forbidden' && RANK[f.level] > RANK[required]) required = f.level;
  const refused = findings.filter((f) => f.level === 'forbidden' || RANK[f.level] > RANK[bump]);
  return { bump, required, refused, findings };
}

export const isSemver = (v: string): boolean => semver.valid(v) === v;
export const compareVersions = (a: string, b: string): number => semver.compare(a, b);
