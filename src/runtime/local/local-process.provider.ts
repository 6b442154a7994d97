import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pidusage from 'pidusage';
import type { Logger } from 'pino';
import { ProviderError } from '../../providers/provider.js';
import { bounds } from '../kubernetes/kubernetes-runtime.provider.js';
import {
  COMPUTE_UNIT,
  type DesiredService,
  type ObservedReplica,
  type ObservedService,
  type RuntimeProvider,
} from '../runtime-provider.js';

export interface LocalProcessOptions {
  /** Replica logs, configuration files and pid files go under `<dataDir>/runtime/`. */
  dataDir: string;
  /** How often replicas' CPU / memory are sampled to scale services that have a scaling policy. */
  scaleIntervalMs: number;
  /** A lower replica recommendation must hold this long before the service scales down. */
  scaleDownStabilizationMs: number;
  /** How long `ensure` waits for new replicas to answer their health check. */
  readyTimeoutMs?: number;
  /** Called when a replica dies, turns ready or the autoscaler changes a count: reconcile the service. */
  onChange?: (serviceId: string, tenantId: string) => void;
  logger?: Pick<Logger, 'info' | 'warn'>;
}

interface Replica {
  name: string;
  index: number;
  child: ChildProcess;
  pid: number;
  port: number;
  /** What it was started with: a change of any of these makes it outdated. */
  fingerprint: string;
  version: string;
  ready: boolean;
  exited?: string;
  restarts: number;
  stopping: boolean;
}

interface ScaleEvent {
  at: string;
  from: number;
  to: number;
  metric: string;
  utilization: number;
  reason: string;
}

interface ServiceState {
  desired: DesiredService;
  replicas: Map<string, Replica>;
  /** The replica count the service runs now (the autoscaler's, within bounds, when there is a policy). */
  target: number;
  /** Recommendations of the last stabilisation window (time, count), for scale-down. */
  recommendations: { at: number; n: number }[];
  lastScale?: ScaleEvent;
  /** Deaths since the last `ensure`, reported as drift until then. */
  deaths: string[];
  restarts: Map<number, number>;
  /** The scaling policy the count was last set from (a new policy restarts from the manifest's count). */
  policy: string;
  /** Serialises changes of the service's replicas (the controller's ensure, the autoscaler). */
  lock: Promise<unknown>;
}

/** Runs `f` after every earlier change of the service's replicas has finished. */
function serially<T>(s: ServiceState, f: () => Promise<T>): Promise<T> {
  const run = s.lock.then(f, f);
  s.lock = run.catch(() => undefined);
  return run;
}

/**
 * The embedded default compute target: every replica is an OS process of this machine running the
 * service's `command` (seed 000's JVM instances as real processes), named like seed 000's replicas
 * (`plan-eu-prod_brave-wolf-1`).
 * - Contract with the process: it gets PORT (a free TCP port), TENANTRY_REPLICA, TENANTRY_SERVICE,
 *   TENANTRY_TENANT, TENANTRY_IMAGE, TENANTRY_VERSION and, with a configuration version,
 *   TENANTRY_CONFIG_FILE (its RFC 8785 JSON) and TENANTRY_CONFIG_CHECKSUM; it is ready when
 *   `GET http://127.0.0.1:$PORT/healthz` answers 2xx (a readiness probe). Nothing else of Tenantry's
 *   environment (database URLs, keys) is passed on. `node` as the command's first word is this Node.
 * - Health: probed every second; a replica that dies is reported (drift) and the controller is
 *   poked (`onChange`), whose repair (`ensure`) starts it again under the same name.
 * - Quota: a service never runs more replicas than the binding's `computeUnits` leaves after the
 *   tenant's other services on this target (their replicas × unit cost), like a ResourceQuota.
 * - Scaling: with a scaling policy, every `scaleIntervalMs` the replicas' real CPU (share of the
 *   request: unit cost × COMPUTE_UNIT.cpuMillis) or memory (RSS of unit cost × COMPUTE_UNIT.memoryMiB)
 *   is sampled (`pidusage`) and the count set as the Kubernetes HPA does: ceil(sum of utilisations /
 *   target), 10 % tolerance, within min/max and the quota; scale-down only after the recommendation
 *   stayed lower for `scaleDownStabilizationMs`.
 * - Stale processes of an earlier run (the server was killed) are ended on start, from their pid files.
 */
export class LocalProcessRuntimeProvider implements RuntimeProvider {
  readonly name = 'local-process';
  private readonly services = new Map<string, ServiceState>();
  private readonly root: string;
  private readonly scaler: NodeJS.Timeout;
  private readonly prober: NodeJS.Timeout;
  private closed = false;
  private scaling = false;

