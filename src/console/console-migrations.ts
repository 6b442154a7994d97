import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Authorizer } from '../authz/authorizer.js';
import type { RequestContext } from '../context/request-context.js';
import { isUuid } from '../domain/identifiers.js';
import { ForbiddenError, ValidationError } from '../errors/errors.js';
import type { Isolation } from '../placement/placement.rules.js';
import type { RegistryApi } from '../registry/registry.service.js';
import type {
  Migration,
  MigrationPlanView,
  MigrationsService,
} from '../tenant-migrations/migrations.service.js';
import type { Verification } from '../tenant-migrations/pg-copy.js';
import type { WorkflowsService } from '../workflows/workflows.service.js';
import { type ConsoleKit, hrefOf, isOpen, one, stateBadge, stepsTable, time } from './console-views.js';
import { type Html, html } from './html.js';
import { BASE, pager, qs } from './layout.js';

/**
 * The console's migration views (issue 19 through issue 23's rule that each capability brings its
 * views): on a tenant's page its migrations and "Migrate…"; the migrate page shows the dry-run
 * plan and the policy verdicts first (the API's `?dryRun=true`), then a confirmation that names the
 * tenant; a migration's page shows its workflow's steps live, the write freeze, the verification
 * recorded (row counts and checksums of both sides), the rollback window, and "Roll back…" within it.
 *
 * Every route names the API action it mirrors (`tenant.migrate`, `migration.list`, `migration.read`,
 * `migration.rollback`), so the same Cedar decision and tenant check run first, and the data and
 * the changes go through the same MigrationsService in the caller's scope: a tenant admin sees its
 * tenant's migrations only, and starts or rolls back none unless the API would let it. The buttons
 * are offered only where both Cedar and the service's own rule (the platform migrates) allow.
 */
export interface ConsoleMigrationDeps {
  registry: RegistryApi;
  workflows: WorkflowsService;
  migrations: MigrationsService;
  authorizer: Authorizer;
}

const PAGE = 25;
const POLL = 'every 1s';
const ISOLATIONS: Isolation[] = ['silo', 'pool', 'shared'];
/** The rollback window offered by default (the API's default: 7 days). */
const DEFAULT_WINDOW_HOURS = 7 * 24;

const body = (request: FastifyRequest) => (request.body ?? {}) as Record<string, unknown>;
const migrationHref = (tenant: string, id: string) => `${hrefOf('Tenant', tenant)}/migrations/${id}`;

/** A migration still moving: its workflow or its rollback's runs (the page asks again until it ends). */
const moving = (m: Migration, rollbackOpen: boolean) => m.state === 'Running' || rollbackOpen;

const binding = (b: Migration['from']) => html`${b.isolation} in ${b.cell} <small>(${b.region})</small>`;
const freezeOf = (m: Migration) =>
  m.freeze.durationMs !== null ? `${m.freeze.durationMs} ms` : m.freeze.startedAt ? 'frozen now' : '—';

/** A table verification as recorded (pg-copy.ts), with how it was computed where the checksums were tracked. */
type TableVerification = Verification & { method?: string; rehashed?: string[] };
const isTableVerification = (v: unknown): v is TableVerification =>
  !!v && typeof v === 'object' && Array.isArray((v as { tables?: unknown }).tables);

/** One verification per database resource: every table's rows and checksum on both sides. */
function databaseVerifications(
  byResource: Record<string, unknown>,
  label: (resourceId: string) => string,
  what: string,
): Html {
  return html`${Object.entries(byResource)
    .filter(([, v]) => isTableVerification(v))
    .map(([rid, raw]) => {
      const v = raw as TableVerification;
      return html`<table><caption>${what} of ${label(rid)}: ${v.equal ? html`<span class="ok">equal</span>` : html`<span class="bad">differs</span>`}${v.at ? html` at ${time(v.at)}` : ''}</caption>
<thead><tr><th scope="col">Table</th><th scope="col">Source rows</th><th scope="col">Target rows</th><th scope="col">Source checksum</th><th scope="col">Target checksum</th><th scope="col">Result</th></tr></thead>
<tbody>${v.tables.map(
        (t) =>
          html`<tr><td>${t.table}</td><td>${t.sourceRows}</td><td>${t.targetRows}</td><td><code>${t.sourceChecksum}</code></td><td><code>${t.targetChecksum}</code></td><td>${t.sourceRows === t.targetRows && t.sourceChecksum === t.targetChecksum ? 'Equal' : html`<strong class="bad">Differs</strong>`}</td></tr>`,
      )}</tbody></table>
${v.method ? html`<p><small>Computed from ${v.method}${v.rehashed?.length ? html`; hashed in full again: ${v.rehashed.join(', ')}` : ''}.</small></p>` : ''}`;
    })}`;
}

