import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RequestContext } from '../context/request-context.js';
import { isUuid } from '../domain/identifiers.js';
import { ValidationError } from '../errors/errors.js';
import { definitionOf, KIND_PATHS, type Kind } from '../registry/kinds/index.js';
import type { ObjectView } from '../registry/kinds/kind.js';
import type { RegistryApi } from '../registry/registry.service.js';
import type { ApiObject } from '../registry/representation.js';
import type { PromotionsService } from '../releases/promotions.service.js';
import { OPEN_STATES, type StepRecord, WORKFLOW_STATES, type Workflow } from '../workflows/workflow.js';
import type { WorkflowsService } from '../workflows/workflows.service.js';
import { type Html, html } from './html.js';
import { BASE, pager, qs, type Section } from './layout.js';

/**
 * The console's views of the capabilities that came after it: workflows (with their steps, live
 * while they run), runtime objects (services, scaling policies, configurations),
 * releases, pipelines and promotions (with approve), and the agent of each cell. Each route names
 * the API action it mirrors, so the same Cedar decision and tenant check run before it; the data
 * comes from the domains' services in the caller's scope, so a tenant admin sees only its tenant.
 */
export interface ConsoleViewDeps {
  registry: RegistryApi;
  workflows: WorkflowsService;
  promotions: PromotionsService;
}

/** What the console's routes share (src/console/console.routes.ts). */
export interface ConsoleKit {
  ctxOf(request: FastifyRequest): RequestContext;
  send(reply: FastifyReply, body: Html, status?: number): FastifyReply;
  full(
    request: FastifyRequest,
    reply: FastifyReply,
    title: string,
    section: Section | undefined,
    body: Html,
  ): FastifyReply;
}

const PAGE = 25;
/** How often a fragment that shows something still running asks again. */
const POLL = 'every 1s';
export const one = (v: unknown): string | undefined =>
  typeof v === 'string' && v.length > 0 ? v : Array.isArray(v) && typeof v[0] === 'string' ? v[0] : undefined;
export const hrefOf = (kind: Kind, ref: string) => `${BASE}/${KIND_PATHS[kind]}/${encodeURIComponent(ref)}`;

const query = (request: FastifyRequest) => (request.query ?? {}) as Record<string, unknown>;
/**
 * The keyset cursor of a list newest first (workflows, promotions): the id of the previous page's
 * last row; anything else is no cursor (the first page).
 */
function cursorOf(request: FastifyRequest): string | undefined {
  const c = one(query(request).cursor);
  return c && isUuid(c) ? c : undefined;
}

export const time = (iso: string | null | undefined) =>
  iso ? html`<time datetime="${iso}">${iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}</time>` : html`—`;
export const stateBadge = (state: string) =>
  html`<span class="badge state-${state.toLowerCase()}">${state}</span>`;

/** Sub-navigation of a section with several lists. */
function tabs(items: readonly (readonly [string, string])[], current: string): Html {
  return html`<nav class="tabs" aria-label="Lists"><ul>${items.map(
    ([href, label]) =>
      html`<li><a href="${BASE}/${href}"${href === current ? html` aria-current="page"` : ''}>${label}</a></li>`,
  )}</ul></nav>`;
}
const RUNTIME_TABS = [
  ['services', 'Services'],
  ['scaling-policies', 'Scaling policies'],
  ['configurations', 'Configurations'],
] as const;
const RELEASE_TABS = [
  ['releases', 'Releases'],
  ['pipelines', 'Pipelines'],
  ['promotions', 'Promotions'],
] as const;

export function stepsTable(steps: StepRecord[], caption: string): Html {
  return html`<table><caption>${caption}</caption>
<thead><tr><th scope="col">#</th><th scope="col">Step</th><th scope="col">State</th><th scope="col">Attempts</th><th scope="col">Started</th><th scope="col">Ended</th><th scope="col">Error</th></tr></thead>
<tbody>${steps.map(
    (s) =>
      html`<tr><td>${s.position}</td><td>${s.name}</td><td>${stateBadge(s.state)}</td><td>${s.attempts}</td><td>${time(s.startedAt)}</td><td>${time(s.endedAt)}</td><td>${s.error ?? ''}</td></tr>`,
  )}</tbody></table>`;
}