  constructor(private readonly opts: LocalProcessOptions) {
    this.root = path.join(opts.dataDir, 'runtime');
    fs.mkdirSync(this.root, { recursive: true });
    this.endStaleProcesses();
    this.scaler = setInterval(() => void this.autoscale(), opts.scaleIntervalMs);
    this.scaler.unref();
    this.prober = setInterval(() => void this.probeAll(), 1_000);
    this.prober.unref();
  }

  async observe(d: DesiredService): Promise<ObservedService> {
    const s = this.services.get(d.id);
    if (!s)
      return { exists: false, replicas: emptyReplicas(), details: this.details(d, undefined), drift: [] };
    s.desired = d;
    const want = this.targetOf(s);
    const live = [...s.replicas.values()].filter((r) => !r.exited);
    const drift = [...s.deaths];
    if (live.length !== want) drift.push(`${live.length} replicas run, want ${want}`);
    const fp = fingerprint(d);
    for (const r of live)
      if (r.fingerprint !== fp)
        drift.push(
          `replica ${r.name} runs ${r.version} (${short(r.fingerprint)}), want ${d.version} (${short(fp)})`,
        );
    return {
      exists: true,
      replicas: {
        desired: want,
        current: live.length,
        ready: live.filter((r) => r.ready).length,
        updated: live.filter((r) => r.fingerprint === fp).length,
        items: [...s.replicas.values()].sort((a, b) => a.index - b.index).map(view),
      },
      details: this.details(d, s),
      drift,
    };
  }

  async ensure(d: DesiredService): Promise<ObservedService> {
    if (this.closed) throw new ProviderError('the local-process target is shutting down', 'Stopping', true);
    if (!d.command?.length)
      throw new ProviderError(
        `the local-process target runs a service's spec.command; ${d.slug} has none (or run it on Kubernetes: TENANTRY_KUBECONFIG)`,
        'CommandMissing',
        false,
      );
    let s = this.services.get(d.id);
    if (!s) {
      s = {
        desired: d,
        replicas: new Map(),
        target: d.replicas,
        recommendations: [],
        deaths: [],
        restarts: new Map(),
        policy: JSON.stringify(d.scaling ?? null),
        lock: Promise.resolve(),
      };
      this.services.set(d.id, s);
    }
    const state = s;
    await serially(state, async () => {
      const policy = JSON.stringify(d.scaling ?? null);
      state.desired = d;
      if (!d.scaling || policy !== state.policy) state.target = d.replicas;
      state.policy = policy;
      state.target = this.targetOf(state);
      state.deaths = [];
      await this.converge(state);
    });
    return this.observe(d);
  }

