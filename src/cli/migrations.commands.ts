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
  isolation: string;
  region: string;
}

interface MigrationView {
  id: string;
  state: string;
  workflowId: string;
  rollbackWorkflowId: string | null;
  from: Binding;
  to: Binding;
  mode: string | null;
  verification: Record<
    string,
    { equal: boolean; tables: { table: string; sourceRows: number; targetRows: number }[] }
  > | null;
  freeze: { startedAt: string | null; endedAt: string | null; durationMs: number | null };
  cutOverAt: string | null;
  rollbackUntil: string | null;
  rolledBackAt: string | null;
  error: string | null;
}

interface PlanView {
  dryRun: true;
  tenant: string;
  from: Binding;
  to: Binding;
  steps: string[];
  verdicts: { rule: string; outcome: string; detail: string }[];
}

const where = (b: Binding) => `${b.isolation} in ${b.cell} (${b.region})`;

function render(m: MigrationView, format: OutputFormat): string {
  if (format === 'json') return JSON.stringify(m, null, 2);
  if (format === 'yaml') return stringify(m).trimEnd();
  const lines = [
    `migration ${m.id}  ${m.state}${m.mode ? `  (${m.mode})` : ''}`,
    `from     ${where(m.from)}`,
    `to       ${where(m.to)}`,
    `workflow ${m.workflowId}${m.rollbackWorkflowId ? `  rollback ${m.rollbackWorkflowId}` : ''}`,
    ...(m.freeze.durationMs !== null ? [`freeze   ${m.freeze.durationMs} ms (writes refused)`] : []),
    ...(m.cutOverAt ? [`cut over ${m.cutOverAt}; rollback until ${m.rollbackUntil}`] : []),
    ...(m.rolledBackAt ? [`rolled back ${m.rolledBackAt}`] : []),
    ...(m.error ? [`error    ${m.error}`] : []),
  ];
  const rows = Object.values(m.verification ?? {}).flatMap((v) =>
    v.tables.map((t) => [
      t.table,
      String(t.sourceRows),
      String(t.targetRows),
      v.equal ? 'equal' : 'DIFFERENT',
    ]),
  );
  return rows.length > 0
    ? `${lines.join('\n')}\n\n${table([['TABLE', 'SOURCE ROWS', 'TARGET ROWS', 'CHECKSUMS'], ...rows])}`
    : lines.join('\n');
}

