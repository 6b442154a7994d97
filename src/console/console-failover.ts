import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Authorizer } from '../authz/authorizer.js';
import type { RequestContext } from '../context/request-context.js';
import { ForbiddenError, TenantryError } from '../errors/errors.js';
import type { RegistryApi } from '../registry/registry.service.js';
import type { Consistency } from '../tenant-migrations/failover.js';
import type { Failover, FailoverPlanView, FailoverService } from '../tenant-migrations/failover.service.js';
import type { WorkflowsService } from '../workflows/workflows.service.js';
import { placementTable, verdictsTable } from './console-migrations.js';
import { type ConsoleKit, hrefOf, one, stateBadge, stepsTable, time } from './console-views.js';
import { type Html, html } from './html.js';
import { BASE, qs } from './layout.js';

/**
 * The console's standby and failover views (issue 19, region failover), on the pattern of the
 * migration views (console-migrations.ts): on a tenant's page its standby — region, state, lag in
 * bytes and seconds, last sync, last blob sync, the failover policy — refreshed live, and its
 * failovers; "Fail over…" shows the dry-run plan with the policy verdicts, or the refusal with its
 * code, then a confirmation naming the tenant; a failover's page shows the failover.region
 * workflow's steps live and ends with the data-loss window and the consistency checks.
 *
 * Every route names the API action it mirrors (`failover.read`, `failover.list`,
 * `tenant.failover`), so the same Cedar decision and tenant check run first, and everything goes
 * through the same FailoverService in the caller's scope: a tenant admin sees its tenant's standby
 * and failovers, and starts none (the service's rule: only the platform fails tenants over).
 */
export interface ConsoleFailoverDeps {
  registry: RegistryApi;
  workflows: WorkflowsService;
  failovers: FailoverService;
  authorizer: Authorizer;
}

const POLL = 'every 1s';
/** The standby panel asks again this often: the keeper measures every 15 s by default. */
const STANDBY_POLL = 'every 2s';

const failoverHref = (tenant: string, id: string) => `${hrefOf('Tenant', tenant)}/failovers/${id}`;
const binding = (b: Failover['from']) => html`${b.isolation} in ${b.cell} <small>(${b.region})</small>`;
const seconds = (s: number | null | undefined) =>
  s === null || s === undefined ? 'unknown' : `${Math.round(s * 10) / 10} s`;
const bytes = (b: number | null | undefined) => (b === null || b === undefined ? 'unknown' : `${b} bytes`);
const behind = (b: number | null | undefined) =>
  b === null || b === undefined ? 'lag unknown' : `${b} bytes behind`;

type BlobSync = { blobs?: number; bytes?: number; copied?: number; equal?: boolean; at?: string };

/** The standby's last blob sync per container, as the keeper recorded it. */
function blobSync(blobs: unknown): Html {
  const all = Object.values((blobs ?? {}) as Record<string, BlobSync | { unreachable: string }>);
  if (all.length === 0) return html`—`;
  return html`${all.map((b, i) =>
    'unreachable' in b
      ? html`${i ? '; ' : ''}unreachable: ${b.unreachable}`
      : html`${i ? '; ' : ''}${b.blobs ?? 0} blobs${b.bytes !== undefined ? `, ${b.bytes} bytes` : ''}${b.copied !== undefined ? `, ${b.copied} copied` : ''}, MD5s ${b.equal ? html`<span class="ok">equal</span>` : html`<span class="bad">differ</span>`}${b.at ? html` at ${time(b.at)}` : ''}`,
  )}`;
}