/**
 * What a migration recorded of its verification: a tenancy-mode migration keeps one table
 * verification per database resource; a region migration keeps `databases`, `blobs` and `topics`.
 */
function verificationView(v: unknown, label: (rid: string) => string, what: string): Html {
  if (!v || typeof v !== 'object' || Object.keys(v).length === 0)
    return html`<p>No ${what.toLowerCase()} recorded yet.</p>`;
  const o = v as Record<string, unknown>;
  if (!('databases' in o)) return databaseVerifications(o, label, what);
  const blobs = (o.blobs ?? {}) as Record<string, { equal: boolean; blobs: number; bytes?: number }>;
  const topics = (o.topics ?? {}) as Record<string, { exists: boolean; drift: string[] }>;
  return html`${databaseVerifications((o.databases ?? {}) as Record<string, unknown>, label, what)}
${
  Object.keys(blobs).length
    ? html`<ul aria-label="Blob containers">${Object.entries(blobs).map(
        ([rid, b]) =>
          html`<li>Blobs of ${label(rid)}: ${b.blobs} blobs${b.bytes !== undefined ? `, ${b.bytes} bytes` : ''}, MD5s ${b.equal ? html`<span class="ok">equal</span>` : html`<span class="bad">differ</span>`}</li>`,
      )}</ul>`
    : ''
}
${
  Object.keys(topics).length
    ? html`<ul aria-label="Topics">${Object.entries(topics).map(
        ([rid, t]) =>
          html`<li>Topic ${label(rid)}: ${t.exists ? 'exists' : 'missing'}${t.drift.length ? `, drift: ${t.drift.join('; ')}` : ', no drift'}</li>`,
      )}</ul>`
    : ''
}`;
}

/** A resource's name as the plan gives it (its scope's slug and schema), else its id. */
function labelOf(m: Migration): (rid: string) => string {
  const plan = (m.plan ?? {}) as {
    resources?: { resourceId: string; scopeSlug: string; source: { schema: string } }[];
    databases?: { resourceId: string; schema: string }[];
  };
  const names = new Map<string, string>([
    ...(plan.resources ?? []).map((r) => [r.resourceId, `${r.scopeSlug} (${r.source.schema})`] as const),
    ...(plan.databases ?? []).map((d) => [d.resourceId, d.schema] as const),
  ]);
  return (rid) => names.get(rid) ?? `resource ${rid.slice(0, 8)}`;
}

