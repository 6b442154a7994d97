import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import type { Logger } from 'pino';
import { type ProviderSet, slotFor } from '../controller/providers.js';
import { provisionedCondition } from '../providers/observed-details.js';
import { ProviderError } from '../providers/provider.js';
import type { Credential, StatusReport } from './agent.service.js';
import type { AgentCommand, CommandOutcome } from './agent-commands.js';
import { runAgentOp, type TenantSecrets } from './agent-ops.js';
import { AgentKey } from './agent-webhook-secrets.js';
import type { DesiredItem, IndexEntry } from './desired-state.js';

export interface CellAgentOptions {
  /** The control plane's URL. */
  server: string;
  /** The cell's slug or UUID. */
  cell: string;
  /** Needed the first time (no saved credential). */
  joinToken?: string;
  /** Where the agent keeps its credential and the last desired state it pulled (mode 0600). */
  stateDir: string;
  /** The providers, configured where the agent runs. */
  providers: ProviderSet;
  /** The generated credentials its providers keep (for a purge's commands). */
  secrets?: TenantSecrets;
  /** The data-plane PostgreSQL its database provider uses (a tenancy-mode migration's commands). */
  dataplaneUrl?: string;
  /** `host:port` at which another region's data plane reaches this one's PostgreSQL (a region migration's reader). */
  peerAddress?: string;
  logger: Logger;
  name?: string;
  /** How often every object is reconciled again (drift repair), also while the server is away. */
  resyncMs?: number;
  /** Seconds a desired-state request waits for a change. */
  waitSeconds?: number;
}

type HeldItem = DesiredItem & { hash: string };

interface SavedState {
  server: string;
  cell: { id: string; slug: string };
  credential: string;
  issuedAt: number;
  expiresAt: string;
  heartbeatIntervalMs: number;
  feed: { hash: string; generation: number } | null;
  items: Record<string, HeldItem>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The agent's version (package.json, two folders up from src/agent and dist/agent alike), sent as its User-Agent. */
export const AGENT_VERSION: string = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
).version;

const MAX_ATTEMPTS = 8;
const BATCH = 500;
const STATUS_BATCH = 500;

/**
 * The agent of one cell (issue 22): connects out to the control plane, pulls its cell's desired
 * state (long poll on a content hash; after a reconnect it compares hashes and fetches only what
 * changed), runs the providers it was given, and reports observed status and heartbeats. While the
 * control plane is unreachable it keeps reconciling the last desired state it holds (saved on
 * disk, so a restart keeps it too) and keeps its reports until they are accepted.
 */
export class CellAgent {
  private state: SavedState | undefined;
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly aborts = new AbortController();
  /** The last status per object, and what the control plane acknowledged. */
  private readonly reports = new Map<string, StatusReport>();
  private readonly acked = new Map<string, string>();
  private readonly attempts = new Map<string, number>();
  private readonly local = new Map<string, string>();
  private connected = true;
  private saves = 0;
  private reconciling: Promise<void> | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  /** Response bytes of the desired-state feed and item fetches (benchmarks, tests). */
  bytesPulled = 0;
  /** Objects fetched in full (after a change of their hash). */
  itemsPulled = 0;
  /** Completed reconcile passes. */
  passes = 0;

  constructor(private readonly o: CellAgentOptions) {
    // Its loops, sleeps and requests all listen to one abort signal.
    setMaxListeners(100, this.aborts.signal);
  }

  private get file(): string {
    return path.join(this.o.stateDir, 'agent-state.json');
  }

  get cellId(): string | undefined {
    return this.state?.cell.id;
  }

  /** Its current credential (rotated by the heartbeat loop), for the agent's other loops (./agent-webhooks.ts). */
  get credential(): string | undefined {
    return this.state?.credential;
  }

  /** The desired state the agent holds now. */
  held(): HeldItem[] {
    return Object.values(this.state?.items ?? {});
  }

