import { createHash, randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { sql } from 'kysely';
import { appendAudit, auditEntryOf } from '../audit/append-audit.js';
import type { Authorizer } from '../authz/authorizer.js';
import type { AgentConfig } from '../config/config.js';
import { type RequestContext, systemContext } from '../context/request-context.js';
import type { Phase } from '../controller/status.js';
import { asPlatform, type Db, type Trx } from '../db/database.js';
import {
  ForbiddenError,
  NotFoundError,
  TenantryError,
  UnauthorizedError,
  ValidationError,
} from '../errors/errors.js';
import type { EventNotifier } from '../events/event-notifier.js';
import type { BuiltinIssuer } from '../identity/builtin-issuer.js';
import type { ObjectRow } from '../registry/object.repository.js';
import {
  type AgentCommand,
  type CommandOutcome,
  completeCommand,
  hasOpenCommands,
  pullCommands,
} from './agent-commands.js';
import { type AgentDetail, agentDetail, agentVersionOf } from './agent-detail.js';
import { cellDesiredItems, cellIndex, type HashedItem, type IndexEntry } from './desired-state.js';
import { type CurrentReport, type StatusReport, writeStatusReports } from './status-reports.js';
import { Wakeup } from './wakeup.js';

/** The principal of a cell's agent credential, and of a join token for it. */
export const agentPrincipal = (cellId: string) => `cell-agent:${cellId}`;
export const joinPrincipal = (cellId: string) => `cell-join:${cellId}`;
export const AGENT_ROLE = 'cell-agent';
export const JOIN_ROLE = 'cell-join';
export const AGENT_APP = 'tenantry-agent';
/** Missed heartbeat intervals after which a cell and its objects show Unknown. */
export const MISSED_HEARTBEATS = 5;
/** At most this many changed objects ride in a long poll's answer; more are fetched by id. */
const PUSHED_ITEMS = 500;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export interface Credential {
  credential: string;
  expiresAt: string;
  cell: { id: string; slug: string };
  heartbeatIntervalMs: number;
}

export type { StatusReport } from './status-reports.js';

/** The AgentConnected condition of a cell. */
function agentCondition(status: 'True' | 'Unknown' | 'False', reason: string, message: string) {
  return { type: 'AgentConnected', status, reason, message, lastTransitionTime: new Date().toISOString() };
}

async function setCellCondition(trx: Trx, cellId: string, condition: ReturnType<typeof agentCondition>) {
  await sql`
    update cells set conditions = coalesce(
      (select jsonb_agg(c) from jsonb_array_elements(conditions) c where c->>'type' <> 'AgentConnected'),
      '[]'::jsonb) || jsonb_build_array(${JSON.stringify(condition)}::jsonb)
    where id = ${cellId}`.execute(trx);
}

/**
 * The control plane's side of the cell agents (issue 22): join tokens, agent credentials (tokens
 * of the built-in issuer bound to a session, so revocation takes effect on the next request), the
 * desired-state feed of a cell, status reports and heartbeats. The agent side is ./cell-agent.ts.
 *
 * Authorisation: join tokens and revocation are platform decisions (Cedar, on the cell); every
 * agent call must come from the credential of the cell it names, else 403 and nothing changes.
 */
export class AgentService {
  constructor(
    private readonly db: Db,
    private readonly config: AgentConfig,
    private readonly issuer: BuiltinIssuer | undefined,
    private readonly authorizer: Authorizer,
    /** Wakes waiting desired-state requests on every event (LISTEN); without it they only poll. */
    private readonly notifier?: EventNotifier,
  ) {
    this.forget = notifier?.subscribe('tenantry_events', (tenant) => {
      this.eventsSeen++;
      if (tenant === 'platform') this.served.clear();
      else for (const [cell, x] of this.served) if (x.tenants.has(tenant)) this.served.delete(cell);
    });
    // Notifications missed while LISTEN was away: nothing remembered is trusted.
    this.unwatch = notifier?.watch(() => this.served.clear());
  }

  private readonly closing = (() => {
    const c = new AbortController();
    // Every waiting long poll (two per connected agent) listens to it.
    setMaxListeners(0, c.signal);
    return c;
  })();

  /**
   * Per cell, the index hash last computed, when, and the cell's tenants; an event of one of them
   * (or of the platform) drops it. Valid for feedPollMs at most, as the poll that backs LISTEN is.
   */
  private readonly served = new Map<string, { hash: string; at: number; tenants: Set<string> }>();
  /**
   * Per cell, the item hashes of the last two indexes served (by index hash): an agent that holds
   * one of them gets the objects that changed since in the long poll's answer itself, instead of
   * asking for them in a second request (a round trip and a query per agent per change).
   */
  private readonly indexes = new Map<string, Map<string, Map<string, string>>>();
  /** Events seen on the LISTEN connection (an index computed while one came is not remembered). */
  private eventsSeen = 0;
  private forget: (() => void) | undefined;
  private unwatch: (() => void) | undefined;

  /**
   * How long a waiting request sleeps before it looks again by itself: while LISTEN is established
   * the notifications wake it (and a LISTEN lost or back wakes every one), so it waits its whole
   * time; without it, it polls every feedPollMs. (50 agents polling every 2 s were most of the
   * control plane's CPU: an index of 200 objects computed 25 times a second for nothing.)
   */
  private pollMs(left: number): number {
    return this.notifier?.listening ? left : Math.min(left, this.config.feedPollMs);
  }

  /** The cell of a tenant, looked up once per feedPollMs across all waiting requests. */
  private readonly tenantCells = new Map<string, { at: number; cell: Promise<string | null> }>();
  private cellOfTenant(tenant: string): Promise<string | null> {
    if (!UUID.test(tenant)) return Promise.resolve(null);
    const hit = this.tenantCells.get(tenant);
    if (hit && Date.now() - hit.at < this.config.feedPollMs) return hit.cell;
    if (this.tenantCells.size > 10_000) this.tenantCells.clear();
    const cell = asPlatform(this.db, async (trx) => {
      const r = await sql<{
        cell_id: string | null;
      }>`select cell_id from tenants where id = ${tenant}::uuid`.execute(trx);
      return r.rows[0]?.cell_id ?? null;
    }).catch(() => null);
    this.tenantCells.set(tenant, { at: Date.now(), cell });
    return cell;
  }

  /** Ends every waiting desired-state request now (the server is closing: no query after this). */
  close(): void {
    this.closing.abort();
    this.forget?.();
    this.unwatch?.();
    this.served.clear();
  }

  private requireIssuer(): BuiltinIssuer {
    if (!this.issuer)
      throw new TenantryError(
        'agent.issuer_disabled',
        503,
        'Cell agents need the built-in token issuer (TENANTRY_TOKEN_ISSUER is disabled).',
      );
    return this.issuer;
  }

  private async cell(trx: Trx, ref: string): Promise<{ id: string; slug: string }> {
    const r = await sql<{ id: string; slug: string }>`
      select id, slug from cells where deleted_at is null
        and ${UUID.test(ref) ? sql`id = ${ref}::uuid` : sql`slug = ${ref}`}`.execute(trx);
    const c = r.rows[0];
    if (!c) throw new NotFoundError('cell.not_found', `Cell "${ref}" does not exist.`, { ref });
    return c;
  }

  private authorizeCell(ctx: RequestContext, action: string, cell: { id: string; slug: string }) {
    return this.authorizer.authorize(ctx, action, {
      kind: 'Cell',
      id: cell.id,
      tenantId: null,
      customerId: null,
    });
  }

  /** Mints a one-time join token for `cellRef` (kept as its SHA-256 only). */
  async mintJoinToken(
    ctx: RequestContext,
    cellRef: string,
    ttlSeconds = this.config.joinTokenTtlSeconds,
  ): Promise<{ token: string; cell: { id: string; slug: string }; expiresAt: string }> {
    const issuer = this.requireIssuer();
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 86_400)
      throw ValidationError.field('/ttlSeconds', 'agent.ttl_invalid', 'ttlSeconds must be 1 to 86400.');
    return asPlatform(this.db, async (trx) => {
      const cell = await this.cell(trx, cellRef);
      const decision = this.authorizeCell(ctx, 'agent.join-token', cell);
      const minted = await this.issueJoinToken(trx, issuer, cell.id, ttlSeconds, ctx.actor.principal, false);
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          id: randomUUID(),
          tenantId: null,
          action: 'agent.join-token',
          target: { kind: 'Cell', id: cell.id, slug: cell.slug },
          before: null,
          after: { joinToken: minted.id, expiresAt: minted.expiresAt },
          outcome: 'success',
          decision,
        }),
      );
      return { token: minted.token, cell, expiresAt: minted.expiresAt };
    });
  }

  private async issueJoinToken(
    trx: Trx,
    issuer: BuiltinIssuer,
    cellId: string,
    ttlSeconds: number,
    createdBy: string,
    embedded: boolean,
  ): Promise<{ id: string; token: string; expiresAt: string }> {
    const token = await issuer.mint({
      subject: joinPrincipal(cellId),
      kind: 'service',
      roles: [JOIN_ROLE],
      appId: AGENT_APP,
      sessionId: null,
      ttlSeconds,
    });
    const expiresAt = new Date(Date.now() + ttlSeconds * 1000);
    const id = randomUUID();
    await sql`
      insert into cell_join_tokens (id, cell_id, token_hash, created_by, expires_at, embedded)
      values (${id}, ${cellId}, ${sha256(token)}, ${createdBy}, ${expiresAt}, ${embedded})`.execute(trx);
    return { id, token, expiresAt: expiresAt.toISOString() };
  }

  /**
   * Cells the process's own in-process agent may take (role all): those no agent joined, and those
   * its in-process agent held before; each with a join token marked embedded, good for a minute.
   */
  async embeddedJoinTokens(running: ReadonlySet<string>): Promise<{ cellId: string; token: string }[]> {
    const issuer = this.requireIssuer();
    return asPlatform(this.db, async (trx) => {
      const cells = await sql<{ id: string }>`
        select c.id from cells c left join cell_agents a on a.cell_id = c.id
        where c.deleted_at is null and (a.cell_id is null or (a.embedded and a.revoked_at is null))
        order by c.id`.execute(trx);
      const out: { cellId: string; token: string }[] = [];
      for (const c of cells.rows.filter((x) => !running.has(x.id)))
        out.push({
          cellId: c.id,
          token: (await this.issueJoinToken(trx, issuer, c.id, 60, 'tenantry', true)).token,
        });
      return out;
    });
  }

  /**
   * Spends a join token (the bearer of this request) for a credential of its cell. The cell's
   * previous agent, if any, is revoked: one agent per cell.
   *
   * Concurrency contract: the token is spent by `update … where used_at is null and expires_at >
   * now()`; of two racing joins one gets the row, the other 401.
   */
  async join(ctx: RequestContext, bearer: string, input: { name?: string }): Promise<Credential> {
    const issuer = this.requireIssuer();
    const cellId = this.principalCell(ctx, JOIN_ROLE, 'cell-join:');
    return asPlatform(this.db, async (trx) => {
      const spent = await sql<{ cell_id: string; embedded: boolean }>`
        update cell_join_tokens set used_at = now()
        where token_hash = ${sha256(bearer)} and used_at is null and expires_at > now()
        returning cell_id, embedded`.execute(trx);
      const embedded = spent.rows[0]?.embedded ?? false;
      if (spent.rows[0]?.cell_id !== cellId) {
        const known = await sql<{ used: boolean }>`
          select used_at is not null as used from cell_join_tokens where token_hash = ${sha256(bearer)}`.execute(
          trx,
        );
        if (known.rows[0] && !known.rows[0].used)
          throw new UnauthorizedError('agent.join_token_expired', 'The join token has expired.');
        throw new UnauthorizedError('agent.join_token_spent', 'The join token was used already.');
      }
      const cell = await this.cell(trx, cellId);
      const previous = await sql<{ session_id: string }>`
        select session_id from cell_agents where cell_id = ${cellId} for update`.execute(trx);
      if (previous.rows[0])
        await sql`update sessions set revoked_at = coalesce(revoked_at, now()), revoked_by = 'agent.join'
          where id = ${previous.rows[0].session_id}`.execute(trx);
      const sessionId = randomUUID();
      const ttl = this.config.credentialTtlSeconds;
      const expiresAt = new Date(Date.now() + ttl * 1000);
      await sql`
        insert into sessions (id, issuer, app_id, tenant_id, principal, expires_at)
        values (${sessionId}, ${issuer.issuer}, ${AGENT_APP}, null, ${agentPrincipal(cellId)}, ${expiresAt})`.execute(
        trx,
      );
      await sql`
        insert into cell_agents (cell_id, session_id, name, embedded, credential_expires_at, heartbeat_interval_ms)
        values (${cellId}, ${sessionId}, ${input.name ?? 'agent'}, ${embedded}, ${expiresAt},
          ${this.config.heartbeatIntervalMs})
        on conflict (cell_id) do update set session_id = excluded.session_id, name = excluded.name,
          embedded = excluded.embedded, joined_at = now(), credential_expires_at = excluded.credential_expires_at,
          heartbeat_interval_ms = excluded.heartbeat_interval_ms, last_heartbeat_at = now(),
          connection = 'Connected', connection_since = now(), revoked_at = null, revoked_by = null,
          command_key = null`.execute(trx);
      await setCellCondition(
        trx,
        cellId,
        agentCondition(
          'True',
          'Joined',
          `Agent "${input.name ?? 'agent'}" joined; heartbeats expected every ${this.config.heartbeatIntervalMs} ms.`,
        ),
      );
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          id: randomUUID(),
          tenantId: null,
          action: 'agent.join',
          target: { kind: 'Cell', id: cell.id, slug: cell.slug },
          before: null,
          after: { agent: input.name ?? 'agent', session: sessionId, expiresAt: expiresAt.toISOString() },
          outcome: 'success',
          decision: null,
        }),
      );
      // Every object of the cell is its agent's from now: reconcile them, so the controller lets go.
      await sql`
        update reconcile_jobs j set run_after = now() from integration_resources r join tenants t on t.id = r.tenant_id
        where t.cell_id = ${cellId} and j.object_kind = 'IntegrationResource' and j.object_id = r.id`.execute(
        trx,
      );
      return this.credential(issuer, cell, sessionId, ttl, expiresAt);
    });
  }

  private async credential(
    issuer: BuiltinIssuer,
    cell: { id: string; slug: string },
    sessionId: string,
    ttl: number,
    expiresAt: Date,
  ): Promise<Credential> {
    const credential = await issuer.mint({
      subject: agentPrincipal(cell.id),
      kind: 'service',
      roles: [AGENT_ROLE],
      appId: AGENT_APP,
      sessionId,
      ttlSeconds: ttl,
    });
    return {
      credential,
      expiresAt: expiresAt.toISOString(),
      cell,
      heartbeatIntervalMs: this.config.heartbeatIntervalMs,
    };
  }

  /** A fresh credential of the same session, for an agent whose credential is still valid. */
  async renew(ctx: RequestContext): Promise<Credential> {
    const issuer = this.requireIssuer();
    const cellId = this.principalCell(ctx, AGENT_ROLE, 'cell-agent:');
    return asPlatform(this.db, async (trx) => {
      const cell = await this.cell(trx, cellId);
      const ttl = this.config.credentialTtlSeconds;
      const expiresAt = new Date(Date.now() + ttl * 1000);
      const r = await sql`
        update cell_agents set credential_expires_at = ${expiresAt}
        where cell_id = ${cellId} and session_id = ${ctx.sessionId} and revoked_at is null`.execute(trx);
      if (Number(r.numAffectedRows ?? 0) === 0)
        throw new UnauthorizedError('session.revoked', "This agent credential is no longer the cell's.");
      await sql`update sessions set expires_at = ${expiresAt} where id = ${ctx.sessionId}`.execute(trx);
      return this.credential(issuer, cell, ctx.sessionId!, ttl, expiresAt);
    });
  }

  /** Revokes the cell's agent: its credential is refused from its next request on. */
  async revoke(
    ctx: RequestContext,
    cellRef: string,
  ): Promise<{ cell: { id: string; slug: string }; revokedAt: string }> {
    return asPlatform(this.db, async (trx) => {
      const cell = await this.cell(trx, cellRef);
      const decision = this.authorizeCell(ctx, 'agent.revoke', cell);
      const r = await sql<{ session_id: string; revoked_at: Date }>`
        update cell_agents set revoked_at = coalesce(revoked_at, now()), revoked_by = coalesce(revoked_by, ${ctx.actor.principal})
        where cell_id = ${cell.id} returning session_id, revoked_at`.execute(trx);
      const row = r.rows[0];
      if (!row)
        throw new NotFoundError('agent.not_found', `Cell "${cell.slug}" has no agent.`, { ref: cellRef });
      await sql`update sessions set revoked_at = coalesce(revoked_at, now()), revoked_by = ${ctx.actor.principal}
        where id = ${row.session_id}`.execute(trx);
      // Join tokens not spent yet go too.
      await sql`update cell_join_tokens set used_at = now() where cell_id = ${cell.id} and used_at is null`.execute(
        trx,
      );
      await setCellCondition(
        trx,
        cell.id,
        agentCondition('False', 'Revoked', `The agent's credential was revoked by ${ctx.actor.principal}.`),
      );
      await appendAudit(
        trx,
        auditEntryOf(ctx, {
          id: randomUUID(),
          tenantId: null,
          action: 'agent.revoke',
          target: { kind: 'Cell', id: cell.id, slug: cell.slug },
          before: null,
          after: { revokedAt: row.revoked_at.toISOString() },
          outcome: 'success',
          decision,
        }),
      );
      return { cell, revokedAt: row.revoked_at.toISOString() };
    });
  }

  /** The agent of a cell, for operators (a platform decision on the cell, as revoking it is). */
  async detail(ctx: RequestContext, cellRef: string): Promise<AgentDetail> {
    return asPlatform(this.db, async (trx) => {
      const cell = await this.cell(trx, cellRef);
      // Of the platform: not a Cell (which tenants may read), its agent's state is the operators'.
      this.authorizer.authorize(ctx, 'agent.read', {
        kind: 'CellAgent',
        id: cell.id,
        tenantId: null,
        customerId: null,
      });
      const d = await agentDetail(trx, cell, MISSED_HEARTBEATS);
      if (!d)
        throw new NotFoundError('agent.not_found', `Cell "${cell.slug}" has no agent.`, { ref: cellRef });
      return d;
    });
  }

  /** The cell a principal of `role` stands for; anyone else is refused. */
  private principalCell(ctx: RequestContext, role: string, prefix: string): string {
    const p = ctx.actor.principal;
    if (
      ctx.scope.kind !== 'platform' ||
      ctx.actor.kind !== 'service' ||
      ctx.issuer !== this.issuer?.issuer ||
      !ctx.roles?.includes(role) ||
      !p.startsWith(prefix) ||
      !UUID.test(p.slice(prefix.length))
    )
      throw new ForbiddenError(
        'agent.credential_required',
        role === JOIN_ROLE ? 'This call needs a join token.' : "This call needs a cell agent's credential.",
      );
    return p.slice(prefix.length).toLowerCase();
  }

  /** The agent's own cell; naming another one is refused (403, nothing read or changed). */
  async agentCell(ctx: RequestContext, cellRef: string): Promise<string> {
    const own = this.principalCell(ctx, AGENT_ROLE, 'cell-agent:');
    if (UUID.test(cellRef) ? cellRef.toLowerCase() === own : true) {
      const cell = await asPlatform(this.db, (trx) => this.cell(trx, own));
      if (UUID.test(cellRef) || cell.slug === cellRef) return own;
    }
    throw new ForbiddenError('agent.other_cell', "An agent's credential reaches its own cell only.");
  }

  /**
   * The cell's index (generation, content hash, one hash per object). With `known` equal to the
   * current hash it waits up to `waitMs` for a change and answers `unchanged` if none came.
   */
  async index(
    cellId: string,
    known: string | undefined,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<
    { generation: number; hash: string; items: IndexEntry[]; changed?: HashedItem[] } | 'unchanged'
  > {
    const deadline = Date.now() + waitMs;
    const closing = this.closing.signal;
    const signals = signal ? [closing, signal] : [closing];
    // Events name their tenant: only those of this cell's tenants (and platform ones) wake this
    // request, not every event of every cell (with 50 cells that herd recomputed 50 indexes per
    // event). An event of a tenant not known here may be of one placed here meanwhile: its cell is
    // looked up. Subscribed before the first look, so no change slips in between.
    let tenants: Set<string> | undefined;
    const wakeup = new Wakeup(signals);
    const unsubscribe = this.notifier?.subscribe('tenantry_events', (tenant) => {
      if (tenant === 'platform' || !tenants || tenants.has(tenant)) wakeup.wake();
      else
        void this.cellOfTenant(tenant).then((cell) => {
          if (cell === cellId) wakeup.wake();
        });
    });
    // LISTEN lost (poll from now) or back (what it missed meanwhile): look again either way.
    const unwatch = this.notifier?.watch(() => wakeup.wake());
    try {
      // An agent back with the hash it was just given, with no event of its cell since: it waits
      // at once, without computing the index again (that was half the work of a change).
      const served = this.served.get(cellId);
      let fresh =
        known !== undefined && served?.hash === known && Date.now() - served.at < this.config.feedPollMs;
      if (fresh) tenants = served?.tenants;
      for (;;) {
        if (closing.aborted) return 'unchanged';
        wakeup.take();
        if (!fresh) {
          const seen = this.eventsSeen;
          const { index, changed } = await asPlatform(this.db, async (trx) => {
            const index = await cellIndex(trx, cellId);
            const ids = this.remember(cellId, index, known);
            return {
              index,
              changed: ids && ids.length > 0 ? await cellDesiredItems(trx, cellId, ids) : undefined,
            };
          });
          tenants ??= await asPlatform(this.db, async (trx) => {
            const r = await sql<{ id: string }>`select id from tenants where cell_id = ${cellId}`.execute(
              trx,
            );
            return new Set(r.rows.map((x) => x.id));
          });
          // Only an index no event may have overtaken is remembered.
          if (seen === this.eventsSeen)
            this.served.set(cellId, { hash: index.hash, at: Date.now(), tenants });
          if (index.hash !== known)
            return {
              generation: index.generation,
              hash: index.hash,
              items: index.items,
              ...(changed ? { changed } : {}),
            };
        }
        fresh = false;
        const left = deadline - Date.now();
        if (left <= 0 || signals.some((x) => x.aborted)) return 'unchanged';
        await wakeup.sleep(this.pollMs(left));
        if (signals.some((x) => x.aborted)) return 'unchanged';
      }
    } finally {
      unsubscribe?.();
      unwatch?.();
      wakeup.close();
    }
  }

  /**
   * Keeps the item hashes of `index` for the cell (and the one before), and answers which of its
   * objects differ from the index `known` an agent holds, when that one is kept and they are few
   * (else the agent asks for them itself, by id).
   */
  private remember(
    cellId: string,
    index: { hash: string; items: IndexEntry[] },
    known: string | undefined,
  ): string[] | undefined {
    let kept = this.indexes.get(cellId);
    if (!kept) {
      if (this.indexes.size > 10_000) this.indexes.clear();
      kept = new Map();
      this.indexes.set(cellId, kept);
    }
    if (!kept.has(index.hash)) {
      for (const h of [...kept.keys()].slice(0, Math.max(0, kept.size - 1))) kept.delete(h);
      kept.set(index.hash, new Map(index.items.map((i) => [i.id, i.hash])));
    }
    const held = known === undefined || known === index.hash ? undefined : kept.get(known);
    if (!held) return undefined;
    const changed = index.items.filter((i) => held.get(i.id) !== i.hash).map((i) => i.id);
    return changed.length <= PUSHED_ITEMS ? changed : undefined;
  }

  /**
   * The cell's open commands (src/agent/agent-commands.ts), waiting up to `waitMs` for one. Woken by
   * the NOTIFY of the command's insert (one LISTEN connection of the process fans it out to the
   * cell's waiting requests); the poll is only the fallback when that connection is down.
   */
  async commands(cellId: string, waitMs: number, signal?: AbortSignal): Promise<AgentCommand[]> {
    const deadline = Date.now() + waitMs;
    const closing = this.closing.signal;
    const signals = signal ? [closing, signal] : [closing];
    const wakeup = new Wakeup(signals);
    const unsubscribe = this.notifier?.subscribe('tenantry_agent_commands', (cell) => {
      if (cell === cellId) wakeup.wake();
    });
    const unwatch = this.notifier?.watch(() => wakeup.wake());
    try {
      for (;;) {
        if (closing.aborted) return [];
        wakeup.take();
        if (await asPlatform(this.db, (trx) => hasOpenCommands(trx, cellId)))
          return asPlatform(this.db, (trx) => pullCommands(trx, cellId));
        const left = deadline - Date.now();
        if (left <= 0 || signals.some((x) => x.aborted)) return [];
        await wakeup.sleep(this.pollMs(left));
      }
    } finally {
      unsubscribe?.();
      unwatch?.();
      wakeup.close();
    }
  }

  /** The public key the agent of `cellId` says it has now (what is handed to it in a command is sealed for it). */
  async commandKey(cellId: string, key: string): Promise<void> {
    await asPlatform(this.db, (trx) =>
      sql`update cell_agents set command_key = ${key}
        where cell_id = ${cellId} and command_key is distinct from ${key}`.execute(trx),
    );
  }

  /** The agent's result of a command of its own cell; another cell's command is refused (403). */
  async commandResult(
    cellId: string,
    id: string,
    attempts: number,
    outcome: CommandOutcome,
  ): Promise<{ accepted: boolean }> {
    return asPlatform(this.db, async (trx) => {
      const r = await sql<{
        cell_id: string;
      }>`select cell_id from cell_agent_commands where id = ${id}`.execute(trx);
      const owner = r.rows[0]?.cell_id;
      if (!owner) throw new NotFoundError('agent.command_not_found', `No command ${id}.`, { ref: id });
      if (owner !== cellId)
        throw new ForbiddenError(
          'agent.other_cell',
          "An agent's credential reaches its own cell's commands only.",
        );
      return { accepted: await completeCommand(trx, cellId, id, attempts, outcome) };
    });
  }

  /** Objects of the agent's cell by id; an id of another cell is refused (403). */
  async items(cellId: string, ids: string[]): Promise<HashedItem[]> {
    return asPlatform(this.db, async (trx) => {
      await this.refuseOtherCells(trx, cellId, ids);
      return cellDesiredItems(trx, cellId, ids);
    });
  }

  private async refuseOtherCells(trx: Trx, cellId: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const r = await sql<{ n: string }>`
      select count(*) as n from integration_resources r left join tenants t on t.id = r.tenant_id
      where r.id = any(${ids}::uuid[]) and t.cell_id is distinct from ${cellId}::uuid`.execute(trx);
    if (Number(r.rows[0]?.n ?? 0) > 0)
      throw new ForbiddenError(
        'agent.other_cell',
        "An agent's credential reaches its own cell's objects only.",
      );
  }

  /**
   * Observed status from the agent. Every id must be of its cell (else 403 before anything is
   * written); a report for a generation that is no longer the object's is stale and skipped
   * (the agent gets the new desired state from the feed).
   */
  async report(cellId: string, reports: StatusReport[]): Promise<{ accepted: number; stale: number }> {
    // The last report of an object in the request counts.
    const last = new Map(reports.map((r) => [r.id, r]));
    const ids = [...last.keys()];
    return asPlatform(this.db, async (trx) => {
      await this.refuseOtherCells(trx, cellId, ids);
      if (ids.length === 0) return { accepted: 0, stale: 0 };
      const rows = (
        await sql<ObjectRow>`select * from integration_resources where id = any(${ids}::uuid[])`.execute(trx)
      ).rows;
      const byId = new Map(rows.map((r) => [r.id, r]));
      const current: CurrentReport[] = [];
      for (const rep of last.values()) {
        const row = byId.get(rep.id);
        if (
          !row ||
          row.phase === 'Deleted' ||
          Number(row.generation) !== rep.generation ||
          (rep.phase === 'Deleted' && !row.deleted_at)
        )
          continue;
        const phase: Phase | 'Terminating' =
          row.deleted_at && rep.phase !== 'Deleted' ? 'Terminating' : (rep.phase as Phase);
        current.push({ report: rep, row, phase });
      }
      const written = await writeStatusReports(trx, systemContext(agentPrincipal(cellId)), current);
      return { accepted: written.size, stale: reports.length - written.size };
    });
  }

  /**
   * Renews the agent's lease. `resend` tells an agent that its cell was marked Unknown since its
   * last heartbeat, so it reports every object's status again.
   */
  async heartbeat(
    cellId: string,
    sessionId: string | null,
    userAgent?: string,
  ): Promise<{ connection: 'Connected'; resend: boolean }> {
    const version = agentVersionOf(userAgent);
    return asPlatform(this.db, async (trx) => {
      const prev = await sql<{ connection: string }>`
        select connection from cell_agents
        where cell_id = ${cellId} and session_id = ${sessionId} and revoked_at is null for update`.execute(
        trx,
      );
      const was = prev.rows[0]?.connection;
      if (was)
        await sql`
          update cell_agents set last_heartbeat_at = now(), connection = 'Connected',
            version = coalesce(${version}, version),
            connection_since = case when connection = 'Connected' then connection_since else now() end
          where cell_id = ${cellId}`.execute(trx);
      if (!was)
        throw new UnauthorizedError('session.revoked', "This agent credential is no longer the cell's.");
      if (was !== 'Connected')
        await setCellCondition(
          trx,
          cellId,
          agentCondition('True', 'Heartbeat', 'The agent is heartbeating again.'),
        );
      return { connection: 'Connected', resend: was !== 'Connected' };
    });
  }
}