export function registerConsoleMigrationViews(
  c: FastifyInstance,
  deps: ConsoleMigrationDeps,
  kit: ConsoleKit,
): void {
  const { migrations, workflows, registry, authorizer } = deps;
  const { ctxOf, send, full } = kit;

  /**
   * Whether the caller may start (or roll back) a migration of `tenantId`, as the API decides it:
   * the route's Cedar action on the caller's scope, then the service's rule that only the platform
   * migrates. A refusal of the request itself still comes from the API's own checks.
   */
  const may = (ctx: RequestContext, action: 'tenant.migrate' | 'migration.rollback', route: string) =>
    ctx.scope.kind === 'platform' &&
    authorizer.decide(ctx, action, {
      kind: 'Route',
      id: route,
      tenantId: null,
      customerId: ctx.customerId ?? null,
    }).decision === 'allow';
  const mayMigrate = (ctx: RequestContext) => may(ctx, 'tenant.migrate', 'POST /v1/tenants/:ref/migrations');
  const mayRollBack = (ctx: RequestContext) =>
    may(ctx, 'migration.rollback', 'POST /v1/tenants/:ref/migrations/:id/rollback');

  const rows = (items: (Migration & { tenantSlug?: string })[], tenant: string | undefined) =>
    html`${items.map(
      (
        m,
      ) => html`<tr><td><a href="${migrationHref(m.tenantSlug ?? tenant ?? m.tenantId, m.id)}" aria-label="Migration ${m.id} (${m.kind})">${m.kind} ${time(m.createdAt)}</a></td>
${tenant ? '' : html`<td><a href="${hrefOf('Tenant', m.tenantSlug ?? m.tenantId)}">${m.tenantSlug ?? m.tenantId}</a></td>`}
<td>${stateBadge(m.state)}</td><td>${binding(m.from)}</td><td>${binding(m.to)}</td><td>${freezeOf(m)}</td>
<td>${verdictOf(m)}</td><td>${m.state === 'CutOver' ? time(m.rollbackUntil) : '—'}</td><td>${m.error ?? ''}</td></tr>`,
    )}`;
  const head = (withTenant: boolean) =>
    html`<thead><tr><th scope="col">Migration</th>${withTenant ? html`<th scope="col">Tenant</th>` : ''}<th scope="col">State</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Write freeze</th><th scope="col">Verification</th><th scope="col">Rollback until</th><th scope="col">Error</th></tr></thead>`;

  // --- a tenant's migrations (a fragment of its page) ----------------------------------------
  c.get(
    '/tenants/:ref/migrations',
    { config: { console: true, action: 'migration.list', tenantParam: 'ref' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref } = request.params as { ref: string };
      const { items, nextCursor } = await migrations.list(ctx, ref, { limit: 5 });
      const live = items.some((m) => m.state === 'Running');
      const self = `${hrefOf('Tenant', ref)}/migrations`;
      const start = mayMigrate(ctx)
        ? html`<p><a class="button" href="${hrefOf('Tenant', ref)}/migrate">Migrate…</a></p>`
        : '';
      return send(
        reply,
        html`<div id="migrations"${live ? html` hx-get="${self}" hx-trigger="every 2s" hx-swap="outerHTML"` : ''}>${start}
${
  items.length === 0
    ? html`<p>No migrations.</p>`
    : html`<table><caption>Migrations of this tenant, newest first</caption>${head(false)}<tbody>${rows(items, ref)}</tbody></table>
${nextCursor ? html`<p><a href="${BASE}/migrations${qs({ tenant: ref })}">All migrations of this tenant</a></p>` : ''}`
}</div>`,
      );
    },
  );

  // --- every migration the caller may see, paged ----------------------------------------------
  c.get(
    '/migrations',
    { config: { console: true, action: 'migration.list' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const q = (request.query ?? {}) as Record<string, unknown>;
      const tenant = one(q.tenant);
      const c0 = one(q.cursor);
      const cursor = c0 && isUuid(c0) ? c0 : undefined;
      const { items, nextCursor } = await migrations.page(ctx, { tenant, limit: PAGE, cursor });
      const page = html`<form method="get" action="${BASE}/migrations" role="search">
<label for="m-tenant">Tenant (slug or UUID)</label><input id="m-tenant" name="tenant" value="${tenant ?? ''}">
<button type="submit">Filter</button></form>
<table><caption>Migrations, newest first</caption>${head(true)}<tbody>${rows(items, undefined)}</tbody></table>
${items.length === 0 ? html`<p>No migrations${tenant ? ' of this tenant' : ''}.</p>` : ''}
${pager(nextCursor ? `${BASE}/migrations${qs({ tenant, cursor: nextCursor })}` : null)}
<section aria-labelledby="failovers-h"><h2 id="failovers-h">Failovers</h2><div hx-get="${BASE}/failovers${qs({ tenant })}" hx-trigger="load">Loading…</div></section>`;
      return full(request, reply, 'Migrations', 'workflows', page);
    },
  );

  // --- starting one: the form, the dry-run plan with its verdicts, the confirmation ------------
  c.get(
    '/tenants/:ref/migrate',
    { config: { console: true, action: 'tenant.migrate', tenantParam: 'ref' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref } = request.params as { ref: string };
      const t = await registry.get(ctx, 'Tenant', ref);
      if (!mayMigrate(ctx))
        throw new ForbiddenError('migration.platform_only', 'Only the platform migrates tenants.');
      const slug = t.metadata.slug;
      const placement = (t.status.placement ?? {}) as { isolation?: string; region?: string; cell?: string };
      const cells = await registry.list(ctx, 'Cell', { limit: 100, filters: {} });
      const regions = [
        ...new Set(cells.items.map((x) => String((x.spec as { region?: unknown }).region ?? ''))),
      ].filter((r) => r && r !== placement.region);
      const page = html`<p>Tenant <a href="${hrefOf('Tenant', slug)}">${slug}</a> is <strong>${placement.isolation ?? 'unplaced'}</strong> in cell ${placement.cell ?? '—'}, region ${placement.region ?? '—'}.
Nothing changes until you confirm: first the plan and the policy verdicts are shown (a dry run).</p>
<form hx-post="${hrefOf('Tenant', slug)}/migrate/plan" hx-target="#plan" aria-labelledby="migrate-h">
<h2 id="migrate-h">What to change</h2>
<fieldset><legend>Change</legend>
<p><input type="radio" id="change-isolation" name="change" value="isolation" checked>
<label for="change-isolation">Change the isolation</label>,
<label for="m-isolation">isolation model</label> <select id="m-isolation" name="isolation">${ISOLATIONS.filter((i) => i !== placement.isolation).map((i) => html`<option value="${i}">${i}</option>`)}</select></p>
<p><input type="radio" id="change-region" name="change" value="region">
<label for="change-region">Move to another region</label>,
<label for="m-region">region</label> <input id="m-region" name="region" list="m-regions" maxlength="63" autocomplete="off">
<datalist id="m-regions">${regions.map((r) => html`<option value="${r}"></option>`)}</datalist></p>
</fieldset>
<p><label for="m-window">Rollback window (hours)</label> <input id="m-window" name="windowHours" type="number" min="1" max="2160" value="${DEFAULT_WINDOW_HOURS}"></p>
<button type="submit">Show the plan</button>
</form>
<div id="plan" aria-live="polite"></div>`;
      return full(request, reply, `Migrate ${slug}`, 'tree', page);
    },
  );

  /** The migration the form asks for, as the API's body; bad input is a 400 naming the field. */
  const requested = (request: FastifyRequest) => {
    const b = body(request);
    const change = one(b.change);
    const hours = one(b.windowHours);
    const windowHours = hours === undefined ? DEFAULT_WINDOW_HOURS : Number(hours);
    if (!Number.isInteger(windowHours) || windowHours < 1 || windowHours > 2160)
      throw ValidationError.field('/windowHours', 'field.invalid', 'The rollback window is 1 to 2160 hours.');
    const rollbackWindowSeconds = windowHours * 3600;
    if (change === 'region') {
      const region = one(b.region)?.trim();
      if (!region || region.length > 63)
        throw ValidationError.field('/region', 'field.required', 'Name the region to move to.');
      return { region, rollbackWindowSeconds };
    }
    const isolation = one(b.isolation) as Isolation | undefined;
    if (change !== 'isolation' || !isolation || !ISOLATIONS.includes(isolation))
      throw ValidationError.field('/isolation', 'field.invalid', 'Choose silo, pool or shared.');
    return { isolation, rollbackWindowSeconds };
  };

  const confirmMigration = (
    slug: string,
    plan: MigrationPlanView,
    input: ReturnType<typeof requested>,
    error?: string,
  ) => {
    const what =
      'region' in input ? `to region ${input.region}` : `from ${plan.from.isolation} to ${input.isolation}`;
    return html`<section aria-labelledby="plan-h"><h2 id="plan-h">Plan: migrate ${slug} ${what}</h2>
${placementTable(plan)}
${verdictsTable(plan.verdicts)}
<h3>Steps the workflow will run</h3>
<ol>${plan.steps.map((s) => html`<li>${s}</li>`)}</ol>
<form hx-post="${hrefOf('Tenant', slug)}/migrate" hx-target="#plan" aria-labelledby="confirm-h">
<h3 id="confirm-h">Migrate tenant ${slug} ${what}?</h3>
${error ? html`<div class="error" role="alert">${error}</div>` : ''}
${Object.entries({
  change: 'region' in input ? 'region' : 'isolation',
  ...input,
  windowHours: input.rollbackWindowSeconds / 3600,
})
  .filter(([k]) => k !== 'rollbackWindowSeconds')
  .map(([k, v]) => html`<input type="hidden" name="${k}" value="${String(v)}">`)}
<p><label for="confirm-slug">Type <strong>${slug}</strong> to confirm</label>
<input id="confirm-slug" name="confirm" autocomplete="off" required></p>
<button type="submit">Migrate ${slug}</button>
<button type="button" onclick="document.getElementById('plan').replaceChildren()">Cancel</button>
</form></section>`;
  };

  const migrateCfg = { console: true, action: 'tenant.migrate', tenantParam: 'ref' };
  c.post(
    '/tenants/:ref/migrate/plan',
    { config: migrateCfg, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref } = request.params as { ref: string };
      const input = requested(request);
      const plan = (await migrations.start(ctx, ref, input, { dryRun: true })) as MigrationPlanView;
      return send(reply, confirmMigration(plan.tenant, plan, input));
    },
  );

  c.post('/tenants/:ref/migrate', { config: migrateCfg, schema: { hide: true } }, async (request, reply) => {
    const ctx = ctxOf(request);
    const { ref } = request.params as { ref: string };
    const input = requested(request);
    const t = await registry.get(ctx, 'Tenant', ref);
    const slug = t.metadata.slug;
    if (one(body(request).confirm) !== slug) {
      // The plan again (it may have changed), with what went wrong.
      const plan = (await migrations.start(ctx, ref, input, { dryRun: true })) as MigrationPlanView;
      return send(
        reply,
        confirmMigration(slug, plan, input, `Type "${slug}" exactly to migrate this tenant.`),
        422,
      );
    }
    const m = (await migrations.start(ctx, ref, input, { dryRun: false })) as Migration;
    return reply.code(204).header('hx-redirect', migrationHref(slug, m.id)).send();
  });

  // --- one migration: steps live, freeze, verification, rollback window, roll back -------------
  const detail = async (ctx: RequestContext, ref: string, id: string) => {
    const m = await migrations.get(ctx, ref, id);
    const w = await workflows.get(ctx, m.workflowId);
    const rw = m.rollbackWorkflowId ? await workflows.get(ctx, m.rollbackWorkflowId) : undefined;
    const live = moving(m, rw ? isOpen(rw) : false);
    const label = labelOf(m);
    const rollback = (m.rollback ?? {}) as {
      freezeMs?: number;
      frozenAt?: string;
      error?: string;
      tables?: unknown;
      verification?: unknown;
      bulk?: { ms?: number };
    };
    const moved = Object.values((rollback.tables ?? {}) as Record<string, { changedRows?: number }>)
      .map((x) => x.changedRows)
      .filter((x): x is number => typeof x === 'number');
    const changed = moved.length > 0 ? moved.reduce((a, b) => a + b, 0) : undefined;
    const inWindow = m.state === 'CutOver' && !!m.rollbackUntil && Date.parse(m.rollbackUntil) > Date.now();
    const self = `${migrationHref(ref, id)}/detail`;
    return html`<div id="migration"${live ? html` hx-get="${self}" hx-trigger="${POLL}" hx-swap="outerHTML"` : ''}>
<p>State ${stateBadge(m.state)}${live ? html` <small>(updating live)</small>` : ''} · ${m.kind} migration by ${m.actor.principal} · started ${time(m.createdAt)}</p>
${m.error ? html`<div class="error" role="alert">${m.error}</div>` : ''}
<table><caption>Summary</caption><tbody>
<tr><th scope="row">From</th><td>${binding(m.from)}</td></tr>
<tr><th scope="row">To</th><td>${binding(m.to)}</td></tr>
<tr><th scope="row">Copy mode</th><td>${m.mode ?? '—'}${(m.plan as { modeReason?: string }).modeReason ? html` <small>(${(m.plan as { modeReason: string }).modeReason})</small>` : ''}</td></tr>
<tr><th scope="row">Write freeze</th><td>${freezeOf(m)}${m.freeze.startedAt ? html` · from ${time(m.freeze.startedAt)} to ${time(m.freeze.endedAt)}` : ''}</td></tr>
<tr><th scope="row">Cut over</th><td>${time(m.cutOverAt)}</td></tr>
<tr><th scope="row">Rollback window</th><td>${m.rollbackWindowSeconds / 3600} h${m.rollbackUntil ? html` · until ${time(m.rollbackUntil)}${inWindow ? ' (open)' : ' (closed)'}` : ''}</td></tr>
${m.rolledBackAt ? html`<tr><th scope="row">Rolled back</th><td>${time(m.rolledBackAt)}</td></tr>` : ''}
${m.retiredAt ? html`<tr><th scope="row">Retired</th><td>${time(m.retiredAt)}</td></tr>` : ''}
</tbody></table>
${
  inWindow && !rw && mayRollBack(ctx)
    ? html`<p><button type="button" hx-get="${migrationHref(ref, id)}/confirm-rollback" hx-target="#confirm">Roll back…</button></p>`
    : ''
}
<section aria-labelledby="steps-h"><h2 id="steps-h">Steps</h2>
<p>Workflow <a href="${BASE}/workflows/${w.id}">${w.type}</a> ${stateBadge(w.state)}</p>
${stepsTable(w.steps, `Steps of the migration`)}</section>
<section aria-labelledby="verify-h"><h2 id="verify-h">Verification</h2>
${verificationView(m.verification, label, 'Verification')}</section>
${
  rw
    ? html`<section aria-labelledby="rollback-h"><h2 id="rollback-h">Rollback</h2>
<p>Workflow <a href="${BASE}/workflows/${rw.id}">${rw.type}</a> ${stateBadge(rw.state)}${rollback.freezeMs !== undefined ? html` · write freeze ${rollback.freezeMs} ms` : ''}${rollback.bulk?.ms !== undefined ? html` · copied back before the freeze in ${rollback.bulk.ms} ms` : ''}${changed !== undefined ? html` · ${changed} changed rows moved in the freeze` : ''}</p>
${rollback.error ? html`<div class="error" role="alert">${rollback.error}</div>` : ''}
${stepsTable(rw.steps, 'Steps of the rollback')}
${verificationView(rollback.tables ?? rollback.verification, label, 'Verification of the copy back')}</section>`
    : ''
}</div>`;
  };

  const readCfg = { console: true, action: 'migration.read', tenantParam: 'ref' };
  c.get(
    '/tenants/:ref/migrations/:id',
    { config: readCfg, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref, id } = request.params as { ref: string; id: string };
      const t = await registry.get(ctx, 'Tenant', ref);
      const done = one((request.query as Record<string, unknown>).done);
      const page = html`<p>Tenant <a href="${hrefOf('Tenant', t.metadata.slug)}">${t.metadata.slug}</a> · <code>${id}</code> · <a href="${BASE}/migrations${qs({ tenant: t.metadata.slug })}">All migrations of this tenant</a></p>
${done ? html`<p role="status" class="ok">Done: ${done}.</p>` : ''}
<div id="confirm"></div>
${await detail(ctx, ref, id)}`;
      return full(request, reply, `Migration of ${t.metadata.slug}`, 'workflows', page);
    },
  );
  c.get(
    '/tenants/:ref/migrations/:id/detail',
    { config: readCfg, schema: { hide: true } },
    async (request, reply) => {
      const { ref, id } = request.params as { ref: string; id: string };
      return send(reply, await detail(ctxOf(request), ref, id));
    },
  );

  const confirmRollback = (slug: string, m: Migration, error?: string) =>
    html`<form hx-post="${migrationHref(slug, m.id)}/rollback" hx-target="#confirm" aria-labelledby="rb-h">
<h2 id="rb-h">Roll back the migration of tenant ${slug}?</h2>
<p>The tenant returns to ${binding(m.from)} with every write made since the cut-over; its writes are refused for the rollback's short freeze.</p>
${error ? html`<div class="error" role="alert">${error}</div>` : ''}
<p><label for="rb-slug">Type <strong>${slug}</strong> to confirm</label>
<input id="rb-slug" name="confirm" autocomplete="off" required></p>
<button type="submit">Roll back ${slug}</button>
<button type="button" onclick="document.getElementById('confirm').replaceChildren()">Cancel</button>
</form>`;

  c.get(
    '/tenants/:ref/migrations/:id/confirm-rollback',
    { config: readCfg, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref, id } = request.params as { ref: string; id: string };
      const m = await migrations.get(ctx, ref, id);
      if (!mayRollBack(ctx))
        throw new ForbiddenError('migration.platform_only', 'Only the platform migrates tenants.');
      const t = await registry.get(ctx, 'Tenant', ref);
      return send(reply, confirmRollback(t.metadata.slug, m));
    },
  );
  c.post(
    '/tenants/:ref/migrations/:id/rollback',
    { config: { console: true, action: 'migration.rollback', tenantParam: 'ref' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = ctxOf(request);
      const { ref, id } = request.params as { ref: string; id: string };
      const t = await registry.get(ctx, 'Tenant', ref);
      const slug = t.metadata.slug;
      if (one(body(request).confirm) !== slug)
        return send(
          reply,
          confirmRollback(slug, await migrations.get(ctx, ref, id), `Type "${slug}" exactly to roll back.`),
          422,
        );
      const m = await migrations.rollback(ctx, ref, id);
      return reply
        .code(204)
        .header('hx-redirect', `${migrationHref(slug, m.id)}${qs({ done: 'rollback started' })}`)
        .send();
    },
  );
}

