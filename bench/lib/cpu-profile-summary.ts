/**
 * Where a Node process's CPU went, from a `--cpu-prof` file (V8's .cpuprofile JSON): each sample is
 * given to the first area (below) that any frame of its stack belongs to, so background work and the
 * statements a request sends are told apart from the request's own code. Startup (module loading)
 * and idle time are left out. Used by bench/profile-apply.ts (issue 24).
 *
 * V8 samples on a wall clock: time the process spends descheduled is counted in whatever frame it
 * was in, on a loaded machine mostly the socket writes that wake PostgreSQL or the client (`writev`,
 * `writeBuffer`, an area of their own), which grow with the load while the process's CPU (from /proc)
 * does not. Read the areas as shares of wall time, and the CPU per apply from /proc.
 */
import fs from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** A sample in the socket write itself: the syscall, and on a loaded machine the time descheduled. */
const WRITES = 'socket writes (syscall; descheduled time under load)';

/** Past WRITES, first match wins; each frame is tested as "<function> <url>". */
const AREAS: [string, RegExp][] = [
  [
    '(startup: module loading, schema compilation)',
    /node:internal\/modules|\/tsx\/|source_map|node_modules\/avvio\/|^compile .*\/ajv\/dist\/core\.js/,
  ],
  ['(idle)', /^\(idle\)/],
  [
    'audit sequencer and checkpoints (background)',
    /src\/audit\/(audit-sequencer|checkpoint-|audit\.repository)/,
  ],
  ['reconcile (background)', /src\/controller\//],
  ['events and webhooks (background)', /src\/(webhooks|relay)\/|src\/events\/(?!append-event)/],
  ['statements sent (driver, socket writes)', /src\/db\/deferred-begin/],
  ['results read (pg, pg-protocol, kysely)', /node_modules\/(pg|pg-protocol|kysely)\//],
  ['authentication (token, identify)', /src\/identity\//],
  ['authorisation (Cedar)', /src\/authz\/|^wasm|cedar/],
  ['manifest validation (ajv)', /manifest-parser|node_modules\/ajv\//],
  [
    'apply (resolve, diff, policy, change path)',
    /src\/(registry|changes|placement|domain)\/|src\/audit\/append-audit|src\/events\/append-event/,
  ],
  ['releases and workflows (promotion, engine)', /src\/(releases|workflows)\//],
  [
    'HTTP (Fastify, node:http, sockets)',
    /node_modules\/(fastify|find-my-way|@fastify)|_http_|node:net|streams/,
  ],
  ['garbage collector', /^\(garbage collector\)/],
];

/** Milliseconds of CPU per area, busiest first, startup and idle left out. */
export function summariseCpuProfile(file: string): { area: string; ms: number }[] {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfMicros = new Map<number, number>();
  for (const [i, id] of p.samples.entries())
    selfMicros.set(id, (selfMicros.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  const areas = new Map<string, number>();
  for (const [id, micros] of selfMicros) {
    const frames: string[] = [];
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)!.callFrame;
      frames.push(`${f.functionName || '(anonymous)'} ${f.url}`);
    }
    const area = /^(writev|writeBuffer) /.test(frames[0] ?? '')
      ? WRITES
      : (AREAS.find(([, re]) => frames.some((f) => re.test(f)))?.[0] ?? 'other (node internals)');
    areas.set(area, (areas.get(area) ?? 0) + micros / 1000);
  }
  return [...areas]
    .filter(([area]) => !area.startsWith('('))
    .map(([area, ms]) => ({ area, ms }))
    .sort((a, b) => b.ms - a.ms);
}
