import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import formbody from '@fastify/formbody';
import { parseCookie, stringifySetCookie } from 'cookie';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AgentService } from '../agent/agent.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { Config } from '../config/config.js';
import type { RequestContext } from '../context/request-context.js';
import type { Db } from '../db/database.js';
import {
  allowedActions,
  LIFECYCLE_ACTIONS,
  type LifecycleAction,
  type LifecycleState,
} from '../domain/lifecycle.js';
import { ForbiddenError, UnauthorizedError, ValidationError } from '../errors/errors.js';
import type { EventsService } from '../events/events.service.js';
import { toProblem } from '../http/problem.js';
import type { Security } from '../identity/security.js';
import type { UsageService } from '../placement/usage.service.js';
import { KIND_PATHS, KINDS, type Kind } from '../registry/kinds/index.js';
import type { RegistryApi } from '../registry/registry.service.js';
import type { ApiObject } from '../registry/representation.js';
import type { PromotionsService } from '../releases/promotions.service.js';
import type { FailoverService } from '../tenant-migrations/failover.service.js';
import type { MigrationsService } from '../tenant-migrations/migrations.service.js';
import type { DeliveryStatus, WebhooksService } from '../webhooks/webhooks.service.js';
import type { WorkflowsService } from '../workflows/workflows.service.js';
import { registerConsoleAgentViews } from './console-agents.js';
import { registerConsoleFailoverViews } from './console-failover.js';
import { registerConsoleMigrationViews } from './console-migrations.js';
import {
  cookieName,
  csrfMatches,
  defaultSessionKeyFile,
  loadSessionKey,
  newSession,
  SessionCodec,
  type SessionLimits,
  SignInCodes,
} from './console-session.js';
import { type ConsoleKit, hrefOf, one, registerConsoleViews } from './console-views.js';
import { type Html, html } from './html.js';
import {
  BASE,
  barePage,
  CSS,
  conditionsTable,
  page,
  pager,
  qs,
  type Section,
  statusBadges,
  yamlBlock,
} from './layout.js';
import { FLOW_SECONDS, type OidcFlow, OidcLogin } from './oidc-login.js';

export interface ConsoleDeps {
  config: Config;
  registry: RegistryApi;
  audit: AuditService;
  security: Security;
  events: EventsService;
  webhooks: WebhooksService;
  usage: UsageService;
  workflows: WorkflowsService;
  migrations: MigrationsService;
  failovers: FailoverService;
  promotions: PromotionsService;
  /** The cell agents' service (the agent page of a cell); absent without the built-in issuer. */
  agents?: AgentService;
}

/** The console's sign-in state shared by the session hook and the routes. */
export class ConsoleAuth {
  constructor(
    readonly codes: SignInCodes,
    readonly codec: SessionCodec,
    readonly limits: SessionLimits,
    readonly oidc: OidcLogin | undefined,
  ) {}

  static async create(config: Config, db: Db): Promise<ConsoleAuth> {
    return new ConsoleAuth(
      new SignInCodes(db),
      new SessionCodec(await loadSessionKey(defaultSessionKeyFile(config.dataDir))),
      config.console,
      config.console.oidc ? new OidcLogin(config.console.oidc) : undefined,
    );
  }

  /** A one-time sign-in link of the built-in issuer (a platform administrator), valid 15 minutes. */
  async signInLink(baseUrl: string): Promise<string> {
    return `${baseUrl}${BASE}/login?code=${await this.codes.issue()}`;
  }
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);
const PAGE = 25;
/** Rolling idle expiry: the cookie is re-issued at most once a minute. */
const TOUCH_MS = 60_000;

const isSecure = (request: FastifyRequest) => request.protocol === 'https';

/** HttpOnly, SameSite=Lax, Secure (and `__Host-`) over TLS; empty with maxAge 0 removes it. */
function setSessionCookie(reply: FastifyReply, request: FastifyRequest, value: string, maxAge: number) {
  const secure = isSecure(request);
  reply.header(
    'set-cookie',
    stringifySetCookie({
      name: cookieName(secure),
      value,
      httpOnly: true,
      secure,
      sameSite: 'lax',
      path: '/',
      maxAge,
    }),
  );
}

/**
 * Before the API's authentication hook (call before installSecurity): on console routes the session
 * cookie becomes the request's bearer token, so the same hook builds the same identity envelope,
 * the route's Cedar action is decided, tenant mentions are checked and refusals audited exactly as
 * for the API. A bearer header sent to the console is ignored (the cookie alone counts), and every
 * mutation needs the session's CSRF token in `X-CSRF-Token`.
 */
export function installConsoleSession(app: FastifyInstance, auth: ConsoleAuth): void {
  app.decorateRequest('consoleCsrf', undefined);
  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config;
    if (!config.console) return;
    delete request.headers.authorization;
    const opened = auth.codec.open(
      parseCookie(request.headers.cookie ?? '')[cookieName(isSecure(request))],
      auth.limits,
    );
    if (opened.kind !== 'valid') {
      if (config.public) return;
      throw new UnauthorizedError(
        opened.kind === 'expired' ? `console.session_${opened.why}_expired` : 'console.session_missing',
        opened.kind === 'expired'
          ? `The console session expired (${opened.why}).`
          : 'Sign in to the console.',
      );
    }
    const s = opened.session;
    request.consoleCsrf = s.csrf;
    if (config.public) return;
    if (!SAFE.has(request.method) && !csrfMatches(s, request.headers['x-csrf-token']))
      throw new ForbiddenError('csrf.invalid', 'This request lacks the console session’s CSRF token.');
    request.headers.authorization = `Bearer ${s.token}`;
    const now = Date.now();
    if (now - s.seenAt >= TOUCH_MS) {
      const left = Math.ceil((s.createdAt + auth.limits.absoluteSeconds * 1000 - now) / 1000);
      setSessionCookie(reply, request, auth.codec.seal({ ...s, seenAt: now }), left);
    }
  });
}