/** The verification at a glance: equal, differing, or not yet. */
function verdictOf(m: Migration): Html | string {
  const v = m.verification as Record<string, unknown> | null;
  if (!v || Object.keys(v).length === 0) return '—';
  const all = 'databases' in v ? Object.values((v.databases ?? {}) as object) : Object.values(v);
  const checks = all.filter(isTableVerification);
  if (checks.length === 0) return '—';
  const tables = checks.reduce((n, x) => n + x.tables.length, 0);
  return checks.every((x) => x.equal)
    ? html`<span class="ok">Equal</span> <small>(${tables} tables)</small>`
    : html`<span class="bad">Differs</span>`;
}

/** A move's placement now and after, as its dry run gives it (a migration's or a failover's). */
export function placementTable(plan: Pick<MigrationPlanView, 'from' | 'to'>): Html {
  return html`<table><caption>Placement now and after</caption>
<thead><tr><th scope="col"></th><th scope="col">Isolation</th><th scope="col">Cell</th><th scope="col">Region</th><th scope="col">Data partition</th></tr></thead>
<tbody>${(
    [
      ['Now', plan.from],
      ['After', plan.to],
    ] as const
  ).map(
    ([k, b]) =>
      html`<tr><th scope="row">${k}</th><td>${b.isolation}</td><td>${b.cell}</td><td>${b.region}</td><td>${b.dataPartition.kind} ${b.dataPartition.name}</td></tr>`,
  )}</tbody></table>`;
}

/** The policy verdicts of a dry run; a refusal shows as one `refuse` row with its rule. */
export function verdictsTable(verdicts: readonly { rule: string; outcome: string; detail: string }[]): Html {
  return html`<table><caption>Policy verdicts</caption>
<thead><tr><th scope="col">Rule</th><th scope="col">Verdict</th><th scope="col">Detail</th></tr></thead>
<tbody>${verdicts.map(
    (v) =>
      html`<tr><td>${v.rule}</td><td><span class="badge ${v.outcome === 'allow' ? 'state-succeeded' : 'state-failed'}">${v.outcome}</span></td><td>${v.detail}</td></tr>`,
  )}</tbody></table>`;
}