  async start(): Promise<void> {
    await this.load();
    if (!this.state) {
      if (!this.o.joinToken)
        throw new Error(
          `No saved credential in ${this.o.stateDir} and no join token: mint one with "tenantry cells join-token".`,
        );
      const c = await this.call<Credential>('POST', '/v1/agent/join', this.o.joinToken, {
        ...(this.o.name ? { name: this.o.name } : {}),
      });
      this.state = {
        server: this.o.server,
        cell: c.cell,
        credential: c.credential,
        issuedAt: Date.now(),
        expiresAt: c.expiresAt,
        heartbeatIntervalMs: c.heartbeatIntervalMs,
        feed: null,
        items: {},
      };
      await this.save();
      this.o.logger.info({ cell: c.cell.slug }, 'agent joined its cell');
    }
    this.running = true;
    this.loops = [this.syncLoop(), this.heartbeatLoop(), this.commandLoop()];
    const resync = this.o.resyncMs ?? 30_000;
    this.resyncTimer = setInterval(() => this.kick(), resync);
    this.kick();
  }

  async stop(): Promise<void> {
    this.running = false;
    clearInterval(this.resyncTimer);
    this.aborts.abort();
    await Promise.allSettled(this.loops);
    await this.reconciling;
  }

  private async load(): Promise<void> {
    try {
      const s = JSON.parse(await fs.readFile(this.file, 'utf8')) as SavedState;
      if (s.server === this.o.server && (s.cell.id === this.o.cell || s.cell.slug === this.o.cell))
        this.state = s;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  private async save(): Promise<void> {
    await fs.mkdir(this.o.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${process.pid}.${++this.saves}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(this.state), { mode: 0o600 });
    await fs.rename(tmp, this.file);
  }

  private async call<T>(
    method: string,
    route: string,
    bearer: string,
    body?: unknown,
    headers: Record<string, string> = {},
    timeoutMs = 10_000,
  ): Promise<{ status: number; body: T; bytes: number } & T> {
    const res = await fetch(new URL(route, this.o.server), {
      method,
      headers: {
        authorization: `Bearer ${bearer}`,
        'user-agent': `tenantry-agent/${AGENT_VERSION}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.any([this.aborts.signal, AbortSignal.timeout(timeoutMs)]),
    });
    const text = await res.text();
    const parsed = text ? JSON.parse(text) : {};
    if (res.status >= 400)
      throw new HttpError(
        res.status,
        String(parsed.code ?? res.status),
        String(parsed.detail ?? parsed.title ?? text),
      );
    return Object.assign(
      { status: res.status, body: parsed as T, bytes: Buffer.byteLength(text) },
      parsed as T,
    );
  }

  private bearer(): string {
    return this.state!.credential;
  }

  private cellPath(rest: string): string {
    return `/v1/agent/${this.state!.cell.id}/${rest}`;
  }

  private lost(err: unknown, what: string): void {
    if (!this.running) return;
    if (err instanceof HttpError && err.status === 401) {
      // Revoked, or expired while away: only a new join token (and a restart) brings it back.
      if (this.connected)
        this.o.logger.error(
          { code: err.code, what },
          'the control plane refuses this agent; it needs a new join token',
        );
      this.connected = false;
      return;
    }
    if (this.connected)
      this.o.logger.warn(
        { err: (err as Error).message, what },
        'control plane unreachable; the agent keeps its last desired state',
      );
    this.connected = false;
  }

  private regained(): void {
    if (this.connected) return;
    this.connected = true;
    // Whatever was marked Unknown meanwhile is reported again.
    this.acked.clear();
    this.o.logger.info('control plane reachable again; reporting status');
  }

  /** `ms`, or less once the agent stops. */
  private sleep(ms: number): Promise<void> {
    return pause(ms, undefined, { signal: this.aborts.signal }).catch(() => undefined);
  }

  /** Pulls the desired state: index by hash (long poll), then only the objects whose hash changed. */
  async syncOnce(waitSeconds = this.o.waitSeconds ?? 25): Promise<boolean> {
    const s = this.state!;
    const known = s.feed?.hash;
    const r = await this.call<{
      generation: number;
      hash: string;
      items: IndexEntry[];
      changed?: HeldItem[];
    }>(
      'GET',
      `${this.cellPath('desired-state')}?wait=${known ? waitSeconds : 0}`,
      this.bearer(),
      undefined,
      known ? { 'if-none-match': `"${known}"` } : {},
      (waitSeconds + 10) * 1000,
    );
    this.bytesPulled += r.bytes;
    this.regained();
    if (r.status === 304) return false;
    const wanted = new Set(r.items.map((i) => i.id));
    for (const id of Object.keys(s.items)) if (!wanted.has(id)) delete s.items[id];
    // What the answer brought along (the objects changed since the index held) needs no fetch.
    for (const item of r.changed ?? []) {
      s.items[item.id] = item;
      this.itemsPulled++;
    }
    const changed = r.items.filter((i) => s.items[i.id]?.hash !== i.hash).map((i) => i.id);
    const pushed = (r.changed ?? []).map((i) => i.id);
    // Reconciled at once, while the rest (if any) is fetched and the state saved.
    if (pushed.length > 0) this.kick(pushed);
    for (let i = 0; i < changed.length; i += BATCH) {
      const got = await this.call<{ items: HeldItem[] }>(
        'POST',
        this.cellPath('desired-state/items'),
        this.bearer(),
        {
          ids: changed.slice(i, i + BATCH),
        },
      );
      this.bytesPulled += got.bytes;
      this.itemsPulled += got.items.length;
      for (const item of got.items) s.items[item.id] = item;
    }
    s.feed = { hash: r.hash, generation: r.generation };
    if (changed.length > 0) this.kick(changed);
    await this.save();
    return true;
  }

  private async syncLoop(): Promise<void> {
    let delay = 200;
    while (this.running) {
      try {
        await this.syncOnce();
        delay = 200;
      } catch (err) {
        if (!this.running) return;
        this.lost(err, 'desired state');
        await this.sleep(delay);
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  /**
   * The key what another region's agent hands this one in a command is sealed for (a migration's
   * reader): made at start, kept in memory only; its public half goes with each command request.
   */
  private commandKey: AgentKey | undefined;
  /** Commands running now, and results not yet accepted (kept through a network cut). */
  private readonly inFlight = new Set<string>();
  private readonly results = new Map<string, { attempts: number; outcome: CommandOutcome }>();
  /** Commands this agent completed (tests). */
  commandsRun = 0;

  /** Pulls the control plane's commands (long poll), runs them here, and reports each result. */
  private async commandLoop(): Promise<void> {
    let delay = 200;
    while (this.running) {
      try {
        this.commandKey ??= await AgentKey.generate();
        await this.sendResults();
        const r = await this.call<{ commands: AgentCommand[] }>(
          'GET',
          `${this.cellPath('commands')}?wait=${this.results.size > 0 ? 1 : (this.o.waitSeconds ?? 25)}&key=${this.commandKey.publicKey.x}`,
          this.bearer(),
          undefined,
          {},
          ((this.o.waitSeconds ?? 25) + 10) * 1000,
        );
        this.regained();
        let started = 0;
        for (const c of r.commands) {
          if (this.inFlight.has(c.id) || this.results.has(c.id)) continue;
          this.inFlight.add(c.id);
          started++;
          void this.runCommand(c);
        }
        // Only commands it is running already (a long one, a migration's copy): the server answers
        // at once while they are open, so the next look waits a little.
        if (r.commands.length > 0 && started === 0) await this.sleep(250);
        delay = 200;
      } catch (err) {
        if (!this.running) return;
        this.lost(err, 'commands');
        await this.sleep(delay);
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  private async runCommand(c: AgentCommand): Promise<void> {
    let outcome: CommandOutcome;
    try {
      if (c.op === 'region.removeResources') await this.settle();
      const output = await runAgentOp(
        {
          providers: this.o.providers,
          secrets: this.o.secrets,
          dataplaneUrl: this.o.dataplaneUrl,
          peerAddress: this.o.peerAddress,
          ...(this.commandKey && this.cellId ? { opener: { key: this.commandKey, cell: this.cellId } } : {}),
        },
        c.op,
        c.input,
      );
      outcome = { ok: true, output: output ?? null };
    } catch (err) {
      const e =
        err instanceof ProviderError ? err : new ProviderError((err as Error).message, 'CommandFailed', true);
      outcome = {
        ok: false,
        error: { message: e.message.slice(0, 2000), reason: e.reason.slice(0, 64), retryable: e.retryable },
      };
    }
    this.commandsRun++;
    this.results.set(c.id, { attempts: c.attempts, outcome });
    this.inFlight.delete(c.id);
    await this.sendResults().catch((err) => this.lost(err, 'command result'));
  }

  private sending: Promise<void> | undefined;

  private async sendResults(): Promise<void> {
    while (this.sending) await this.sending.catch(() => undefined);
    this.sending = (async () => {
      for (const [id, r] of [...this.results]) {
        try {
          await this.call('POST', this.cellPath(`commands/${id}/result`), this.bearer(), {
            attempts: r.attempts,
            ...r.outcome,
          });
        } catch (err) {
          // Gone or refused for good (404, 403, 422): nothing to report it to; else try again later.
          if (!(err instanceof HttpError) || err.status === 401 || err.status >= 500) throw err;
        }
        this.results.delete(id);
      }
    })();
    try {
      await this.sending;
    } finally {
      this.sending = undefined;
    }
  }

  private async heartbeatLoop(): Promise<void> {
    while (this.running) {
      await this.sleep(this.state!.heartbeatIntervalMs);
      if (!this.running) return;
      try {
        const hb = await this.call<{ resend: boolean }>('POST', this.cellPath('heartbeat'), this.bearer());
        this.regained();
        if (hb.resend) this.acked.clear();
        await this.rotateIfDue();
        // Not awaited: a slow report must not delay the next heartbeat.
        this.flush().catch((err) => this.lost(err, 'status'));
      } catch (err) {
        this.lost(err, 'heartbeat');
      }
    }
  }

  /** A fresh credential after two thirds of the current one's lifetime. */
  private async rotateIfDue(): Promise<void> {
    const s = this.state!;
    const end = Date.parse(s.expiresAt);
    if (Date.now() < s.issuedAt + ((end - s.issuedAt) * 2) / 3) return;
    const c = await this.call<Credential>('POST', '/v1/agent/credential', this.bearer());
    Object.assign(s, { credential: c.credential, issuedAt: Date.now(), expiresAt: c.expiresAt });
    await this.save();
    this.o.logger.info({ expiresAt: c.expiresAt }, 'agent credential rotated');
  }

  /**
   * The desired state brought up to date and the reconcile pass in flight ended: before a region
   * migration removes its copy here (the rollback's drop-target, the retirement), whose tenant the
   * switch took from this cell. A pass that still held the old item re-created the schema and role
   * just dropped (agent-region-migration.test.ts, log_statement=ddl); later passes no longer hold it.
   */
  private async settle(): Promise<void> {
    await this.syncOnce(0);
    while (this.reconciling) await this.reconciling;
  }

  /** What the next pass reconciles: every object held, or those whose desired state just changed. */
  private wanted: Set<string> | 'all' = new Set();

  /**
   * Reconciles `ids` (after a change of their desired state: only they, at once) or everything held
   * (start, resync: drift repair); what is asked meanwhile is done in the next pass.
   */
  kick(ids?: readonly string[]): void {
    if (!ids) this.wanted = 'all';
    else if (this.wanted !== 'all') for (const id of ids) this.wanted.add(id);
    if (this.reconciling) return;
    this.reconciling = (async () => {
      do {
        const w = this.wanted;
        this.wanted = new Set();
        await this.reconcileAll(w === 'all' ? undefined : w);
      } while (this.running && this.moreWanted());
    })().finally(() => {
      this.reconciling = undefined;
    });
  }

  /** Something was asked for during the pass (read through a method: the pass changed the field). */
  private moreWanted(): boolean {
    return this.wanted === 'all' || this.wanted.size > 0;
  }

  /** One pass over the desired state it holds (or `only` those of it); then the changed reports go out (if reachable). */
  async reconcileAll(only?: ReadonlySet<string>): Promise<void> {
    // A partial pass also retries what failed a first attempt (as a full pass would).
    const ids = only ? new Set([...only, ...this.attempts.keys()]) : undefined;
    const items = ids ? [...ids].flatMap((id) => this.state?.items[id] ?? []) : this.held();
    for (const item of items) {
      if (!this.running && this.passes > 0) return;
      const report = await this.realise(item);
      this.reports.set(item.id, report);
      this.local.set(item.id, report.phase);
    }
    for (const id of this.reports.keys()) if (!this.state?.items[id]) this.reports.delete(id);
    this.passes++;
    await this.flush().catch((err) => this.lost(err, 'status'));
  }

  private flushing: Promise<void> | undefined;

  /** Sends the reports the control plane has not acknowledged yet (one flush at a time). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => undefined);
    this.flushing = this.flushOnce();
    try {
      await this.flushing;
    } finally {
      this.flushing = undefined;
    }
  }

  private async flushOnce(): Promise<void> {
    const pending = [...this.reports.values()].filter((r) => this.acked.get(r.id) !== JSON.stringify(r));
    // A batch is written in one transaction (src/agent/status-reports.ts).
    for (let i = 0; i < pending.length; i += STATUS_BATCH) {
      const batch = pending.slice(i, i + STATUS_BATCH);
      await this.call('POST', this.cellPath('status'), this.bearer(), { reports: batch }, {}, 60_000);
      this.regained();
      for (const r of batch) {
        this.acked.set(r.id, JSON.stringify(r));
        // A drift is reported once.
        if (r.drift) this.reports.set(r.id, { ...r, drift: undefined } as StatusReport);
      }
    }
  }

  /** The controller's reconcile of one resource, on this agent's providers. */
  private async realise(item: HeldItem): Promise<StatusReport> {
    const base = { id: item.id, generation: item.generation };
    const slot = slotFor(this.o.providers, item.desired.type, item.region);
    try {
      if (item.deleted) {
        if ('provider' in slot) await slot.provider.delete(item.desired);
        const what = 'provider' in slot ? `removed from ${slot.provider.name}` : 'no provider was configured';
        return {
          ...base,
          phase: 'Deleted',
          ready: { status: 'False', reason: 'Deleted', message: `Deleted (${what}); the tombstone is kept.` },
        };
      }
      if (!('provider' in slot)) throw new ProviderError(slot.missing, 'ProviderNotConfigured', false);
      const p = slot.provider;
      const before = await p.observe(item.desired);
      const after = !before.exists || before.drift.length > 0 ? await p.ensure(item.desired) : before;
      if (!after.exists || after.drift.length > 0)
        throw new ProviderError(
          `${p.name} still differs after ensure: ${after.drift.join('; ') || 'missing'}`,
          'DriftPersists',
          true,
        );
      this.attempts.delete(item.id);
      const drifted = this.local.get(item.id) === 'Ready' && (!before.exists || before.drift.length > 0);
      return {
        ...base,
        phase: 'Ready',
        ready: provisionedCondition(p.name, after.details),
        ...(drifted ? { drift: before.exists ? before.drift : ['the resource was missing'] } : {}),
      };
    } catch (err) {
      const e =
        err instanceof ProviderError
          ? err
          : new ProviderError((err as Error).message, 'ReconcileError', true);
      const n = (this.attempts.get(item.id) ?? 0) + 1;
      this.attempts.set(item.id, n);
      const final = !e.retryable || n >= MAX_ATTEMPTS;
      const message = final
        ? `${e.message} (gave up after ${n} attempt(s); tried again at the next resync)`
        : `${e.message} (attempt ${n} failed; retrying at the agent's next pass)`;
      if (final) this.attempts.delete(item.id);
      const phase = item.deleted ? 'Provisioning' : final ? 'Failed' : 'Provisioning';
      return {
        ...base,
        phase,
        ready: { status: 'False', reason: e.reason.slice(0, 64), message: message.slice(0, 2000) },
      };
    }
  }
}
