import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { TenantryClient } from './client.js';
import { readManifests } from './manifests.js';
import { type OutputFormat, table } from './output.js';
import { allPages } from './pages.js';

interface Deps {
  client: () => TenantryClient;
  output: () => OutputFormat;
  run: (action: () => Promise<void>) => Promise<void>;
}

interface TargetView {
  tenant: string;
  deployment: string;
  wave: number;
  state: string;
  reason: string | null;
  fromVersion: string | null;
  toVersion: string;
  deferredUntil: string | null;
}

export interface PromotionView {
  id: string;
  system: string;
  version: string;
  stage: string;
  pipeline: string;
  mode: string;
  state: string;
  requestedBy: { principal: string };
  author: string | null;
  requiredApprovals: number;
  approvals: { principal: string; at: string }[];
  gates: { gate: string; passed: boolean; detail: string }[] | null;
  error: string | null;
  createdAt: string;
  targets?: TargetView[];
}

const ENDED = new Set(['Succeeded', 'Failed', 'Cancelled']);

function emit(body: unknown, format: OutputFormat, text: () => string): void {
  if (format === 'json') console.log(JSON.stringify(body, null, 2));
  else if (format === 'yaml') console.log(stringify(body).trimEnd());
  else console.log(text());
}

function counts(p: PromotionView): string {
  const n = new Map<string, number>();
  for (const t of p.targets ?? []) n.set(t.state, (n.get(t.state) ?? 0) + 1);
  return [...n.entries()].map(([s, c]) => `${c} ${s}`).join(', ');
}

function render(p: PromotionView, format: OutputFormat): string {
  const head = [
    `promotion ${p.id}  ${p.system}@${p.version} → ${p.stage}  ${p.mode}  ${p.state}`,
    `pipeline  ${p.pipeline}; requested by ${p.requestedBy.principal}; author ${p.author ?? '-'}`,
    `approvals ${p.approvals.length}/${p.requiredApprovals}${p.approvals.length ? ` (${p.approvals.map((a) => a.principal).join(', ')})` : ''}`,
    ...(p.gates ?? []).map((g) => `gate      ${g.gate}: ${g.passed ? 'passed' : 'FAILED'} (${g.detail})`),
    ...(p.error ? [`error     ${p.error}`] : []),
    `tenants   ${counts(p) || 'none yet'}`,
  ];
  if (format !== 'wide') {
    const notable = (p.targets ?? []).filter((t) => t.state !== 'Verified');
    if (notable.length === 0) return head.join('\n');
    return `${head.join('\n')}\n\n${table([
      ['TENANT', 'WAVE', 'STATE', 'REASON'],
      ...notable.map((t) => [t.tenant, String(t.wave), t.state, t.reason ?? '']),
    ])}`;
  }
  return `${head.join('\n')}\n\n${table([
    ['TENANT', 'DEPLOYMENT', 'WAVE', 'STATE', 'FROM', 'TO', 'REASON'],
    ...(p.targets ?? []).map((t) => [
      t.tenant,
      t.deployment,
      String(t.wave),
      t.state,
      t.fromVersion ?? '-',
      t.toVersion,
      t.reason ?? '',
    ]),
  ])}`;
}