function asset(specifier: string): Buffer {
  return fs.readFileSync(createRequire(import.meta.url).resolve(specifier));
}

const many = (v: unknown): string[] =>
  typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];

const refOf = (o: ApiObject) => o.metadata.slug;

/** The console: server-rendered pages and htmx fragments, each one authorised like the API route it mirrors. */
export async function registerConsole(
  app: FastifyInstance,
  deps: ConsoleDeps,
  auth: ConsoleAuth,
): Promise<void> {
  const { registry, security } = deps;
  const htmx = asset('htmx.org/dist/htmx.min.js');
  const sse = asset('htmx-ext-sse/dist/sse.js');
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const close of open) close();
  });

  await app.register(
    async (c) => {
      await c.register(formbody, { bodyLimit: 64 * 1024 });
      const ctxOf = (request: FastifyRequest): RequestContext => {
        if (!request.ctx) throw new UnauthorizedError('console.session_missing', 'Sign in to the console.');
        return request.ctx;
      };
      const send = (reply: FastifyReply, body: Html, status = 200) =>
        reply
          .code(status)
          .type('text/html; charset=utf-8')
          .header('cache-control', 'no-store')
          .send(body.text);
      const full = (
        request: FastifyRequest,
        reply: FastifyReply,
        title: string,
        section: Section | undefined,
        body: Html,
      ) =>
        send(
          reply,
          page({
            title,
            ctx: ctxOf(request),
            csrf: request.consoleCsrf ?? '',
            ...(section ? { section } : {}),
            body,
          }),
        );
      const isHtmx = (request: FastifyRequest) => request.headers['hx-request'] === 'true';

      c.setErrorHandler((err, request, reply) => {
        // The API's own mapping (database errors, Fastify's client errors), shown as HTML.
        const p = toProblem(err, request);
        const { status, code } = p;
        if (status >= 500) request.log.error({ err }, 'console request failed');
        if (status === 401) {
          const to = `${BASE}/login${code.endsWith('_expired') ? '?expired=1' : ''}`;
          if (isHtmx(request)) return reply.code(401).header('hx-redirect', to).send('');
          return reply.code(303).header('location', to).send('');
        }
        const message =
          status >= 500 && status !== 503
            ? 'Something went wrong; the server log has the details.'
            : p.detail;
        const box = html`<div class="error" role="alert"><strong>${status}</strong> ${message} <code>${code}</code></div>`;
        if (isHtmx(request) || !request.ctx)
          return send(reply, isHtmx(request) ? box : barePage('Error', box), status);
        return send(
          reply,
          page({ title: 'Error', ctx: request.ctx, csrf: request.consoleCsrf ?? '', body: box }),
          status,
        );
      });
      c.setNotFoundHandler((_request, reply) =>
        send(
          reply,
          barePage(
            'Not found',
            html`<p>No such console page.</p><p><a href="${BASE}/tree">Hierarchy</a></p>`,
          ),
          404,
        ),
      );

      const pub = { console: true, public: true } as const;
      c.get('/assets/htmx.min.js', { config: pub, schema: { hide: true } }, (_q, reply) =>
        reply.type('text/javascript').header('cache-control', 'public, max-age=3600').send(htmx),
      );
      c.get('/assets/sse.js', { config: pub, schema: { hide: true } }, (_q, reply) =>
        reply.type('text/javascript').header('cache-control', 'public, max-age=3600').send(sse),
      );
      c.get('/assets/console.css', { config: pub, schema: { hide: true } }, (_q, reply) =>
        reply.type('text/css').header('cache-control', 'public, max-age=3600').send(CSS),
      );
      c.get('/', { config: pub, schema: { hide: true } }, (_q, reply) => reply.redirect(`${BASE}/tree`, 303));

      // --- sign-in -------------------------------------------------------------------------------
      const loginPage = (
        reply: FastifyReply,
        opts: { code?: string; error?: string; expired?: boolean },
        status = 200,
      ) =>
        send(
          reply,
          barePage(
            'Sign in to Tenantry',
            html`${opts.error ? html`<div class="error" role="alert">${opts.error}</div>` : ''}
${opts.expired ? html`<p role="status">Your session expired; sign in again.</p>` : ''}
${
  auth.oidc
    ? html`<p><a href="${BASE}/login/oidc">Sign in with ${new URL(auth.oidc.options.issuer).host}</a></p>`
    : ''
}
${
  opts.code
    ? html`<form method="post" action="${BASE}/login">
  <input type="hidden" name="code" value="${opts.code}">
  <p>This one-time link signs you in as a platform administrator of the built-in issuer.</p>
  <button type="submit">Sign in</button>
</form>`
    : ''
}
<form method="post" action="${BASE}/login">
  <p><label for="token">Access token</label><br>
  <textarea id="token" name="token" rows="4" cols="60" required aria-describedby="token-help"></textarea></p>
  <p id="token-help">A token of a trusted issuer, or of the built-in one: <code>npx tenantry token create --role platform-admin</code>
  (or <code>--tenant &lt;slug&gt; --role tenant-admin</code>). The first start of <code>tenantry serve</code> prints a one-time sign-in link.</p>
  <button type="submit">Sign in with token</button>
</form>`,
          ),
          status,
        );

      c.get('/login', { config: pub, schema: { hide: true } }, async (request, reply) => {
        const q = request.query as Record<string, unknown>;
        const code = one(q.code);
        return loginPage(reply, { ...(code ? { code } : {}), expired: q.expired !== undefined });
      });

      c.post('/login', { config: pub, schema: { hide: true } }, async (request, reply) => {
        // Before a session there is no CSRF token: the browser's Origin must be this server.
        const origin = request.headers.origin;
        if (origin !== undefined && origin !== `${request.protocol}://${request.host}`)
          return loginPage(reply, { error: 'Sign-in from another site is refused.' }, 403);
        const body = (request.body ?? {}) as Record<string, unknown>;
        const code = one(body.code);
        let token = one(body.token)?.trim();
        if (code) {
          if (!security.issuer || !(await auth.codes.redeem(code)))
            return loginPage(reply, { error: 'This sign-in link was used already or has expired.' }, 401);
          token = await security.issuer.mint({
            subject: 'console-admin',
            roles: ['platform-admin'],
            appId: 'tenantry-console',
            sessionId: randomUUID(),
            ttlSeconds: auth.limits.absoluteSeconds,
          });
        }
        if (!token) return loginPage(reply, { error: 'Give a sign-in link or a token.' }, 400);
        return signIn(request, reply, token);
      });

      /** Starts a session for `token` once the API's authentication accepts it. */
      const signIn = async (request: FastifyRequest, reply: FastifyReply, token: string) => {
        try {
          // The token must give an identity envelope now (valid, trusted, live session).
          await security.authenticator.authenticate(`Bearer ${token}`, {
            requestId: request.id,
            correlationId: request.id,
          });
        } catch (err) {
          if (err instanceof UnauthorizedError)
            return loginPage(reply, { error: `The token was refused: ${err.message}` }, 401);
          throw err;
        }
        setSessionCookie(reply, request, auth.codec.seal(newSession(token)), auth.limits.absoluteSeconds);
        return reply.redirect(`${BASE}/tree`, 303);
      };

      // OpenID Connect: authorization code + PKCE; the flow's secrets wait in a sealed cookie.
      const FLOW_COOKIE = 'tenantry-console-oidc';
      const flowCookie = (request: FastifyRequest, value: string, maxAge: number) =>
        stringifySetCookie({
          name: FLOW_COOKIE,
          value,
          httpOnly: true,
          secure: isSecure(request),
          sameSite: 'lax',
          path: `${BASE}/login`,
          maxAge,
        });
      c.get('/login/oidc', { config: pub, schema: { hide: true } }, async (request, reply) => {
        if (!auth.oidc) return loginPage(reply, { error: 'No OpenID provider is configured.' }, 404);
        const { url, flow } = await auth.oidc.start(
          `${request.protocol}://${request.host}${BASE}/login/callback`,
        );
        return reply
          .header('set-cookie', flowCookie(request, auth.codec.seal(flow), FLOW_SECONDS))
          .redirect(url, 303);
      });
      c.get('/login/callback', { config: pub, schema: { hide: true } }, async (request, reply) => {
        if (!auth.oidc) return loginPage(reply, { error: 'No OpenID provider is configured.' }, 404);
        reply.header('set-cookie', flowCookie(request, '', 0));
        const flow = auth.codec.unseal<OidcFlow>(parseCookie(request.headers.cookie ?? '')[FLOW_COOKIE]);
        if (!flow || Date.now() - flow.startedAt > FLOW_SECONDS * 1000)
          return loginPage(
            reply,
            { error: 'The sign-in took too long or was not started here; try again.' },
            400,
          );
        let token: string;
        try {
          token = await auth.oidc.finish(new URL(request.url, flow.redirectUri), flow);
        } catch (err) {
          request.log.warn({ err }, 'OpenID Connect sign-in failed');
          return loginPage(
            reply,
            { error: `The OpenID provider's answer was refused: ${(err as Error).message}` },
            401,
          );
        }
        return signIn(request, reply, token);
      });

      c.post(
        '/logout',
        { config: { console: true, action: 'session.revoke', decidedBy: 'service' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          // The token's session ends for the API too, so a copy of the cookie is worthless.
          if (ctx.sessionId) await security.sessions.revoke(ctx, ctx.sessionId);
          setSessionCookie(reply, request, '', 0);
          return reply.code(204).header('hx-redirect', `${BASE}/login`).send();
        },
      );

      // --- hierarchy ----------------------------------------------------------------------------
      /** A tree node: a link, phase and Ready, and a button that loads its children in place (once). */
      const node = (kind: Kind, o: ApiObject, childrenUrl?: string) => {
        const id = `n-${o.metadata.uuid}`;
        const link = html`<a href="${hrefOf(kind, refOf(o))}">${o.metadata.name}</a> <small>${kind}</small> ${statusBadges(o.status)}`;
        if (!childrenUrl) return html`<li>${link}</li>`;
        // The first click loads the children (htmx, once); every click shows or hides them.
        const toggle = `const open = this.getAttribute('aria-expanded') !== 'true'; this.setAttribute('aria-expanded', String(open)); this.textContent = open ? '−' : '+'; document.getElementById('${id}').hidden = !open;`;
        return html`<li><button type="button" class="toggle" aria-label="Children of ${o.metadata.name}" aria-expanded="false" aria-controls="${id}"
 hx-get="${childrenUrl}" hx-trigger="click once" hx-target="#${id}" onclick="${toggle}">+</button> ${link}<div id="${id}" hidden></div></li>`;
      };
      const moreButton = (url: string | null) =>
        url
          ? html`<li><button type="button" hx-get="${url}" hx-target="closest li" hx-swap="outerHTML">More</button></li>`
          : '';

      const listPage = async (
        ctx: RequestContext,
        kind: Kind,
        filters: Record<string, string>,
        cursor: string | undefined,
      ) => registry.list(ctx, kind, { limit: PAGE, cursor, filters });

      c.get(
        '/tree',
        { config: { console: true, action: 'tenant.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const q = request.query as Record<string, unknown>;
          const search = one(q.q);
          const cursor = one(q.cursor);
          const searchForm = html`<form method="get" action="${BASE}/tree" role="search">
<label for="q">Search by slug</label><input id="q" name="q" type="search" value="${search ?? ''}">
<button type="submit">Search</button></form>`;
          let body: Html;
          if (ctx.scope.kind === 'tenant') {
            const t = await registry.get(ctx, 'Tenant', ctx.scope.tenantId);
            body = html`<ul class="tree">${node('Tenant', t, `${hrefOf('Tenant', refOf(t))}/children`)}</ul>`;
          } else if (search) {
            const [customers, tenants] = await Promise.all([
              listPage(ctx, 'Customer', { search }, undefined),
              listPage(ctx, 'Tenant', { search }, cursor),
            ]);
            body = html`${searchForm}
<h2>Customers</h2><ul class="tree">${customers.items.map((o) => node('Customer', o, `${hrefOf('Customer', refOf(o))}/children`))}</ul>
<h2>Tenants</h2><ul class="tree">${tenants.items.map((o) => node('Tenant', o, `${hrefOf('Tenant', refOf(o))}/children`))}</ul>
${pager(tenants.nextCursor ? `${BASE}/tree${qs({ q: search, cursor: tenants.nextCursor })}` : null)}`;
          } else {
            const customers = await listPage(ctx, 'Customer', {}, cursor);
            body = html`${searchForm}
<ul class="tree">${customers.items.map((o) => node('Customer', o, `${hrefOf('Customer', refOf(o))}/children`))}</ul>
${pager(customers.nextCursor ? `${BASE}/tree${qs({ cursor: customers.nextCursor })}` : null)}`;
          }
          return full(request, reply, 'Hierarchy', 'tree', body);
        },
      );

      const CHILDREN: Partial<Record<Kind, { kind: Kind; filter: string; grand: boolean }>> = {
        Customer: { kind: 'Tenant', filter: 'customer', grand: true },
        Tenant: { kind: 'Deployment', filter: 'tenant', grand: true },
        Deployment: { kind: 'IntegrationResource', filter: 'deployment', grand: false },
      };
      for (const [parent, child] of Object.entries(CHILDREN) as [
        Kind,
        { kind: Kind; filter: string; grand: boolean },
      ][]) {
        c.get(
          `/${KIND_PATHS[parent]}/:ref/children`,
          {
            config: {
              console: true,
              action: `${parent.toLowerCase()}.read`,
              ...(parent === 'Tenant' ? { tenantParam: 'ref' } : {}),
            },
            schema: { hide: true },
          },
          async (request, reply) => {
            const ctx = ctxOf(request);
            const { ref } = request.params as { ref: string };
            const cursor = one((request.query as Record<string, unknown>).cursor);
            // Decided on the parent first: a tenant admin gets 403/404 for another tenant's subtree.
            const p = await registry.get(ctx, parent, ref);
            const items = await listPage(ctx, child.kind, { [child.filter]: p.metadata.uuid }, cursor);
            const next = items.nextCursor
              ? `${hrefOf(parent, ref)}/children${qs({ cursor: items.nextCursor })}`
              : null;
            const lis = html`${items.items.map((o) =>
              node(child.kind, o, child.grand ? `${hrefOf(child.kind, refOf(o))}/children` : undefined),
            )}${moreButton(next)}`;
            if (cursor) return send(reply, lis);
            return send(
              reply,
              items.items.length === 0
                ? html`<p>No ${KIND_PATHS[child.kind]}.</p>`
                : html`<ul class="tree">${lis}</ul>`,
            );
          },
        );
      }

      // --- object pages -------------------------------------------------------------------------
      for (const kind of KINDS) {
        c.get(
          `/${KIND_PATHS[kind]}/:ref`,
          {
            config: {
              console: true,
              action: `${kind.toLowerCase()}.read`,
              ...(kind === 'Tenant' ? { tenantParam: 'ref' } : {}),
            },
            schema: { hide: true },
          },
          async (request, reply) => {
            const ctx = ctxOf(request);
            const { ref } = request.params as { ref: string };
            const o = await registry.get(ctx, kind, ref);
            const history = await registry.history(ctx, kind, ref);
            const done = one((request.query as Record<string, unknown>).done);
            const tenantPart =
              kind === 'Tenant'
                ? html`<section aria-labelledby="lifecycle-h"><h2 id="lifecycle-h">Lifecycle</h2>
<p>Lifecycle state: <strong>${o.status.lifecycle}</strong></p>
${done ? html`<p role="status" class="ok">Done: ${done}.</p>` : ''}
<div>${allowedActions(o.status.lifecycle as LifecycleState)
                    .filter((a) => a !== 'delete')
                    .map(
                      (a) =>
                        html`<button type="button" hx-get="${hrefOf('Tenant', refOf(o))}/confirm/${a}" hx-target="#confirm">${a[0]?.toUpperCase()}${a.slice(1)}…</button> `,
                    )}</div>
<div id="confirm"></div></section>
<section aria-labelledby="workflows-h"><h2 id="workflows-h">Workflows</h2><div hx-get="${hrefOf('Tenant', refOf(o))}/workflows" hx-trigger="load" hx-swap="outerHTML">Loading…</div></section>
<section aria-labelledby="placement-h"><h2 id="placement-h">Placement</h2>${yamlBlock(o.status.placement ?? null, 'Placement')}</section>
<p><a href="${hrefOf('Tenant', refOf(o))}/usage">Usage against quotas</a> · <a href="${BASE}/audit${qs({ tenant: o.metadata.uuid })}">Audit records</a> · <a href="${BASE}/events${qs({ tenant: o.metadata.uuid })}">Events</a> · <a href="${BASE}/workflows${qs({ tenant: o.metadata.slug })}">Workflows</a>
 · Runtime: <a href="${BASE}/services${qs({ tenant: o.metadata.slug })}">services</a>, <a href="${BASE}/scaling-policies${qs({ tenant: o.metadata.slug })}">scaling policies</a>, <a href="${BASE}/configurations${qs({ tenant: o.metadata.slug })}">configurations</a></p>
<section aria-labelledby="children-h"><h2 id="children-h">Deployments</h2><div hx-get="${hrefOf('Tenant', refOf(o))}/children" hx-trigger="load">Loading…</div></section>
<section aria-labelledby="migrations-h"><h2 id="migrations-h">Migrations</h2><div hx-get="${hrefOf('Tenant', refOf(o))}/migrations" hx-trigger="load">Loading…</div></section>
<section aria-labelledby="standby-h"><h2 id="standby-h">Standby and failover</h2><div hx-get="${hrefOf('Tenant', refOf(o))}/standby" hx-trigger="load" hx-swap="outerHTML">Loading…</div></section>
`
                : kind === 'WebhookEndpoint'
                  ? html`<p><a href="${BASE}/webhooks/${o.metadata.uuid}">Deliveries and dead letter</a></p>`
                  : '';
            const body = html`<p>${statusBadges(o.status)} generation ${o.metadata.generation}, observed ${o.status.observedGeneration}</p>
<table><caption>Metadata</caption><tbody>
<tr><th scope="row">UUID</th><td><code>${o.metadata.uuid}</code></td></tr>
<tr><th scope="row">Slug</th><td>${o.metadata.slug}</td></tr>
<tr><th scope="row">Created</th><td>${o.metadata.createdAt}</td></tr>
<tr><th scope="row">Updated</th><td>${o.metadata.updatedAt}</td></tr>
${o.status.physicalName ? html`<tr><th scope="row">Physical name</th><td><code>${o.status.physicalName}</code></td></tr>` : ''}
</tbody></table>
${tenantPart}
<section aria-labelledby="spec-h"><h2 id="spec-h">Spec</h2>${yamlBlock(o.spec, 'Spec')}</section>
<section aria-labelledby="cond-h"><h2 id="cond-h">Status</h2>${conditionsTable(o.status.conditions)}</section>
<section aria-labelledby="lineage-h"><h2 id="lineage-h">Lineage</h2>
<ol reversed>${[...history].reverse().map(
              (
                v,
              ) => html`<li><strong>generation ${v.generation}</strong> ${v.action} by ${principalOf(v.actor)} at <time datetime="${v.createdAt}">${v.createdAt}</time>
<ul>${v.changes.map(
                (d) =>
                  html`<li class="diff-${d.op}"><code>${d.op} ${d.path}</code>${d.op !== 'add' ? html` from <code>${JSON.stringify(d.from)}</code>` : ''}${d.op !== 'remove' ? html` to <code>${JSON.stringify(d.to)}</code>` : ''}</li>`,
              )}</ul></li>`,
            )}</ol></section>`;
            return full(request, reply, `${kind} ${o.metadata.name}`, sectionOf(kind), body);
          },
        );
      }

      // --- lifecycle actions, confirmed by typing the tenant's slug --------------------------------
      for (const action of LIFECYCLE_ACTIONS.filter((a) => a !== 'delete')) {
        const cfg = { console: true, action: `tenant.${action}`, tenantParam: 'ref' };
        c.get(
          `/tenants/:ref/confirm/${action}`,
          { config: { ...cfg, action: 'tenant.read' }, schema: { hide: true } },
          async (request, reply) => {
            const ctx = ctxOf(request);
            const t = await registry.get(ctx, 'Tenant', (request.params as { ref: string }).ref);
            return send(reply, confirmForm(t, action));
          },
        );
        c.post(`/tenants/:ref/${action}`, { config: cfg, schema: { hide: true } }, async (request, reply) => {
          const ctx = ctxOf(request);
          const { ref } = request.params as { ref: string };
          const t = await registry.get(ctx, 'Tenant', ref);
          const typed = one((request.body as Record<string, unknown> | undefined)?.confirm);
          if (typed !== t.metadata.slug)
            return send(
              reply,
              confirmForm(t, action, `Type "${t.metadata.slug}" exactly to ${action} this tenant.`),
              422,
            );
          const generation = one((request.body as Record<string, unknown>).generation);
          const after = await registry.transition(
            ctx,
            t.metadata.uuid,
            action as LifecycleAction,
            generation ? Number(generation) : undefined,
          );
          return reply
            .code(204)
            .header(
              'hx-redirect',
              `${hrefOf('Tenant', after.metadata.slug)}${qs({ done: `${action} → ${after.status.lifecycle}` })}`,
            )
            .send();
        });
      }

      // --- usage ---------------------------------------------------------------------------------
      c.get(
        '/tenants/:ref/usage',
        { config: { console: true, action: 'usage.read', tenantParam: 'ref' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const ref = (request.params as { ref: string }).ref;
          const u = await deps.usage.usage(ctx, ref);
          const history = (await deps.usage.history(ctx, ref, 50)).reverse();
          const body = html`<p>Tenant <a href="${hrefOf('Tenant', u.tenant.slug)}">${u.tenant.slug}</a>, plan ${u.plan ?? 'none'}</p>
<table><caption>Quotas</caption><thead><tr><th scope="col">Quota</th><th scope="col">Used</th><th scope="col">Limit</th><th scope="col">Chart</th><th scope="col">Source</th></tr></thead>
<tbody>${u.quotas.map(
            (q) => html`<tr><td>${q.name}</td><td>${q.used} ${q.unit}</td><td>${q.limit ?? 'unlimited'}</td>
<td>${q.limit !== null ? html`<meter min="0" max="${q.limit}" value="${Math.min(q.used, q.limit)}" aria-label="${q.name}: ${q.used} of ${q.limit}">${q.used}/${q.limit}</meter>` : '—'}</td><td>${q.source}</td></tr>`,
          )}</tbody></table>
${usageCharts(history)}
<table><caption>Rate limits</caption><thead><tr><th scope="col">Class</th><th scope="col">Limit</th><th scope="col">Window</th><th scope="col">Source</th></tr></thead>
<tbody>${u.rateLimits.map(
            (r) =>
              html`<tr><td>${r.class}</td><td>${r.limit ?? 'unlimited'}</td><td>${r.windowSeconds !== null ? `${r.windowSeconds} s` : '—'}</td><td>${r.source}</td></tr>`,
          )}</tbody></table>`;
          return full(request, reply, `Usage of ${u.tenant.slug}`, 'tree', body);
        },
      );

      // --- audit ---------------------------------------------------------------------------------
      c.get(
        '/audit',
        { config: { console: true, action: 'audit.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const q = request.query as Record<string, unknown>;
          const f = {
            tenant: one(q.tenant),
            actor: one(q.actor),
            action: one(q.action),
            outcome: one(q.outcome) as 'success' | 'failure' | 'denied' | undefined,
            cursor: one(q.cursor),
          };
          const res = await deps.audit.search(ctx, {
            limit: PAGE,
            ...Object.fromEntries(Object.entries(f).filter(([, v]) => v !== undefined)),
          });
          const field = (name: string, label: string, value: string | undefined) =>
            html`<label for="f-${name}">${label}</label><input id="f-${name}" name="${name}" value="${value ?? ''}"> `;
          const body = html`<form method="get" action="${BASE}/audit" role="search">
${field('tenant', 'Tenant (UUID or platform)', f.tenant)}${field('actor', 'Actor', f.actor)}${field('action', 'Action (e.g. tenant.*)', f.action)}
<label for="f-outcome">Outcome</label><select id="f-outcome" name="outcome">
${['', 'success', 'failure', 'denied'].map((o) => html`<option value="${o}"${f.outcome === o ? html` selected` : ''}>${o || 'any'}</option>`)}
</select> <button type="submit">Filter</button></form>
<p><button type="button" hx-get="${BASE}/audit/verify${qs({ tenant: f.tenant })}" hx-target="#verify">Verify the audit log</button></p>
<div id="verify" aria-live="polite"></div>
<table><caption>Audit records, newest first</caption>
<thead><tr><th scope="col">Time</th><th scope="col">Action</th><th scope="col">Outcome</th><th scope="col">Actor</th><th scope="col">Target</th><th scope="col">Tenant</th></tr></thead>
<tbody>${res.items.map(
            (
              r,
            ) => html`<tr><td><time datetime="${r.time}">${r.time}</time></td><td>${r.action}</td><td>${r.outcome}</td><td>${r.actor.principal}</td>
<td>${r.target.kind} ${r.target.slug ?? r.target.id ?? ''}</td><td>${r.tenantId ?? 'platform'}</td></tr>`,
          )}</tbody></table>
${pager(res.nextCursor ? `${BASE}/audit${qs({ ...f, cursor: res.nextCursor })}` : null)}`;
          return full(request, reply, 'Audit log', 'audit', body);
        },
      );

      c.get(
        '/audit/verify',
        { config: { console: true, action: 'audit.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const v = await deps.audit.verify(ctx, one((request.query as Record<string, unknown>).tenant));
          const first = v.firstProblem;
          return send(
            reply,
            html`<div role="status" class="${v.ok ? 'ok' : 'bad'}">${v.ok ? 'Verified' : 'Verification failed'}: ${v.records} records in ${v.chains.length} chains; checkpoints ${v.checkpoints.valid}/${v.checkpoints.total} valid.
${first ? html` First problem: <code>${JSON.stringify(first)}</code>` : ''}</div>`,
          );
        },
      );

      // --- events, live --------------------------------------------------------------------------
      const eventItem = (e: {
        type: string;
        subject: string;
        time: string;
        tenantid?: string;
        sequence: string;
      }) =>
        html`<li><time datetime="${e.time}">${e.time}</time> <strong>${e.type}</strong> ${e.subject} <small>${e.tenantid ?? 'platform'} #${e.sequence}</small></li>`;

      c.get(
        '/events',
        { config: { console: true, action: 'events.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const tenant = one((request.query as Record<string, unknown>).tenant);
          const sel = await deps.events.selector(ctx, tenant);
          // The newest events are shown; the live stream continues after them.
          const tail = await deps.events.tail(ctx, sel, PAGE);
          const recent = tail.entries.map((e) => e.event);
          const cursor = tail.cursor ?? undefined;
          const body = html`<p>New events appear at the top as they happen.</p>
<ul id="events" hx-ext="sse" sse-connect="${BASE}/events/stream${qs({ tenant, after: cursor })}" sse-swap="message" hx-swap="afterbegin" aria-live="polite">
${recent.reverse().map(eventItem)}</ul>`;
          return full(request, reply, 'Events', 'events', body);
        },
      );

      c.get(
        '/events/stream',
        { config: { console: true, action: 'events.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const q = request.query as Record<string, unknown>;
          const sel = await deps.events.selector(ctx, one(q.tenant));
          const lastId = request.headers['last-event-id'];
          let cursor = (typeof lastId === 'string' && lastId !== '' ? lastId : undefined) ?? one(q.after);
          let pageOf = await deps.events.read(ctx, sel, cursor, 100);
          reply.hijack();
          const res = reply.raw;
          res.writeHead(200, {
            'content-type': 'text/event-stream; charset=utf-8',
            'cache-control': 'no-cache, no-transform',
            'x-accel-buffering': 'no',
          });
          res.write('retry: 2000\n: connected\n\n');
          let closed = false;
          let wake: (() => void) | undefined;
          const close = () => {
            closed = true;
            wake?.();
          };
          open.add(close);
          request.raw.on('close', close);
          const unsubscribe = deps.events.notifier?.subscribe('tenantry_events', (stream) => {
            if (sel.stream === null || stream === sel.stream) wake?.();
          });
          const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), deps.config.events.heartbeatMs);
          try {
            while (!closed) {
              for (const e of pageOf.entries)
                res.write(`id: ${e.cursor}\ndata: ${eventItem(e.event).text.replace(/\n/g, ' ')}\n\n`);
              cursor = pageOf.cursor ?? cursor;
              if (pageOf.entries.length < 100)
                await new Promise<void>((resolve) => {
                  const timer = setTimeout(resolve, deps.config.events.pollMs);
                  wake = () => {
                    clearTimeout(timer);
                    resolve();
                  };
                });
              wake = undefined;
              if (closed) break;
              pageOf = await deps.events.read(ctx, sel, cursor, 100);
            }
          } catch (err) {
            request.log.warn({ err }, 'console event stream ended by an error');
          } finally {
            clearInterval(heartbeat);
            unsubscribe?.();
            open.delete(close);
            res.end();
          }
        },
      );

      // --- webhooks ------------------------------------------------------------------------------
      c.get(
        '/webhooks',
        { config: { console: true, action: 'webhookendpoint.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const cursor = one((request.query as Record<string, unknown>).cursor);
          const res = await listPage(ctx, 'WebhookEndpoint', {}, cursor);
          const body = html`<table><caption>Webhook endpoints</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Tenant</th><th scope="col">URL</th><th scope="col">Status</th></tr></thead>
<tbody>${res.items.map(
            (
              o,
            ) => html`<tr><td><a href="${BASE}/webhooks/${o.metadata.uuid}">${o.metadata.name}</a></td><td>${o.metadata.tenant ?? 'platform'}</td>
<td><code>${String((o.spec as { url?: unknown }).url ?? '')}</code></td><td>${statusBadges(o.status)}</td></tr>`,
          )}</tbody></table>
${pager(res.nextCursor ? `${BASE}/webhooks${qs({ cursor: res.nextCursor })}` : null)}`;
          return full(request, reply, 'Webhooks', 'webhooks', body);
        },
      );

      const STATUSES: DeliveryStatus[] = ['pending', 'delivered', 'dead'];
      c.get(
        '/webhooks/:ref',
        { config: { console: true, action: 'webhook.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const { ref } = request.params as { ref: string };
          const s = one((request.query as Record<string, unknown>).status) as DeliveryStatus | undefined;
          const status = s && STATUSES.includes(s) ? s : undefined;
          const endpoint = await registry.get(ctx, 'WebhookEndpoint', ref);
          const cursor = one((request.query as Record<string, unknown>).cursor);
          const { items, nextCursor } = await deps.webhooks.deliveries(ctx, ref, {
            status,
            limit: PAGE,
            cursor,
          });
          const body = html`<p>${statusBadges(endpoint.status)} <code>${String((endpoint.spec as { url?: unknown }).url ?? '')}</code>
 · <a href="${hrefOf('WebhookEndpoint', endpoint.metadata.uuid)}">Spec and lineage</a></p>
<nav aria-label="Delivery status"><a href="${BASE}/webhooks/${ref}">All</a> · ${STATUSES.map(
            (x) =>
              html`<a href="${BASE}/webhooks/${ref}?status=${x}"${status === x ? html` aria-current="page"` : ''}>${x === 'dead' ? 'Dead letter' : x}</a> · `,
          )}</nav>
<p><button type="button" hx-post="${BASE}/webhooks/${ref}/requeue" hx-target="#requeued">Requeue all dead deliveries</button></p>
<div id="requeued" aria-live="polite"></div>
<table><caption>Deliveries, newest first</caption>
<thead><tr><th scope="col">Event</th><th scope="col">Seq</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Last</th><th scope="col">Action</th></tr></thead>
<tbody>${items.map(
            (d) => html`<tr><td>${d.eventType}<details><summary>Attempts</summary><ol>${d.history.map(
              (a) =>
                html`<li>${a.startedAt}: ${a.trigger}, ${a.statusCode ?? 'no response'} in ${a.latencyMs} ms${a.error ? html`, ${a.error}` : ''}${a.responseExcerpt ? html` <code>${a.responseExcerpt}</code>` : ''}</li>`,
            )}</ol></details></td><td>${d.sequence}</td><td>${d.status}</td><td>${d.attempts}</td><td>${d.lastStatus ?? ''} ${d.lastError ?? ''}</td>
<td>${d.status === 'dead' ? html`<button type="button" hx-post="${BASE}/webhooks/${ref}/requeue" hx-vals='${JSON.stringify({ deliveryIds: d.id })}' hx-target="#requeued" aria-label="Requeue delivery ${d.id}">Requeue</button>` : ''}</td></tr>`,
          )}</tbody></table>
${pager(nextCursor ? `${BASE}/webhooks/${ref}${qs({ status, cursor: nextCursor })}` : null)}`;
          return full(request, reply, `Webhook ${endpoint.metadata.name}`, 'webhooks', body);
        },
      );

      c.post(
        '/webhooks/:ref/requeue',
        { config: { console: true, action: 'webhook.write' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const { ref } = request.params as { ref: string };
          const ids = many((request.body as Record<string, unknown> | undefined)?.deliveryIds);
          const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
          if (ids.some((id) => !uuid.test(id)))
            throw ValidationError.field('/deliveryIds', 'field.invalid', 'Delivery ids are UUIDs.');
          const requeued = await deps.webhooks.requeue(ctx, ref, ids.length > 0 ? ids : undefined);
          return send(
            reply,
            html`<p role="status" class="ok">Requeued ${requeued.length} ${requeued.length === 1 ? 'delivery' : 'deliveries'}.</p>`,
          );
        },
      );

      // --- cells ---------------------------------------------------------------------------------
      c.get(
        '/cells',
        { config: { console: true, action: 'cell.read' }, schema: { hide: true } },
        async (request, reply) => {
          const ctx = ctxOf(request);
          const cursor = one((request.query as Record<string, unknown>).cursor);
          const res = await listPage(ctx, 'Cell', {}, cursor);
          const body = html`<table><caption>Cells and their capacity</caption>
<thead><tr><th scope="col">Cell</th><th scope="col">Region</th><th scope="col">Stage</th><th scope="col">Tenancy</th><th scope="col">Tenants</th><th scope="col">Agent</th><th scope="col">Status</th></tr></thead>
<tbody>${res.items.map((o) => {
            const spec = o.spec as {
              region?: string;
              stage?: string;
              tenancy?: string;
              capacity?: { tenants?: number };
            };
            const cap = spec.capacity?.tenants;
            const used = o.status.allocated ?? 0;
            return html`<tr><td><a href="${hrefOf('Cell', o.metadata.slug)}">${o.metadata.name}</a></td><td>${spec.region}</td><td>${spec.stage}</td><td>${spec.tenancy}</td>
<td>${used}${cap !== undefined ? html` of ${cap} <meter min="0" max="${cap}" value="${Math.min(used, cap)}" aria-label="${o.metadata.name}: ${used} of ${cap} tenants">${used}/${cap}</meter>` : ''}</td><td>${agentOf(o)}</td><td>${statusBadges(o.status)}</td></tr>`;
          })}</tbody></table>
${pager(res.nextCursor ? `${BASE}/cells${qs({ cursor: res.nextCursor })}` : null)}`;
          return full(request, reply, 'Cells', 'cells', body);
        },
      );

      const kit: ConsoleKit = { ctxOf, send, full };
      registerConsoleViews(c, deps, kit);
      registerConsoleMigrationViews(c, { ...deps, authorizer: security.authorizer }, kit);
      registerConsoleFailoverViews(c, { ...deps, authorizer: security.authorizer }, kit);
      if (deps.agents) registerConsoleAgentViews(c, deps.agents, kit);
    },
    { prefix: BASE },
  );
}

function confirmForm(t: ApiObject, action: string, error?: string): Html {
  const slug = t.metadata.slug;
  const label = `${action[0]?.toUpperCase()}${action.slice(1)}`;
  return html`<form hx-post="${BASE}/tenants/${slug}/${action}" hx-target="#confirm" aria-labelledby="confirm-h">
<h3 id="confirm-h">${label} tenant ${slug}?</h3>
${error ? html`<div class="error" role="alert">${error}</div>` : ''}
<input type="hidden" name="generation" value="${t.metadata.generation}">
<p><label for="confirm-slug">Type <strong>${slug}</strong> to confirm</label>
<input id="confirm-slug" name="confirm" autocomplete="off" required></p>
<button type="submit">${label} ${slug}</button>
<button type="button" onclick="document.getElementById('confirm').replaceChildren()">Cancel</button>
</form>`;
}

/** One small line chart per usage figure over the recorded versions (oldest left), with its numbers in words. */
function usageCharts(history: { version: number; time: string; usage: unknown }[]): Html {
  const series = new Map<string, number[]>();
  for (const [i, v] of history.entries()) {
    const usage = v.usage && typeof v.usage === 'object' ? (v.usage as Record<string, unknown>) : {};
    for (const [name, value] of Object.entries(usage)) {
      if (typeof value !== 'number') continue;
      const points = series.get(name) ?? Array.from({ length: history.length }, () => 0);
      points[i] = value;
      series.set(name, points);
    }
  }
  if (series.size === 0 || history.length === 0) return html``;
  const W = 240;
  const H = 40;
  return html`<section aria-labelledby="usage-h"><h2 id="usage-h">Usage over the last ${history.length} versions</h2>
<ul class="charts">${[...series].map(([name, points]) => {
    const max = Math.max(1, ...points);
    const step = points.length > 1 ? W / (points.length - 1) : 0;
    const line = points.map((p, i) => `${(i * step).toFixed(1)},${(H - (p / max) * H).toFixed(1)}`).join(' ');
    const words = `${name}: from ${points[0]} to ${points.at(-1)}, at most ${Math.max(...points)}`;
    return html`<li><svg role="img" aria-label="${words}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">
<polyline fill="none" stroke="#0b4f9c" stroke-width="2" points="${line}"/></svg> ${words}</li>`;
  })}</ul></section>`;
}

/** Where each kind's pages sit in the navigation. */
function sectionOf(kind: Kind): Section {
  if (kind === 'Cell') return 'cells';
  if (kind === 'Service' || kind === 'ScalingPolicy' || kind === 'Configuration') return 'runtime';
  if (kind === 'Release' || kind === 'Pipeline') return 'releases';
  if (kind === 'WebhookEndpoint') return 'webhooks';
  return 'tree';
}

/**
 * A cell's agent as its AgentConnected condition says (src/agent): connected, lost (Unknown, with
 * the last heartbeat), revoked; no condition means the control plane's providers run the cell.
 */
function agentOf(cell: ApiObject): Html {
  const c = cell.status.conditions.find((x) => x.type === 'AgentConnected');
  if (!c) return html`none <small>(the control plane's providers run it)</small>`;
  const cls = c.status === 'True' ? 'ready-true' : c.status === 'False' ? 'ready-false' : 'ready-unknown';
  return html`<span class="badge ${cls}">${c.status === 'True' ? 'Connected' : c.reason}</span> <small>${c.message}</small> <a href="${BASE}/cells/${encodeURIComponent(cell.metadata.slug)}/agent" aria-label="Agent of ${cell.metadata.slug}">Agent</a>`;
}

function principalOf(actor: unknown): string {
  return actor && typeof actor === 'object' && 'principal' in actor
    ? String((actor as { principal: unknown }).principal)
    : '—';
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A console route: its session cookie stands for the bearer token (src/console). */
    console?: boolean;
  }
  interface FastifyRequest {
    /** The console session's CSRF token (console routes with a valid session). */
    consoleCsrf?: string | undefined;
  }
}