/** `tenantry migrate`, `tenantry migrations`, `tenantry rollback-migration` (issue 19). */
export function registerMigrationCommands(program: Command, deps: Deps): void {
  program
    .command('migrate')
    .description('tenancy-mode (pool → silo) or region migration of a tenant, run as a workflow')
    .argument('<tenant>', 'slug or UUID')
    .option('--isolation <model>', 'the isolation model to move to: silo')
    .option('--region <region>', "the region to move to (one of the tenant's allowed regions)")
    .option('--rollback-window <seconds>', 'how long the source is kept for a rollback (default 7 days)')
    .option('--dry-run', 'show the plan and the policy verdicts; change nothing')
    .option('--wait', 'follow the workflow step by step; exit 1 unless it succeeds')
    .action(
      async (
        tenant: string,
        opts: {
          isolation?: string;
          region?: string;
          rollbackWindow?: string;
          dryRun?: boolean;
          wait?: boolean;
        },
      ) => {
        await deps.run(async () => {
          const c = deps.client();
          const path = `/v1/tenants/${encodeURIComponent(tenant)}/migrations${opts.dryRun ? '?dryRun=true' : ''}`;
          const body = {
            ...(opts.isolation ? { isolation: opts.isolation } : {}),
            ...(opts.region ? { region: opts.region } : {}),
            ...(opts.rollbackWindow ? { rollbackWindowSeconds: Number(opts.rollbackWindow) } : {}),
          };
          if (opts.dryRun) {
            const { body: plan } = await c.request<PlanView>('POST', path, body);
            if (deps.output() !== 'table') {
              console.log(
                deps.output() === 'json' ? JSON.stringify(plan, null, 2) : stringify(plan).trimEnd(),
              );
              return;
            }
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
          const { body: m } = await c.request<MigrationView>('POST', path, body);
          console.log(`migration ${m.id} started (workflow ${m.workflowId})`);
          if (!opts.wait) return;
          const end = await waitForWorkflow(c, m.workflowId);
          const { body: after } = await c.request<MigrationView>(
            'GET',
            `/v1/tenants/${encodeURIComponent(tenant)}/migrations/${m.id}`,
          );
          console.log(render(after, deps.output()));
          if (end.state !== 'Succeeded') process.exitCode = 1;
        });
      },
    );
  program
    .command('migrations')
    .description("a tenant's migrations, or one of them with its verification")
    .argument('<tenant>', 'slug or UUID')
    .argument('[id]', 'migration id')
    .action(async (tenant: string, id: string | undefined) => {
      await deps.run(async () => {
        const base = `/v1/tenants/${encodeURIComponent(tenant)}/migrations`;
        if (id) {
          const { body } = await deps
            .client()
            .request<MigrationView>('GET', `${base}/${encodeURIComponent(id)}`);
          console.log(render(body, deps.output()));
          return;
        }
        const { body } = await deps.client().request<{ items: MigrationView[] }>('GET', base);
        if (deps.output() !== 'table') {
          console.log(deps.output() === 'json' ? JSON.stringify(body, null, 2) : stringify(body).trimEnd());
          return;
        }
        console.log(
          table([
            ['ID', 'STATE', 'FROM', 'TO', 'FREEZE MS', 'ROLLBACK UNTIL'],
            ...body.items.map((m) => [
              m.id,
              m.state,
              where(m.from),
              where(m.to),
              String(m.freeze.durationMs ?? '-'),
              m.rollbackUntil ?? '-',
            ]),
          ]),
        );
      });
    });
  program
    .command('retire-migration')
    .description("drop a cut-over migration's kept source (ends the rollback window)")
    .argument('<tenant>', 'slug or UUID')
    .argument('<id>', 'migration id')
    .option('--wait', 'follow the workflow; exit 1 unless it succeeds')
    .action(async (tenant: string, id: string, opts: { wait?: boolean }) => {
      await deps.run(async () => {
        const c = deps.client();
        const { body } = await c.request<MigrationView & { retireWorkflowId?: string }>(
          'POST',
          `/v1/tenants/${encodeURIComponent(tenant)}/migrations/${encodeURIComponent(id)}/retire`,
        );
        console.log(`migration ${body.id} retiring its source (workflow ${body.retireWorkflowId})`);
        if (!opts.wait || !body.retireWorkflowId) return;
        const end = await waitForWorkflow(c, body.retireWorkflowId);
        if (end.state !== 'Succeeded') process.exitCode = 1;
      });
    });
  program
    .command('rollback-migration')
    .description(
      'return a tenant to the source of its migration, within the rollback window, with every write since',
    )
    .argument('<tenant>', 'slug or UUID')
    .argument('<id>', 'migration id')
    .option('--wait', 'follow the rollback workflow; exit 1 unless it succeeds')
    .action(async (tenant: string, id: string, opts: { wait?: boolean }) => {
      await deps.run(async () => {
        const c = deps.client();
        const { body } = await c.request<MigrationView>(
          'POST',
          `/v1/tenants/${encodeURIComponent(tenant)}/migrations/${encodeURIComponent(id)}/rollback`,
        );
        console.log(`migration ${body.id} rolling back (workflow ${body.rollbackWorkflowId})`);
        if (!opts.wait || !body.rollbackWorkflowId) return;
        const end = await waitForWorkflow(c, body.rollbackWorkflowId);
        if (end.state !== 'Succeeded') process.exitCode = 1;
      });
    });
}