/** Follows a promotion until it ends, printing its tenant counts as they change. */
export async function waitForPromotion(
  client: TenantryClient,
  id: string,
  pollMs = 500,
): Promise<PromotionView> {
  let last = '';
  for (;;) {
    const { body } = await client.request<PromotionView>('GET', `/v1/promotions/${encodeURIComponent(id)}`);
    const line = `${body.state}: ${counts(body) || 'planning'}`;
    if (line !== last) console.log(`  ${line}`);
    last = line;
    if (ENDED.has(body.state) || body.state === 'AwaitingApproval') {
      console.log(`promotion ${body.id} ${body.state}${body.error ? `: ${body.error}` : ''}`);
      return body;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** `SYSTEM@VERSION` → its parts. */
function systemAt(ref: string): { system: string; version: string } {
  const at = ref.indexOf('@');
  if (at <= 0 || at === ref.length - 1) throw new Error(`expected SYSTEM@VERSION, got "${ref}"`);
  return { system: ref.slice(0, at), version: ref.slice(at + 1) };
}

/** `tenantry releases …`, `promote`, `approve`, `promotions …`, `rollback`, `pin`, `unpin` (issue 21). */
export function registerReleaseCommands(program: Command, deps: Deps): void {
  const releases = program
    .command('releases')
    .alias('release')
    .description('releases of catalogue systems: create, list, evidence');
  releases
    .command('create')
    .description(
      'create releases from manifests (kind Release); a version bump the changes do not admit is refused',
    )
    .requiredOption('-f, --filename <path...>', 'file, folder (recursive) or - for stdin')
    .action(async (opts: { filename: string[] }) => {
      await deps.run(async () => {
        const docs = readManifests(opts.filename).map((d) => d.doc);
        const { body } = await deps
          .client()
          .request<{ results: { kind: string; name: string; action: string }[] }>('POST', '/v1/apply', docs);
        for (const r of body.results) console.log(`${r.kind.toLowerCase()}/${r.name} ${r.action}`);
      });
    });
  releases
    .command('list')
    .description("a system's releases (or every release)")
    .option('--system <system>', 'system slug')
    .action(async (opts: { system?: string }) => {
      await deps.run(async () => {
        const q = new URLSearchParams({ limit: '500' });
        if (opts.system) q.set('system', opts.system);
        const { body } = await deps.client().request<{
          items: {
            metadata: { name: string };
            spec: { system: string; version: string; provenance: { commit: string } };
          }[];
        }>('GET', `/v1/releases?${q}`);
        emit(body, deps.output(), () =>
          table([
            ['NAME', 'SYSTEM', 'VERSION', 'COMMIT'],
            ...body.items.map((r) => [
              r.metadata.name,
              r.spec.system,
              r.spec.version,
              r.spec.provenance.commit.slice(0, 12),
            ]),
          ]),
        );
      });
    });
  releases
    .command('evidence')
    .description(
      "a release's promotion evidence from the audit log (requests, approvals, tenant steps, outcome)",
    )
    .argument('<release>', 'release name (e.g. shop-1-4-2), UUID, or SYSTEM@VERSION')
    .action(async (ref: string) => {
      await deps.run(async () => {
        const name = ref.includes('@')
          ? (({ system, version }) => `${system}-${version.replace(/\./g, '-')}`)(systemAt(ref))
          : ref;
        type Rec = {
          time: string;
          action: string;
          actor_principal: string;
          target_slug: string;
          outcome: string;
        };
        const res = await deps
          .client()
          .request<{ release: string; records: Rec[] }>(
            'GET',
            `/v1/releases/${encodeURIComponent(name)}/evidence`,
          );
        const body = res.body;
        emit(body, deps.output(), () =>
          table([
            ['TIME', 'ACTION', 'ACTOR', 'TARGET', 'OUTCOME'],
            ...body.records.map((r) => [r.time, r.action, r.actor_principal, r.target_slug ?? '', r.outcome]),
          ]),
        );
      });
    });

  program
    .command('promote')
    .description('promote a release to a stage of its pipeline (protected stages wait for approvals)')
    .argument('<system@version>', 'e.g. shop@1.4.2')
    .requiredOption('--to <stage>', 'the stage, e.g. staging')
    .option('--wait', 'follow it until it ends; exit 1 unless it succeeded')
    .action(async (ref: string, opts: { to: string; wait?: boolean }) => {
      await deps.run(async () => {
        const client = deps.client();
        const { body } = await client.request<PromotionView>('POST', '/v1/promotions', {
          ...systemAt(ref),
          stage: opts.to,
        });
        console.log(render(body, deps.output()));
        if (!opts.wait) return;
        const end = await waitForPromotion(client, body.id);
        if (end.state !== 'Succeeded') process.exitCode = 1;
      });
    });
  program
    .command('approve')
    .description("approve a promotion (four eyes: not its requester, not the release's author)")
    .argument('<promotion>', 'promotion id')
    .option('--comment <text>', 'why')
    .action(async (id: string, opts: { comment?: string }) => {
      await deps.run(async () => {
        const { body } = await deps
          .client()
          .request<PromotionView>(
            'POST',
            `/v1/promotions/${encodeURIComponent(id)}/approve`,
            opts.comment ? { comment: opts.comment } : {},
          );
        console.log(
          `promotion ${body.id} ${body.state} (${body.approvals.length}/${body.requiredApprovals} approvals)`,
        );
      });
    });
  program
    .command('rollback')
    .description('roll a stage back to the version it ran before its last promotion (or --to VERSION)')
    .argument('<system>', 'system slug')
    .requiredOption('--stage <stage>', 'the stage, e.g. prod')
    .option('--to <version>', 'the version to roll back to')
    .option('--wait', 'follow it until it ends; exit 1 unless it succeeded')
    .action(async (system: string, opts: { stage: string; to?: string; wait?: boolean }) => {
      await deps.run(async () => {
        const client = deps.client();
        const { body } = await client.request<PromotionView>('POST', '/v1/promotions/rollback', {
          system,
          stage: opts.stage,
          ...(opts.to ? { to: opts.to } : {}),
        });
        console.log(render(body, deps.output()));
        if (!opts.wait) return;
        const end = await waitForPromotion(client, body.id);
        if (end.state !== 'Succeeded') process.exitCode = 1;
      });
    });

  const promotions = program.command('promotions').description('promotions: list, describe, cancel');
  promotions
    .command('list')
    .description('promotions, newest first')
    .option('--system <system>', 'system slug')
    .option('--state <state>', 'AwaitingApproval | Running | Succeeded | Failed | Cancelled')
    .option('--limit <n>', 'promotions per page (1-500)', '50')
    .option('--cursor <id>', 'continue after this page (the nextCursor a page printed)')
    .option('--all', 'follow every page')
    .action(
      async (opts: { system?: string; state?: string; limit: string; cursor?: string; all?: boolean }) => {
        await deps.run(async () => {
          const body = await allPages<PromotionView>((cursor) => {
            const q = new URLSearchParams({ limit: opts.limit });
            if (opts.system) q.set('system', opts.system);
            if (opts.state) q.set('state', opts.state);
            if (cursor) q.set('cursor', cursor);
            return deps.client().request('GET', `/v1/promotions?${q}`);
          }, opts);
          emit(body, deps.output(), () =>
            table([
              ['ID', 'RELEASE', 'STAGE', 'MODE', 'STATE', 'APPROVALS', 'CREATED'],
              ...body.items.map((p) => [
                p.id,
                `${p.system}@${p.version}`,
                p.stage,
                p.mode,
                p.state,
                `${p.approvals.length}/${p.requiredApprovals}`,
                p.createdAt,
              ]),
            ]),
          );
          const format = deps.output();
          if (format !== 'json' && format !== 'yaml' && body.nextCursor)
            console.error(`more: --cursor ${body.nextCursor} (or --all)`);
        });
      },
    );
  promotions
    .command('describe')
    .description('a promotion: gates, approvals, and its tenants (every tenant with -o wide)')
    .argument('<id>', 'promotion id')
    .action(async (id: string) => {
      await deps.run(async () => {
        const { body } = await deps
          .client()
          .request<PromotionView>('GET', `/v1/promotions/${encodeURIComponent(id)}`);
        emit(body, deps.output(), () => render(body, deps.output()));
      });
    });
  promotions
    .command('cancel')
    .description(
      'cancel a promotion: awaiting approval it ends; running, the tenants it updated are put back',
    )
    .argument('<id>', 'promotion id')
    .action(async (id: string) => {
      await deps.run(async () => {
        const { body } = await deps
          .client()
          .request<PromotionView>('POST', `/v1/promotions/${encodeURIComponent(id)}/cancel`);
        console.log(`promotion ${body.id} ${body.state}`);
      });
    });

  program
    .command('pin')
    .description('pin a tenant to a release of a system until a time: promotions skip it')
    .argument('<tenant>', 'tenant slug or UUID')
    .argument('<system@version>', 'e.g. shop@1.4.2')
    .requiredOption('--until <time>', 'RFC 3339 time the pin ends')
    .requiredOption('--reason <text>', 'why')
    .action(async (tenant: string, ref: string, opts: { until: string; reason: string }) => {
      await deps.run(async () => {
        const { system, version } = systemAt(ref);
        await deps
          .client()
          .request('PUT', `/v1/tenants/${encodeURIComponent(tenant)}/pins/${encodeURIComponent(system)}`, {
            version,
            reason: opts.reason,
            until: opts.until,
          });
        console.log(`tenant/${tenant} pinned to ${system}@${version} until ${opts.until}`);
      });
    });
  program
    .command('unpin')
    .description("remove a tenant's pin")
    .argument('<tenant>', 'tenant slug or UUID')
    .argument('<system>', 'system slug')
    .action(async (tenant: string, system: string) => {
      await deps.run(async () => {
        await deps
          .client()
          .request('DELETE', `/v1/tenants/${encodeURIComponent(tenant)}/pins/${encodeURIComponent(system)}`);
        console.log(`tenant/${tenant} unpinned for ${system}`);
      });
    });
}