  async delete(d: DesiredService): Promise<void> {
    const s = this.services.get(d.id);
    if (!s) return;
    this.services.delete(d.id);
    await Promise.all([...s.replicas.values()].map((r) => this.stop(r)));
    fs.rmSync(path.join(this.root, d.tenantSlug, d.slug), { recursive: true, force: true });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.scaler);
    clearInterval(this.prober);
    const all = [...this.services.values()].flatMap((s) => [...s.replicas.values()]);
    this.services.clear();
    await Promise.all(all.map((r) => this.stop(r)));
  }

  /** The count to run: the autoscaler's (or the manifest's) within the policy's bounds and the quota. */
  private targetOf(s: ServiceState): number {
    const b = this.bounds(s);
    return Math.max(Math.min(s.target, b.max), Math.min(b.min, b.max));
  }

  /**
   * The policy's bounds (no policy: the manifest's replicas), the maximum cut to the binding quota.
   * Every service of the tenant first gets its base (policy minimum, else its replicas); what the
   * quota leaves after the bases and the other services' replicas above their base is what this one
   * may scale into. So a lowered quota takes scaled-out replicas back before it stops a base one;
   * only when the bases alone exceed it does a service get what the others' running replicas leave.
   */
  private bounds(s: ServiceState): { min: number; max: number } {
    const d = s.desired;
    const b = d.scaling ? bounds(d) : { min: d.replicas, max: d.replicas };
    const limit = d.binding.computeUnits;
    if (limit === null) return b;
    const base = (o: ServiceState) =>
      o.desired.scaling ? o.desired.scaling.minReplicas : o.desired.replicas;
    const running = (o: ServiceState) => [...o.replicas.values()].filter((r) => !r.exited).length;
    const tenant = [...this.services.values()].filter((o) => o.desired.tenantId === d.tenantId);
    const others = tenant.filter((o) => o !== s);
    const bases = tenant.reduce((n, o) => n + base(o) * o.desired.unitCost, 0);
    const cost = Math.max(1, d.unitCost);
    const cap =
      bases <= limit
        ? base(s) +
          Math.max(
            0,
            Math.floor(
              (limit -
                bases -
                others.reduce((n, o) => n + Math.max(0, running(o) - base(o)) * o.desired.unitCost, 0)) /
                cost,
            ),
          )
        : Math.max(
            0,
            Math.floor((limit - others.reduce((n, o) => n + running(o) * o.desired.unitCost, 0)) / cost),
          );
    return { min: Math.min(b.min, cap), max: Math.min(b.max, cap) };
  }

  /** Removes dead and surplus replicas, replaces outdated ones one at a time, starts the missing. */
  private async converge(s: ServiceState): Promise<void> {
    const d = s.desired;
    const fp = fingerprint(d);
    for (const r of [...s.replicas.values()])
      if (r.exited) {
        s.replicas.delete(r.name);
        s.restarts.set(r.index, (s.restarts.get(r.index) ?? 0) + 1);
      }
    const want = s.target;
    const byIndex = [...s.replicas.values()].sort((a, b) => a.index - b.index);
    for (const r of byIndex.filter((x) => x.index > want)) {
      s.replicas.delete(r.name);
      await this.stop(r);
    }
    for (const r of byIndex.filter((x) => x.index <= want && x.fingerprint !== fp)) {
      // Rolling replacement: one replica at a time, the next only once the new one answers.
      s.replicas.delete(r.name);
      await this.stop(r);
      const n = await this.start(s, r.index);
      await this.waitReady([n]);
    }
    const started: Replica[] = [];
    for (let i = 1; i <= want; i++) {
      const name = `${d.replicaBase}-${i}`;
      if (!s.replicas.has(name)) started.push(await this.start(s, i));
    }
    await this.waitReady(started);
  }

  private async start(s: ServiceState, index: number): Promise<Replica> {
    const d = s.desired;
    const name = `${d.replicaBase}-${index}`;
    const dir = path.join(this.root, d.tenantSlug, d.slug);
    fs.mkdirSync(dir, { recursive: true });
    const port = await freePort();
    const env: Record<string, string> = {
      PORT: String(port),
      TENANTRY_REPLICA: name,
      TENANTRY_SERVICE: d.slug,
      TENANTRY_TENANT: d.tenantSlug,
      TENANTRY_DEPLOYMENT: d.deploymentSlug,
      TENANTRY_IMAGE: d.image,
      TENANTRY_VERSION: d.version,
    };
    for (const k of ['PATH', 'HOME', 'LANG', 'TMPDIR', 'SYSTEMROOT'])
      if (process.env[k] !== undefined) env[k] = process.env[k] as string;
    if (d.configuration) {
      const file = path.join(dir, `config-${d.configuration.checksum.slice(0, 12)}.json`);
      fs.writeFileSync(file, d.configuration.canonical);
      env.TENANTRY_CONFIG_FILE = file;
      env.TENANTRY_CONFIG_CHECKSUM = d.configuration.checksum;
    }
    const [cmd, ...args] = d.command ?? [];
    const log = fs.openSync(path.join(dir, `${name}.log`), 'a');
    let child: ChildProcess;
    try {
      child = spawn(cmd === 'node' ? process.execPath : (cmd as string), args, {
        env,
        stdio: ['ignore', log, log],
      });
    } finally {
      fs.closeSync(log);
    }
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid as number));
      child.once('error', (err) =>
        reject(
          new ProviderError(`cannot start ${name}: ${err.message}`, 'CommandFailed', false, { cause: err }),
        ),
      );
    });
    const pidFile = path.join(dir, `${name}.pid`);
    fs.writeFileSync(pidFile, `${pid} ${name}\n`);
    const r: Replica = {
      name,
      index,
      child,
      pid,
      port,
      fingerprint: fingerprint(d),
      version: d.version,
      ready: false,
      restarts: s.restarts.get(index) ?? 0,
      stopping: false,
    };
    child.once('exit', (code, signal) => {
      fs.rmSync(pidFile, { force: true });
      if (r.stopping) return;
      r.exited = signal ? `killed by ${signal}` : `exited with code ${code}`;
      r.ready = false;
      s.deaths.push(`replica ${name} ${r.exited}`);
      this.opts.logger?.warn({ replica: name, pid }, `replica ${r.exited}`);
      this.opts.onChange?.(d.id, d.tenantId);
    });
    s.replicas.set(name, r);
    return r;
  }

  private async stop(r: Replica): Promise<void> {
    r.stopping = true;
    if (r.child.exitCode !== null || r.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => r.child.once('exit', () => resolve()));
    r.child.kill('SIGTERM');
    const timer = setTimeout(() => r.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }

  private async waitReady(replicas: Replica[]): Promise<void> {
    const deadline = Date.now() + (this.opts.readyTimeoutMs ?? 15_000);
    for (const r of replicas)
      while (!r.ready && !r.exited && !r.stopping && Date.now() < deadline) {
        r.ready = await healthy(r);
        if (!r.ready) await new Promise((res) => setTimeout(res, 100));
      }
  }

  /** Readiness of every replica; a change pokes the controller so status follows. */
  private async probeAll(): Promise<void> {
    for (const s of this.services.values()) {
      let changed = false;
      for (const r of s.replicas.values()) {
        if (r.exited || r.stopping) continue;
        const ok = await healthy(r);
        if (ok !== r.ready) changed = true;
        r.ready = ok;
      }
      if (changed) this.opts.onChange?.(s.desired.id, s.desired.tenantId);
    }
  }

  /** One round of metric-driven scaling over the services that have a scaling policy. */
  async autoscale(now = Date.now()): Promise<void> {
    if (this.scaling || this.closed) return;
    this.scaling = true;
    try {
      for (const s of this.services.values()) {
        const d = s.desired;
        if (!d.scaling) continue;
        const live = [...s.replicas.values()].filter((r) => !r.exited && !r.stopping && r.ready);
        if (live.length === 0) continue;
        let sum = 0;
        for (const r of live) sum += await utilization(r.pid, d);
        const avg = sum / live.length;
        const raw =
          Math.abs(avg / d.scaling.targetUtilization - 1) <= 0.1
            ? s.target
            : Math.ceil(sum / d.scaling.targetUtilization);
        const b = this.bounds(s);
        const n = Math.max(Math.min(raw, b.max), Math.min(b.min, b.max));
        s.recommendations = [
          ...s.recommendations.filter((x) => now - x.at < this.opts.scaleDownStabilizationMs),
          { at: now, n },
        ];
        // Scale down only to the highest recommendation of the stabilisation window.
        const next = n >= s.target ? n : Math.max(...s.recommendations.map((x) => x.n));
        if (next === s.target) continue;
        s.lastScale = {
          at: new Date(now).toISOString(),
          from: s.target,
          to: next,
          metric: d.scaling.metric,
          utilization: Math.round(avg),
          reason:
            raw > b.max
              ? `the metric asks for ${raw}; capped at ${b.max} (policy max ${d.scaling.maxReplicas}, quota)`
              : `average ${d.scaling.metric} ${Math.round(avg)}% of request, target ${d.scaling.targetUtilization}%`,
        };
        this.opts.logger?.info({ service: d.slug, ...s.lastScale }, 'scaled');
        await serially(s, async () => {
          s.target = next;
          await this.converge(s);
        });
        this.opts.onChange?.(d.id, d.tenantId);
      }
    } catch (err) {
      this.opts.logger?.warn({ err }, 'autoscaling round failed');
    } finally {
      this.scaling = false;
    }
  }

  private details(d: DesiredService, s: ServiceState | undefined): Record<string, unknown> {
    return {
      logs: path.join(this.root, d.tenantSlug, d.slug),
      ...(s ? { bounds: this.bounds(s) } : {}),
      ...(s?.lastScale ? { lastScale: s.lastScale } : {}),
    };
  }

  /** Ends processes a previous run of this data folder left behind (it was killed before stopping them). */
  private endStaleProcesses(): void {
    for (const file of walk(this.root).filter((f) => f.endsWith('.pid'))) {
      const [pidText, name] = fs.readFileSync(file, 'utf8').trim().split(' ');
      const pid = Number(pidText);
      try {
        const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
        if (environ.split('\0').includes(`TENANTRY_REPLICA=${name}`)) process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already (or not Linux: nothing to check the pid against, so it is left alone).
      }
      fs.rmSync(file, { force: true });
    }
  }
}