/** The post-failover checks: per table the rows beside the last known count, credentials, blobs. */
function consistencyView(c: unknown): Html {
  const cons = c as Partial<Consistency> | null;
  if (!cons?.databases) return html`<p>No consistency checks recorded yet.</p>`;
  return html`<p>Result: ${cons.consistent ? html`<strong class="ok">consistent</strong>` : html`<strong class="bad">inconsistent</strong>`} · checked ${time(cons.at)} against the counts of ${time(cons.lastKnownAt)}</p>
${Object.entries(cons.databases).map(
  ([
    rid,
    d,
  ]) => html`<table><caption>Rows of database ${rid.slice(0, 8)} after the failover: credentials ${d.credentialsWork ? html`<span class="ok">work</span>` : html`<span class="bad">refused</span>`}</caption>
<thead><tr><th scope="col">Table</th><th scope="col">Last known rows</th><th scope="col">Rows now</th><th scope="col">Delta</th></tr></thead>
<tbody>${d.tables.map(
    (t) =>
      html`<tr><td>${t.table}</td><td>${t.lastKnownRows ?? '—'}</td><td>${t.rows}</td><td>${t.delta === null ? '—' : t.delta < 0 ? html`<strong class="bad">${t.delta}</strong>` : t.delta}</td></tr>`,
  )}</tbody></table>`,
)}
${Object.keys(cons.blobs ?? {}).length ? html`<p>Blobs: ${blobSync(cons.blobs)}</p>` : ''}`;
}

