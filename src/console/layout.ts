import { stringify } from 'yaml';
import type { RequestContext } from '../context/request-context.js';
import type { Condition } from '../registry/representation.js';
import { type Html, html, type Renderable } from './html.js';

export const BASE = '/console';

/** Error fragments (4xx) are swapped in too, so a refusal or a failed confirmation is shown in place. */
const HTMX_CONFIG = {
  includeIndicatorStyles: false,
  allowEval: false,
  responseHandling: [
    { code: '204', swap: false },
    { code: '[23]..', swap: true },
    { code: '[45]..', swap: true, error: true },
  ],
};

const NAV = [
  ['tree', 'Hierarchy'],
  ['audit', 'Audit log'],
  ['events', 'Events'],
  ['webhooks', 'Webhooks'],
  ['cells', 'Cells'],
  ['workflows', 'Workflows'],
  ['runtime', 'Runtime'],
  ['releases', 'Releases'],
] as const;
export type Section = (typeof NAV)[number][0];

export interface PageOptions {
  title: string;
  ctx: RequestContext;
  csrf: string;
  section?: Section;
  body: Renderable;
}

/** The whole page: landmarks, navigation, who is signed in, and the CSRF token htmx sends on every request. */
export function page(o: PageOptions): Html {
  const who = o.ctx.scope.kind === 'tenant' ? `tenant ${o.ctx.scope.tenantId}` : 'platform';
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='${JSON.stringify(HTMX_CONFIG)}'>
<title>${o.title} · Tenantry</title>
<meta name="csrf-token" content="${o.csrf}">
<link rel="stylesheet" href="${BASE}/assets/console.css">
<script src="${BASE}/assets/htmx.min.js" defer></script>
<script src="${BASE}/assets/sse.js" defer></script>
</head>
<body hx-headers='${JSON.stringify({ 'x-csrf-token': o.csrf })}'>
<a class="skip" href="#main">Skip to content</a>
<header>
  <a class="brand" href="${BASE}/tree">Tenantry</a>
  <nav aria-label="Main">
    <ul>${NAV.map(([s, label]) => html`<li><a href="${BASE}/${s}"${o.section === s ? html` aria-current="page"` : ''}>${label}</a></li>`)}</ul>
  </nav>
  <div class="who">
    <span>${o.ctx.actor.principal} (${who}; ${(o.ctx.roles ?? []).join(', ')})</span>
    <button type="button" hx-post="${BASE}/logout">Sign out</button>
  </div>
</header>
<main id="main">
<h1>${o.title}</h1>
${o.body}
</main>
</body>
</html>`;
}

/** A page without a session (sign-in, errors before sign-in). */
export function barePage(title: string, body: Renderable): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Tenantry</title>
<link rel="stylesheet" href="${BASE}/assets/console.css">
</head>
<body>
<main id="main" class="narrow">
<h1>${title}</h1>
${body}
</main>
</body>
</html>`;
}

export function readyOf(conditions: Condition[] | undefined): Condition | undefined {
  return conditions?.find((c) => c.type === 'Ready');
}

/** Phase and Ready at a glance: a badge with text (never colour alone). */
export function statusBadges(status: { phase: string; conditions?: Condition[] } | undefined): Html {
  const ready = readyOf(status?.conditions);
  const r = ready?.status ?? 'Unknown';
  return html`<span class="badge phase">${status?.phase ?? '—'}</span>
<span class="badge ready-${r.toLowerCase()}" title="${ready ? `${ready.reason}: ${ready.message}` : 'no Ready condition'}">Ready: ${r}</span>`;
}

export function yamlBlock(value: unknown, label: string): Html {
  return html`<pre class="yaml" tabindex="0" aria-label="${label}">${stringify(value ?? null).trimEnd()}</pre>`;
}

export function conditionsTable(conditions: Condition[]): Html {
  if (conditions.length === 0) return html`<p>No conditions yet.</p>`;
  return html`<table>
<caption>Conditions</caption>
<thead><tr><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Since</th></tr></thead>
<tbody>${conditions.map(
    (c) =>
      html`<tr><td>${c.type}</td><td>${c.status}</td><td>${c.reason}</td><td>${c.message}</td><td><time datetime="${c.lastTransitionTime}">${c.lastTransitionTime}</time></td></tr>`,
  )}</tbody>
</table>`;
}

export function pager(nextHref: string | null): Html {
  return nextHref
    ? html`<nav class="pager" aria-label="Pages"><a href="${nextHref}">Next page</a></nav>`
    : html``;
}

export const qs = (params: Record<string, string | number | undefined | null>): string => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : '';
};

export const CSS = `
:root { font-family: system-ui, sans-serif; color: #1a1a1a; background: #fff; }
body { margin: 0; }
a { color: #0b4f9c; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px; }
header { display: flex; gap: 1.5rem; align-items: center; padding: .5rem 1rem; background: #12263f; color: #fff; flex-wrap: wrap; }
header a { color: #fff; } header .brand { font-weight: 700; text-decoration: none; }
header nav ul { list-style: none; display: flex; gap: 1rem; margin: 0; padding: 0; }
header nav a[aria-current="page"] { text-decoration: underline; font-weight: 700; }
header .who { margin-left: auto; display: flex; gap: .5rem; align-items: center; font-size: .9rem; }
main { padding: 1rem 1.5rem; } main.narrow { max-width: 40rem; margin: 2rem auto; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
caption { text-align: left; font-weight: 600; padding: .25rem 0; }
th, td { border-bottom: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }
.badge { display: inline-block; padding: 0 .4rem; border-radius: .3rem; font-size: .85rem; border: 1px solid #555; }
.ready-true { background: #d7f5dd; } .ready-false { background: #fbd9d9; } .ready-unknown { background: #eee; }
pre.yaml { background: #f4f4f4; padding: .5rem; overflow: auto; }
ul.tree { list-style: none; padding-left: 1.2rem; } ul.tree li { margin: .2rem 0; }
form.inline { display: inline; }
label { margin-right: .5rem; }
input, select, button { font: inherit; }
button { cursor: pointer; }
.ok { color: #0a5c1d; font-weight: 600; } .bad { color: #9b1111; font-weight: 600; }
.error { border: 1px solid #9b1111; padding: .5rem; background: #fff0f0; }
.diff-add { color: #0a5c1d; } .diff-remove { color: #9b1111; }
dialog { max-width: 32rem; }
meter { width: 12rem; }
nav.tabs ul { list-style: none; display: flex; gap: 1rem; padding: 0; margin: 0 0 .5rem; border-bottom: 1px solid #ccc; }
nav.tabs a { display: inline-block; padding: .25rem 0; } nav.tabs a[aria-current="page"] { font-weight: 700; border-bottom: 3px solid #12263f; }
.state-completed, .state-succeeded, .state-delivered, .state-updated, .state-cutover { background: #d7f5dd; }
.state-rolledback, .state-retired { background: #e8e8e8; }
a.button { display: inline-block; padding: .2rem .6rem; border: 1px solid #0b4f9c; border-radius: .3rem; text-decoration: none; }
.state-failed, .state-compensated, .state-cancelled, .state-dead { background: #fbd9d9; }
.state-running, .state-pending, .state-waiting, .state-compensating, .state-awaitingapproval { background: #fff4cc; }
form[role="search"] { margin: .5rem 0; }
ul.charts { list-style: none; padding: 0; } ul.charts svg { border-bottom: 1px solid #ccc; vertical-align: middle; }
`;
