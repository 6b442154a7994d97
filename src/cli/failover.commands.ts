import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { TenantryClient } from './client.js';
import { type OutputFormat, table } from './output.js';
import { waitForWorkflow } from './workflows.commands.js';

interface Deps {
  client: () => TenantryClient;
  output: () => OutputFormat;
  run: (action: () => Promise<void>) => Promise<void>;
}

interface Binding {
  cell: string;
  region: string;
}

interface StandbyAtStart {
  lagBytes: number | null;
  lastSyncAt: string | null;
  dataLossWindowSeconds: number | null;
}

interface FailoverView {
  id: string;
  state: string;
  workflowId: string;
  from: Binding;
  to: Binding;
  standby: StandbyAtStart;
  fencedAt: string | null;
  consistency: {
    consistent: boolean;
    databases: Record<string, { tables: { table: string; lastKnownRows: number | null; rows: number }[] }>;
  } | null;
  failedOverAt: string | null;
  error: string | null;
}

interface StandbyView {
  region: string;
  state: string;
  lagBytes: number | null;
  lagSeconds: number | null;
  lastSyncAt: string | null;
  measuredAt: string | null;
  error: string | null;
}

const where = (b: Binding) => `${b.cell} (${b.region})`;
const print = (v: unknown, format: OutputFormat) =>
  console.log(format === 'json' ? JSON.stringify(v, null, 2) : stringify(v).trimEnd());

function render(f: FailoverView): string {
  const lines = [
    `failover ${f.id}  ${f.state}`,
    `from     ${where(f.from)}`,
    `to       ${where(f.to)}`,
    `standby  last sync ${f.standby.lastSyncAt ?? 'never'}; data-loss window ${f.standby.dataLossWindowSeconds ?? '?'} s; lag ${f.standby.lagBytes ?? 'unknown'} bytes`,
    `workflow ${f.workflowId}`,
    ...(f.failedOverAt ? [`failed over ${f.failedOverAt}`] : []),
    `fenced   ${f.fencedAt ?? 'not yet (the old primary was unreachable)'}`,
    ...(f.error ? [`error    ${f.error}`] : []),
  ];
  const rows = Object.values(f.consistency?.databases ?? {}).flatMap((d) =>
    d.tables.map((t) => [t.table, String(t.lastKnownRows ?? '-'), String(t.rows)]),
  );
  return rows.length > 0
    ? `${lines.join('\n')}\nconsistent ${f.consistency?.consistent}\n\n${table([['TABLE', 'LAST KNOWN ROWS', 'ROWS NOW'], ...rows])}`
    : lines.join('\n');
}

/** `tenantry failover`, `tenantry standby` (issue 19, region failover). */
export function registerFailoverCommands(program: Command, deps: Deps): void {
  program
    .command('failover')
    .description("promote a tenant's standby in another region (the primary may be down), as a workflow")
    .argument('<tenant>', 'slug or UUID')
    .option('--to <region>', "the standby's region (default: the tenant's standby)")
    .option('--dry-run', "show the plan, the standby's lag and the policy verdicts; change nothing")
    .option('--wait', 'follow the workflow step by step; exit 1 unless it succeeds')
    .action(async (tenant: string, opts: { to?: string; dryRun?: boolean; wait?: boolean }) => {
      await deps.run(async () => {
        const c = deps.client();
        const base = `/v1/tenants/${encodeURIComponent(tenant)}`;
        const body = opts.to ? { region: opts.to } : {};
        if (opts.dryRun) {
          const { body: plan } = await c.request<{
            tenant: string;
            from: Binding;
            to: Binding;
            steps: string[];
            verdicts: { rule: string; outcome: string; detail: string }[];
          }>('POST', `${base}/failover?dryRun=true`, body);
          if (deps.output() !== 'table') return print(plan, deps.output());
          console.log(`dry run: ${plan.tenant} ${where(plan.from)} → ${where(plan.to)}`);
          console.log(
            table([
              ['RULE', 'OUTCOME', 'DETAIL'],
              ...plan.verdicts.map((v) => [v.rule, v.outcome, v.detail]),
            ]),
          );
          console.log(`steps: ${plan.steps.join(' → ')}`);
          return;
        }
        const { body: f } = await c.request<FailoverView>('POST', `${base}/failover`, body);
        console.log(`failover ${f.id} started (workflow ${f.workflowId})`);
        if (!opts.wait) return;
        const end = await waitForWorkflow(c, f.workflowId);
        const { body: after } = await c.request<FailoverView>('GET', `${base}/failovers/${f.id}`);
        if (deps.output() === 'table') console.log(render(after));
        else print(after, deps.output());
        if (end.state !== 'Succeeded') process.exitCode = 1;
      });
    });
  program
    .command('standby')
    .description("a tenant's standby: region, state, replication lag and last sync")
    .argument('<tenant>', 'slug or UUID')
    .action(async (tenant: string) => {
      await deps.run(async () => {
        const { body } = await deps
          .client()
          .request<StandbyView>('GET', `/v1/tenants/${encodeURIComponent(tenant)}/standby`);
        if (deps.output() !== 'table') return print(body, deps.output());
        console.log(
          table([
            ['REGION', 'STATE', 'LAG BYTES', 'LAG SECONDS', 'LAST SYNC', 'MEASURED', 'ERROR'],
            [
              body.region,
              body.state,
              String(body.lagBytes ?? 'unknown'),
              String(body.lagSeconds ?? '-'),
              body.lastSyncAt ?? 'never',
              body.measuredAt ?? '-',
              body.error ?? '',
            ],
          ]),
        );
      });
    });
}