const view = (r: Replica): ObservedReplica => ({
  name: r.name,
  phase: r.exited ? 'Failed' : r.ready ? 'Running' : 'Pending',
  ready: r.ready,
  version: r.version,
  address: `http://127.0.0.1:${r.port}`,
  restarts: r.restarts,
});

const emptyReplicas = () => ({ desired: 0, current: 0, ready: 0, updated: 0, items: [] });
const short = (fp: string) => fp.slice(0, 40);

/** What a replica runs: image, version, command and configuration; replicas differ from desired by it. */
const fingerprint = (d: DesiredService) =>
  JSON.stringify([d.replicaBase, d.image, d.version, d.command, d.configuration?.checksum ?? null]);

async function healthy(r: Replica): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${r.port}/healthz`, { signal: AbortSignal.timeout(1_000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

/** A replica's use of its request, in percent: CPU of unitCost × 100 millicores, or RSS of unitCost × 128 MiB. */
async function utilization(pid: number, d: DesiredService): Promise<number> {
  try {
    const u = await pidusage(pid);
    return d.scaling?.metric === 'memory'
      ? (u.memory / (d.unitCost * COMPUTE_UNIT.memoryMiB * 1024 * 1024)) * 100
      : (u.cpu / ((d.unitCost * COMPUTE_UNIT.cpuMillis) / 1000)) * 1;
  } catch {
    return 0;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function walk(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}