/** An open workflow: its fragments ask again until it ends. */
export const isOpen = (w: Pick<Workflow, 'state'>) => OPEN_STATES.includes(w.state);
/** `tenantry get` headers (`READY REPLICAS`) as words (`Ready replicas`). */
const headerOf = (h: string) => `${h[0]}${h.slice(1).toLowerCase()}`;
/** The owning tenant of a tenant's object: its slug where the spec names it, else its UUID. */
function tenantLink(o: ApiObject): Html {
  const slug = (o.spec as { tenant?: unknown }).tenant;
  const uuid = o.metadata.tenantUuid ?? o.metadata.tenant;
  if (typeof slug === 'string') return html`<a href="${hrefOf('Tenant', slug)}">${slug}</a>`;
  if (!uuid) return html`—`;
  return html`<a href="${hrefOf('Tenant', uuid)}" title="${uuid}">${uuid.slice(0, 8)}…</a>`;
}

export function registerConsoleViews(c: FastifyInstance, deps: ConsoleViewDeps, kit: ConsoleKit): void {
  const { registry, workflows } = deps;
  const { ctxOf, send, full } = kit;

  // --- workflows -----------------------------------------------------------------------------
  const workflowRow = (w: Workflow & { tenantSlug?: string | null }) =>
    html`<tr><td><a href="${BASE}/workflows/${w.id}">${w.type}</a></td><td>${stateBadge(w.state)}</td><td>${w.actor.principal}</td><td>${time(w.createdAt)}</td><td>${time(w.finishedAt)}</td><td>${w.error ?? ''}</td></tr>`;
  const workflowHead = html`<thead><tr><th scope="col">Workflow</th><th scope="col">State</th><th scope="col">By</th><th scope="col">Started</th><th scope="col">Finished</th><th scope="col">Error</th></tr></thead>`;

  c.get(
    '/tenants/:ref/workflows',
    { config: { console: true, action: 'workflow.list', tenantParam: 'ref' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref } = request.params as { ref: string };
      const { items } = await workflows.list(ctx, { tenant: ref, limit: 5 });
      const newest = items[0];
      const detail = newest ? await workflows.get(ctx, newest.id) : undefined;
      const self = `${hrefOf('Tenant', ref)}/workflows`;
      // While a workflow runs the fragment replaces itself every second; once none runs it stops.
      const live = items.some(isOpen);
      return send(
        reply,
        html`<div id="workflows"${live ? html` hx-get="${self}" hx-trigger="${POLL}" hx-swap="outerHTML"` : ''}>
${
  detail
    ? html`<p>Newest: <a href="${BASE}/workflows/${detail.id}">${detail.type}</a> ${stateBadge(detail.state)}${detail.error ? html` <span class="bad">${detail.error}</span>` : ''}${live ? html` <small>(updating live)</small>` : ''}</p>
${stepsTable(detail.steps, `Steps of ${detail.type}`)}
<table><caption>Newest workflows of this tenant</caption>${workflowHead}<tbody>${items.map(workflowRow)}</tbody></table>
<p><a href="${BASE}/workflows${qs({ tenant: ref })}">All workflows of this tenant</a></p>`
    : html`<p>No workflows yet.</p>`
}</div>`,
      );
    },
  );

  c.get(
    '/workflows',
    { config: { console: true, action: 'workflow.list' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const q = query(request);
      const tenant = one(q.tenant);
      const s = one(q.state);
      const state = s && (WORKFLOW_STATES as readonly string[]).includes(s) ? s : undefined;
      const cursor = cursorOf(request);
      const { items, nextCursor } = await workflows.list(ctx, { tenant, state, limit: PAGE, cursor });
      const body = html`<form method="get" action="${BASE}/workflows" role="search">
<label for="w-tenant">Tenant (slug or UUID)</label><input id="w-tenant" name="tenant" value="${tenant ?? ''}">
<label for="w-state">State</label><select id="w-state" name="state">
${['', ...WORKFLOW_STATES].map((o) => html`<option value="${o}"${state === o ? html` selected` : ''}>${o || 'any'}</option>`)}
</select> <button type="submit">Filter</button></form>
<table><caption>Workflows, newest first</caption>${workflowHead}<tbody>${items.map(workflowRow)}</tbody></table>
${pager(nextCursor ? `${BASE}/workflows${qs({ tenant, state, cursor: nextCursor })}` : null)}`;
      return full(request, reply, 'Workflows', 'workflows', body);
    },
  );

  const workflowSteps = async (ctx: RequestContext, id: string) => {
    const w = await workflows.get(ctx, id);
    const self = `${BASE}/workflows/${id}/steps`;
    return html`<div id="steps"${isOpen(w) ? html` hx-get="${self}" hx-trigger="${POLL}" hx-swap="outerHTML"` : ''}>
<p>State ${stateBadge(w.state)}${isOpen(w) ? html` <small>(updating live)</small>` : ''} · attempts ${w.attempts} · started ${time(w.createdAt)} · finished ${time(w.finishedAt)}</p>
${w.error ? html`<div class="error" role="alert">${w.error}</div>` : ''}
${stepsTable(w.steps, 'Steps')}</div>`;
  };
  /** Retry (a Waiting workflow) and cancel (an open one), as /v1/workflows/:id/retry and /cancel. */
  const workflowActions = (w: Workflow) =>
    html`<p>${w.state === 'Waiting' ? html`<button type="button" hx-post="${BASE}/workflows/${w.id}/retry" hx-target="#workflow-result">Retry the failed step</button> ` : ''}${
      ['Pending', 'Running', 'Waiting'].includes(w.state)
        ? html`<button type="button" hx-post="${BASE}/workflows/${w.id}/cancel" hx-target="#workflow-result" hx-confirm="Cancel this ${w.type} workflow? Its completed steps are undone.">Cancel the workflow</button>`
        : ''
    }</p><div id="workflow-result" aria-live="polite"></div>`;
  c.get(
    '/workflows/:id',
    { config: { console: true, action: 'workflow.read' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { id } = request.params as { id: string };
      const w = await workflows.get(ctx, id);
      const done = one(query(request).done);
      const body = html`${done ? html`<p role="status" class="ok">Done: ${done === 'retry' ? 'the failed step runs again' : 'cancel requested; completed steps are undone'}.</p>` : ''}
<p>Tenant ${w.tenantSlug ? html`<a href="${hrefOf('Tenant', w.tenantSlug)}">${w.tenantSlug}</a>` : w.tenantId} · by ${w.actor.principal} · <code>${w.id}</code></p>
${workflowActions(w)}
${await workflowSteps(ctx, id)}
<section aria-labelledby="input-h"><h2 id="input-h">Input</h2><pre class="yaml" tabindex="0" aria-label="Input">${JSON.stringify(w.input, null, 2)}</pre></section>`;
      return full(request, reply, `Workflow ${w.type}`, 'workflows', body);
    },
  );
  c.get(
    '/workflows/:id/steps',
    { config: { console: true, action: 'workflow.read' }, schema: { hide: true } },
    async (request, reply) =>
      send(reply, await workflowSteps(ctxOf(request), (request.params as { id: string }).id)),
  );

  for (const verb of ['retry', 'cancel'] as const)
    c.post(
      `/workflows/:id/${verb}`,
      { config: { console: true, action: `workflow.${verb}` }, schema: { hide: true } },
      async (request, reply) => {
        const ctx = ctxOf(request);
        const { id } = request.params as { id: string };
        const w = verb === 'retry' ? await workflows.retry(ctx, id) : await workflows.cancel(ctx, id);
        return reply
          .code(204)
          .header('hx-redirect', `${BASE}/workflows/${w.id}${qs({ done: verb })}`)
          .send();
      },
    );

  // --- lists of registry kinds (runtime, releases, pipelines) --------------------------------
  /** A page of a kind, with the kind's own `tenantry get` columns (one definition, src/registry/kinds). */
  const kindList = (kind: Kind, section: Section, title: string, nav: Html) => {
    const def = definitionOf(kind);
    const columns = def.cli.columns.filter((col) => col.header !== 'NAME');
    const tenantScoped = 'tenant' in def.filters;
    c.get(
      `/${KIND_PATHS[kind]}`,
      { config: { console: true, action: `${kind.toLowerCase()}.read` }, schema: { hide: true } },
      async (request, reply) => {
        const ctx = ctxOf(request);
        const q = query(request);
        const cursor = one(q.cursor);
        const tenant = tenantScoped ? one(q.tenant) : undefined;
        const search = one(q.q);
        const filters: Record<string, string> = {
          ...(tenant ? { tenant } : {}),
          ...(search ? { search } : {}),
        };
        const res = await registry.list(ctx, kind, { limit: PAGE, cursor, filters });
        const now = Date.now();
        const body = html`${nav}
<form method="get" action="${BASE}/${KIND_PATHS[kind]}" role="search">
${tenantScoped ? html`<label for="k-tenant">Tenant (slug or UUID)</label><input id="k-tenant" name="tenant" value="${tenant ?? ''}"> ` : ''}
<label for="k-q">Search by slug</label><input id="k-q" name="q" type="search" value="${search ?? ''}"> <button type="submit">Filter</button></form>
<table><caption>${title}</caption>
<thead><tr><th scope="col">Name</th>${tenantScoped ? html`<th scope="col">Tenant</th>` : ''}${columns.map((col) => html`<th scope="col">${headerOf(col.header)}</th>`)}</tr></thead>
<tbody>${res.items.map(
          (o: ApiObject) =>
            html`<tr><td><a href="${hrefOf(kind, o.metadata.slug)}">${o.metadata.name}</a></td>${tenantScoped ? html`<td>${tenantLink(o)}</td>` : ''}${columns.map(
              (col) => html`<td>${col.value(o as unknown as ObjectView, now)}</td>`,
            )}</tr>`,
        )}</tbody></table>
${res.items.length === 0 ? html`<p>None${tenant || search ? ' match' : ' yet'}.</p>` : ''}
${pager(res.nextCursor ? `${BASE}/${KIND_PATHS[kind]}${qs({ tenant, q: search, cursor: res.nextCursor })}` : null)}`;
        return full(request, reply, title, section, body);
      },
    );
  };
  kindList('Service', 'runtime', 'Services', tabs(RUNTIME_TABS, 'services'));
  kindList('ScalingPolicy', 'runtime', 'Scaling policies', tabs(RUNTIME_TABS, 'scaling-policies'));
  kindList('Configuration', 'runtime', 'Configurations', tabs(RUNTIME_TABS, 'configurations'));
  kindList('Release', 'releases', 'Releases', tabs(RELEASE_TABS, 'releases'));
  kindList('Pipeline', 'releases', 'Pipelines', tabs(RELEASE_TABS, 'pipelines'));
  c.get('/runtime', { config: { console: true, public: true }, schema: { hide: true } }, (_q, reply) =>
    reply.redirect(`${BASE}/services`, 303),
  );

  // --- promotions, with approve --------------------------------------------------------------
  const PROMOTION_STATES = ['AwaitingApproval', 'Running', 'Succeeded', 'Failed', 'Cancelled'];
  c.get(
    '/promotions',
    { config: { console: true, action: 'promotion.list' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const q = query(request);
      const s = one(q.state);
      const state = s && PROMOTION_STATES.includes(s) ? s : undefined;
      const system = one(q.system);
      const cursor = cursorOf(request);
      const { items, nextCursor } = await deps.promotions.list(ctx, {
        ...(system ? { system } : {}),
        ...(state ? { state } : {}),
        limit: PAGE,
        cursor,
      });
      const body = html`${tabs(RELEASE_TABS, 'promotions')}
<form method="get" action="${BASE}/promotions" role="search">
<label for="p-system">System</label><input id="p-system" name="system" value="${system ?? ''}">
<label for="p-state">State</label><select id="p-state" name="state">
${['', ...PROMOTION_STATES].map((o) => html`<option value="${o}"${state === o ? html` selected` : ''}>${o || 'any'}</option>`)}
</select> <button type="submit">Filter</button></form>
<table><caption>Promotions, newest first</caption>
<thead><tr><th scope="col">Promotion</th><th scope="col">Mode</th><th scope="col">State</th><th scope="col">Approvals</th><th scope="col">Requested by</th><th scope="col">Requested</th><th scope="col">Finished</th></tr></thead>
<tbody>${items.map(
        (
          p,
        ) => html`<tr><td><a href="${BASE}/promotions/${p.id}">${p.system}@${p.version} to ${p.stage}</a></td><td>${p.mode}</td><td>${stateBadge(p.state)}</td>
<td>${p.approvals.length} of ${p.requiredApprovals}</td><td>${p.requestedBy.principal}</td><td>${time(p.createdAt)}</td><td>${time(p.finishedAt)}</td></tr>`,
      )}</tbody></table>
${items.length === 0 ? html`<p>No promotions${state || system ? ' match' : ' yet'}.</p>` : ''}
${pager(nextCursor ? `${BASE}/promotions${qs({ system, state, cursor: nextCursor })}` : null)}`;
      return full(request, reply, 'Promotions', 'releases', body);
    },
  );

  const promotionBody = async (ctx: RequestContext, id: string, note?: Html) => {
    const p = await deps.promotions.get(ctx, id);
    const live = p.state === 'Running';
    return html`<div id="promotion"${live ? html` hx-get="${BASE}/promotions/${id}/detail" hx-trigger="every 2s" hx-swap="outerHTML"` : ''}>
${note ?? ''}
<p>State ${stateBadge(p.state)}${live ? html` <small>(updating live)</small>` : ''} · pipeline <a href="${hrefOf('Pipeline', p.pipeline)}">${p.pipeline}</a> · ${p.mode} · requested by ${p.requestedBy.principal}${p.author ? html` · release author ${p.author}` : ''}</p>
${p.error ? html`<div class="error" role="alert">${p.error}</div>` : ''}
<section aria-labelledby="approvals-h"><h2 id="approvals-h">Approvals (${p.approvals.length} of ${p.requiredApprovals})</h2>
<ul>${p.approvals.map((a) => html`<li>${a.principal} at ${time(a.at)}</li>`)}</ul>
${
  p.state === 'AwaitingApproval'
    ? html`<form hx-post="${BASE}/promotions/${id}/approve" hx-target="#approve-result">
<p><label for="approve-comment">Comment (optional)</label><input id="approve-comment" name="comment" maxlength="500"></p>
<button type="submit">Approve ${p.system}@${p.version} to ${p.stage}</button></form>
<p><small>Four eyes: neither the requester nor the release's author can approve.</small></p>
<div id="approve-result" aria-live="polite"></div>`
    : ''
}</section>
${p.state === 'Running' ? html`<p><a href="${BASE}/workflows/${p.id}">The promotion's workflow and its steps</a></p>` : ''}
<table><caption>Tenants it covers</caption>
<thead><tr><th scope="col">Wave</th><th scope="col">Tenant</th><th scope="col">Deployment</th><th scope="col">State</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Reason</th></tr></thead>
<tbody>${p.targets.map(
      (
        t,
      ) => html`<tr><td>${t.wave}</td><td><a href="${hrefOf('Tenant', t.tenant)}">${t.tenant}</a></td><td>${t.deployment}</td><td>${stateBadge(t.state)}</td>
<td>${t.fromVersion ?? '—'}</td><td>${t.toVersion}</td><td>${t.reason ?? ''}${t.deferredUntil ? html` (until ${time(t.deferredUntil)})` : ''}</td></tr>`,
    )}</tbody></table>
${p.targets.length === 0 ? html`<p>The tenants are chosen when the promotion's workflow starts its first wave.</p>` : ''}</div>`;
  };

  c.get(
    '/promotions/:id',
    { config: { console: true, action: 'promotion.read' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { id } = request.params as { id: string };
      const p = await deps.promotions.get(ctx, id);
      const approved = one(query(request).approved);
      const note = approved ? html`<p role="status" class="ok">Approved by ${approved}.</p>` : undefined;
      return full(
        request,
        reply,
        `Promotion of ${p.system}@${p.version} to ${p.stage}`,
        'releases',
        html`${tabs(RELEASE_TABS, 'promotions')}${await promotionBody(ctx, id, note)}`,
      );
    },
  );
  c.get(
    '/promotions/:id/detail',
    { config: { console: true, action: 'promotion.read' }, schema: { hide: true } },
    async (request, reply) =>
      send(reply, await promotionBody(ctxOf(request), (request.params as { id: string }).id)),
  );
  c.post(
    '/promotions/:id/approve',
    { config: { console: true, action: 'promotion.approve' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { id } = request.params as { id: string };
      const comment = one((request.body as Record<string, unknown> | undefined)?.comment);
      if (comment && comment.length > 500)
        throw ValidationError.field('/comment', 'field.too_long', 'A comment has at most 500 characters.');
      await deps.promotions.approve(ctx, id, comment);
      return reply
        .code(204)
        .header('hx-redirect', `${BASE}/promotions/${id}${qs({ approved: ctx.actor.principal })}`)
        .send();
    },
  );
}