export function registerConsoleFailoverViews(
  c: FastifyInstance,
  deps: ConsoleFailoverDeps,
  kit: ConsoleKit,
): void {
  const { failovers, workflows, registry, authorizer } = deps;
  const { ctxOf, send, full } = kit;

  /** Whether the caller may fail a tenant over, as the API decides it: Cedar, then platform only. */
  const mayFailOver = (ctx: RequestContext) =>
    ctx.scope.kind === 'platform' &&
    authorizer.decide(ctx, 'tenant.failover', {
      kind: 'Route',
      id: 'POST /v1/tenants/:ref/failover',
      tenantId: null,
      customerId: ctx.customerId ?? null,
    }).decision === 'allow';

  /** The tenant's standby, or null where it has none (yet, or any more). */
  const standbyOf = (ctx: RequestContext, ref: string) =>
    failovers.standby(ctx, ref).catch((err: unknown) => {
      if (err instanceof TenantryError && err.code === 'standby.not_found') return null;
      throw err;
    });

  const failoverRows = (items: (Failover & { tenantSlug: string })[], withTenant: boolean) =>
    html`${items.map(
      (
        f,
      ) => html`<tr><td><a href="${failoverHref(f.tenantSlug, f.id)}" aria-label="Failover ${f.id}">failover ${time(f.createdAt)}</a></td>
${withTenant ? html`<td><a href="${hrefOf('Tenant', f.tenantSlug)}">${f.tenantSlug}</a></td>` : ''}
<td>${stateBadge(f.state)}</td><td>${binding(f.from)}</td><td>${binding(f.to)}</td><td>${f.reason}</td>
<td>${seconds(f.standby.dataLossWindowSeconds)}</td><td>${consistent(f)}</td><td>${f.error ?? ''}</td></tr>`,
    )}`;
  const failoverHead = (withTenant: boolean) =>
    html`<thead><tr><th scope="col">Failover</th>${withTenant ? html`<th scope="col">Tenant</th>` : ''}<th scope="col">State</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Reason</th><th scope="col">Data-loss window</th><th scope="col">Consistency</th><th scope="col">Error</th></tr></thead>`;

  // --- failovers newest first, of every tenant in scope or of one (beside the migrations list) ---
  c.get(
    '/failovers',
    { config: { console: true, action: 'failover.list' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const tenant = one((request.query as Record<string, unknown>).tenant);
      const items = await failovers.recent(ctx, { tenant, limit: 25 });
      const list =
        items.length === 0
          ? html`<p>No failovers${tenant ? ' of this tenant' : ''}.</p>`
          : html`<table><caption>Failovers, newest first</caption>${failoverHead(true)}<tbody>${failoverRows(items, true)}</tbody></table>`;
      if (request.headers['hx-request'] === 'true') return send(reply, list);
      return full(request, reply, 'Failovers', 'workflows', list);
    },
  );

  // --- a tenant's standby and failovers (a fragment of its page, live) ------------------------
  c.get(
    '/tenants/:ref/standby',
    { config: { console: true, action: 'failover.read', tenantParam: 'ref' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref } = request.params as { ref: string };
      const t = await registry.get(ctx, 'Tenant', ref);
      const slug = t.metadata.slug;
      const named = (t.spec as { standby?: { region?: string; failoverAfterChecks?: number } }).standby;
      const [s, history] = await Promise.all([
        standbyOf(ctx, ref),
        failovers.recent(ctx, { tenant: ref, limit: 5 }),
      ]);
      const live = !!named || (!!s && s.state !== 'FailedOver') || history.some((f) => f.state === 'Running');
      const self = `${hrefOf('Tenant', slug)}/standby`;
      const policy = named?.failoverAfterChecks
        ? `fails over by itself after ${named.failoverAfterChecks} checks in a row with the primary unreachable`
        : 'manual failover only (no failoverAfterChecks in the spec)';
      const panel = s
        ? html`<table><caption>Standby in ${s.region}</caption><tbody>
<tr><th scope="row">Region</th><td>${s.region}</td></tr>
<tr><th scope="row">State</th><td>${stateBadge(s.state)}</td></tr>
<tr><th scope="row">Lag</th><td>${bytes(s.lagBytes)} · ${seconds(s.lagSeconds)}</td></tr>
<tr><th scope="row">Last sync</th><td>${time(s.lastSyncAt)}</td></tr>
<tr><th scope="row">Measured</th><td>${time(s.measuredAt)}</td></tr>
<tr><th scope="row">Last blob sync</th><td>${blobSync(s.blobs)}</td></tr>
<tr><th scope="row">Failover policy</th><td>${named ? policy : '—'}</td></tr>
</tbody></table>
${s.error ? html`<div class="error" role="alert">${s.error}</div>` : ''}`
        : named?.region
          ? html`<p>Standby region ${named.region} named; the keeper is establishing it. Failover policy: ${policy}.</p>`
          : html`<p>No standby region named.</p>`;
      const start =
        s?.state === 'Streaming' && mayFailOver(ctx)
          ? html`<p><a class="button" href="${hrefOf('Tenant', slug)}/failover">Fail over…</a></p>`
          : '';
      return send(
        reply,
        html`<div id="standby"${live ? html` hx-get="${self}" hx-trigger="${STANDBY_POLL}" hx-swap="outerHTML"` : ''}>${panel}${start}
${history.length ? html`<table><caption>Failovers of this tenant, newest first</caption>${failoverHead(false)}<tbody>${failoverRows(history, false)}</tbody></table>` : ''}</div>`,
      );
    },
  );

  // --- failing over: the standby, the dry-run plan or the refusal, the confirmation -------------
  const failoverCfg = { console: true, action: 'tenant.failover', tenantParam: 'ref' };
  c.get('/tenants/:ref/failover', { config: failoverCfg, schema: { hide: true } }, async (request, reply) => {
    const ctx = ctxOf(request);
    const { ref } = request.params as { ref: string };
    const t = await registry.get(ctx, 'Tenant', ref);
    if (!mayFailOver(ctx))
      throw new ForbiddenError('migration.platform_only', 'Only the platform migrates tenants.');
    const slug = t.metadata.slug;
    const s = await standbyOf(ctx, ref);
    const placement = (t.status.placement ?? {}) as { region?: string; cell?: string };
    const page = html`<p>Tenant <a href="${hrefOf('Tenant', slug)}">${slug}</a> is served from cell ${placement.cell ?? '—'}, region ${placement.region ?? '—'}${s ? html`; its standby in ${s.region} is ${stateBadge(s.state)}, ${behind(s.lagBytes)}${s.measuredAt ? html` at ${time(s.measuredAt)}` : ' (never measured)'}` : '; it has no standby'}.
A failover promotes the standby: writes since its last sync may be lost. Nothing changes until you confirm: first the plan and the policy verdicts are shown (a dry run).</p>
<form hx-post="${hrefOf('Tenant', slug)}/failover/plan" hx-target="#plan" aria-labelledby="failover-h">
<h2 id="failover-h">Fail over to the standby</h2>
<button type="submit">Show the plan</button>
</form>
<div id="plan" aria-live="polite"></div>`;
    return full(request, reply, `Fail over ${slug}`, 'tree', page);
  });

  const confirmFailover = (slug: string, plan: FailoverPlanView, error?: string) =>
    html`<section aria-labelledby="plan-h"><h2 id="plan-h">Plan: fail ${slug} over to ${plan.to.region}</h2>
${placementTable(plan)}
<p>Standby ${behind(plan.standby.lagBytes)} at the last measurement; last sync ${time(plan.standby.lastSyncAt)}: <strong>data-loss window ${seconds(plan.standby.dataLossWindowSeconds)}</strong> if it failed over now.</p>
${verdictsTable(plan.verdicts)}
<h3>Steps the workflow will run</h3>
<ol>${plan.steps.map((s) => html`<li>${s}</li>`)}</ol>
<form hx-post="${hrefOf('Tenant', slug)}/failover" hx-target="#plan" aria-labelledby="confirm-h">
<h3 id="confirm-h">Fail tenant ${slug} over to ${plan.to.region}?</h3>
${error ? html`<div class="error" role="alert">${error}</div>` : ''}
<input type="hidden" name="region" value="${plan.to.region}">
<p><label for="confirm-slug">Type <strong>${slug}</strong> to confirm</label>
<input id="confirm-slug" name="confirm" autocomplete="off" required></p>
<button type="submit">Fail over ${slug}</button>
<button type="button" onclick="document.getElementById('plan').replaceChildren()">Cancel</button>
</form></section>`;

  /**
   * The dry run as the API gives it; a refusal (no streaming standby, lag unknown, a workflow in
   * progress, residency, capacity, freeze) shown in place with its code and message, and its status.
   */
  const planOr = async (ctx: RequestContext, ref: string, region: string | undefined) => {
    try {
      return (await failovers.start(ctx, ref, region ? { region } : {}, {
        dryRun: true,
      })) as FailoverPlanView;
    } catch (err) {
      if (isRefusal(err)) return err;
      throw err;
    }
  };
  const refusal = (slug: string, err: TenantryError) =>
    html`<section aria-labelledby="plan-h"><h2 id="plan-h">Plan: fail ${slug} over</h2>
<div class="error" role="alert"><strong>Refused</strong> (${err.status}): ${err.message} <code>${err.code}</code></div>
${verdictsTable([{ rule: err.code.split('.').at(-1) ?? err.code, outcome: 'refuse', detail: err.message }])}
<p>Nothing was changed.</p></section>`;

  c.post(
    '/tenants/:ref/failover/plan',
    { config: failoverCfg, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref } = request.params as { ref: string };
      const slug = (await registry.get(ctx, 'Tenant', ref)).metadata.slug;
      const plan = await planOr(ctx, ref, regionOf(request));
      if (plan instanceof TenantryError) return send(reply, refusal(slug, plan), plan.status);
      return send(reply, confirmFailover(slug, plan));
    },
  );

  c.post(
    '/tenants/:ref/failover',
    { config: failoverCfg, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref } = request.params as { ref: string };
      const slug = (await registry.get(ctx, 'Tenant', ref)).metadata.slug;
      const region = regionOf(request);
      if (one((request.body as Record<string, unknown> | undefined)?.confirm) !== slug) {
        // The plan again (the lag moves), with what went wrong.
        const plan = await planOr(ctx, ref, region);
        if (plan instanceof TenantryError) return send(reply, refusal(slug, plan), plan.status);
        return send(
          reply,
          confirmFailover(slug, plan, `Type "${slug}" exactly to fail this tenant over.`),
          422,
        );
      }
      try {
        const f = (await failovers.start(ctx, ref, region ? { region } : {}, { dryRun: false })) as Failover;
        return reply.code(204).header('hx-redirect', failoverHref(slug, f.id)).send();
      } catch (err) {
        if (err instanceof TenantryError && err.status < 500 && err.status !== 403 && err.status !== 404)
          return send(reply, refusal(slug, err), err.status);
        throw err;
      }
    },
  );

  // --- one failover: steps live, the data-loss window, fence, consistency ----------------------
  const detail = async (ctx: RequestContext, ref: string, id: string) => {
    const f = await failovers.get(ctx, ref, id);
    const w = await workflows.get(ctx, f.workflowId);
    const live = f.state === 'Running';
    const t = await registry.get(ctx, 'Tenant', ref);
    const now = (t.status.placement ?? {}) as { region?: string; cell?: string };
    const fence = Object.values((f.fence ?? {}) as Record<string, string>);
    const self = `${failoverHref(ref, id)}/detail`;
    return html`<div id="failover"${live ? html` hx-get="${self}" hx-trigger="${POLL}" hx-swap="outerHTML"` : ''}>
<p>State ${stateBadge(f.state)}${live ? html` <small>(updating live)</small>` : ''} · failover by ${f.actor.principal} (${f.reason}) · started ${time(f.createdAt)}</p>
${f.error ? html`<div class="error" role="alert">${f.error}</div>` : ''}
<table><caption>Summary</caption><tbody>
<tr><th scope="row">From</th><td>${binding(f.from)}</td></tr>
<tr><th scope="row">To</th><td>${binding(f.to)}</td></tr>
<tr><th scope="row">Standby at the start</th><td>${behind(f.standby.lagBytes)}; last sync ${time(f.standby.lastSyncAt)}</td></tr>
<tr><th scope="row">Data-loss window</th><td>${seconds(f.standby.dataLossWindowSeconds)}</td></tr>
<tr><th scope="row">Failed over</th><td>${time(f.failedOverAt)}</td></tr>
<tr><th scope="row">Old primary fenced</th><td>${f.fencedAt ? time(f.fencedAt) : fence.length ? `not yet (${fence.join('; ')})` : '—'}</td></tr>
<tr><th scope="row">Served from now</th><td>cell ${now.cell ?? '—'}, region ${now.region ?? '—'}</td></tr>
</tbody></table>
<section aria-labelledby="steps-h"><h2 id="steps-h">Steps</h2>
<p>Workflow <a href="${BASE}/workflows/${w.id}">${w.type}</a> ${stateBadge(w.state)}</p>
${stepsTable(w.steps, 'Steps of the failover')}</section>
<section aria-labelledby="consistency-h"><h2 id="consistency-h">Consistency</h2>
${consistencyView(f.consistency)}</section></div>`;
  };

  const readCfg = { console: true, action: 'failover.read', tenantParam: 'ref' };
  c.get(
    '/tenants/:ref/failovers/:id',
    { config: readCfg, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref, id } = request.params as { ref: string; id: string };
      const slug = (await registry.get(ctx, 'Tenant', ref)).metadata.slug;
      const page = html`<p>Tenant <a href="${hrefOf('Tenant', slug)}">${slug}</a> · <code>${id}</code> · <a href="${BASE}/migrations${qs({ tenant: slug })}">Migrations and failovers of this tenant</a></p>
${await detail(ctx, ref, id)}`;
      return full(request, reply, `Failover of ${slug}`, 'workflows', page);
    },
  );
  c.get(
    '/tenants/:ref/failovers/:id/detail',
    { config: readCfg, schema: { hide: true } },
    async (request, reply) => {
      const { ref, id } = request.params as { ref: string; id: string };
      return send(reply, await detail(ctxOf(request), ref, id));
    },
  );
}

/** The region the form names (the standby's by default); too long is the API's 400. */
function regionOf(request: FastifyRequest): string | undefined {
  return one((request.body as Record<string, unknown> | undefined)?.region)?.trim() || undefined;
}

/**
 * A refusal of the failover itself (a rule: standby, lag, residency, capacity, freeze, workflow),
 * shown in the plan's place; not seeing the tenant (404) or not being allowed (403) is the
 * console's error page, as for every other route.
 */
function isRefusal(err: unknown): err is TenantryError {
  return err instanceof TenantryError && err.status < 500 && err.status !== 403 && err.status !== 404;
}

/** The consistency checks at a glance. */
function consistent(f: Failover): Html | string {
  const c = f.consistency as Partial<Consistency> | null;
  if (!c || c.consistent === undefined) return '—';
  return c.consistent
    ? html`<span class="ok">Consistent</span>`
    : html`<span class="bad">Inconsistent</span>`;
}
