import type { FastifyInstance } from 'fastify';
import type { AgentService } from '../agent/agent.service.js';
import type { AgentDetail } from '../agent/agent-detail.js';
import { NotFoundError } from '../errors/errors.js';
import type { ConsoleKit } from './console-views.js';
import { hrefOf } from './console-views.js';
import { type Html, html } from './html.js';
import { BASE } from './layout.js';

const time = (iso: string | null | undefined) =>
  iso ? html`<time datetime="${iso}">${iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}</time>` : html`—`;
const badge = (text: string, ok: boolean | null) =>
  html`<span class="badge ${ok === true ? 'ready-true' : ok === false ? 'ready-false' : 'ready-unknown'}">${text}</span>`;

/** The page of a cell's agent (src/agent/agent-detail.ts), as `GET /v1/cells/{ref}/agent` answers it. */
function agentPage(d: AgentDetail): Html {
  const phases = Object.entries(d.objects.byPhase);
  return html`<p>Cell <a href="${hrefOf('Cell', d.cell.slug)}">${d.cell.slug}</a></p>
<dl class="facts">
<dt>Agent</dt><dd>${d.name}${d.embedded ? html` <small>(in process, the embedded default)</small>` : ''}</dd>
<dt>Version</dt><dd>${d.version ?? '—'}</dd>
<dt>Joined</dt><dd>${time(d.joinedAt)}</dd>
<dt>Last seen</dt><dd>${time(d.lastSeenAt)}</dd>
<dt>Lease</dt><dd>${badge(d.lease.connection, d.lease.connection === 'Connected' ? true : null)} since ${time(d.lease.since)}; heartbeat every ${d.lease.heartbeatIntervalMs} ms, Unknown after ${time(d.lease.expiresAt)} without one</dd>
<dt>Credential</dt><dd>${badge(d.credential.state, d.credential.state === 'Valid')} expires ${time(d.credential.expiresAt)}${d.credential.revokedAt ? html`; revoked ${time(d.credential.revokedAt)} by ${d.credential.revokedBy ?? '—'}` : ''}</dd>
</dl>
<table><caption>Objects by phase (${d.objects.total}, ${d.objects.notObserved} not observed yet)</caption>
<thead><tr><th scope="col">Phase</th><th scope="col">Objects</th></tr></thead>
<tbody>${phases.length === 0 ? html`<tr><td colspan="2">No objects.</td></tr>` : phases.map(([p, n]) => html`<tr><td>${p}</td><td>${n}</td></tr>`)}</tbody></table>
<table><caption>Pending commands, oldest first</caption>
<thead><tr><th scope="col">Command</th><th scope="col">Operation</th><th scope="col">State</th><th scope="col">Attempts</th><th scope="col">Asked</th><th scope="col">Pulled</th></tr></thead>
<tbody>${
    d.pendingCommands.length === 0
      ? html`<tr><td colspan="6">No pending commands.</td></tr>`
      : d.pendingCommands.map(
          (c) =>
            html`<tr><td><code>${c.id}</code></td><td>${c.op}</td><td>${c.state}</td><td>${c.attempts}</td><td>${time(c.createdAt)}</td><td>${time(c.claimedAt)}</td></tr>`,
        )
  }</tbody></table>`;
}

/**
 * The console's page of a cell's agent (`/console/cells/{ref}/agent`), linked from the cells list.
 * It names the API's action (`agent.read`) and reads through the same service call, so the same
 * Cedar decision on the cell runs before anything is shown.
 */
export function registerConsoleAgentViews(c: FastifyInstance, agents: AgentService, kit: ConsoleKit): void {
  c.get<{ Params: { ref: string } }>(
    '/cells/:ref/agent',
    { config: { console: true, action: 'agent.read' }, schema: { hide: true } },
    async (request, reply) => {
      const ctx = kit.ctxOf(request);
      try {
        const d = await agents.detail(ctx, request.params.ref);
        return kit.full(request, reply, `Agent of ${d.cell.slug}`, 'cells', agentPage(d));
      } catch (err) {
        if (!(err instanceof NotFoundError) || err.code !== 'agent.not_found') throw err;
        return kit.full(
          request,
          reply,
          `Agent of ${request.params.ref}`,
          'cells',
          html`<p>No agent joined this cell: the control plane's providers run it. <a href="${BASE}/cells">Cells</a></p>`,
        );
      }
    },
  );
}
