import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { TenantryClient } from './client.js';
import { type OutputFormat, table } from './output.js';
import { allPages } from './pages.js';

interface Deps {
  client: () => TenantryClient;
  output: () => OutputFormat;
  run: (action: () => Promise<void>) => Promise<void>;
}

interface StepView {
  position: number;
  name: string;
  state: string;
  attempts: number;
  startedAt: string | null;
  endedAt: string | null;
  error: string | null;
}

export interface WorkflowView {
  id: string;
  tenantId: string;
  tenantSlug?: string | null;
  type: string;
  state: string;
  error: string | null;
  createdAt: string;
  finishedAt: string | null;
  steps?: StepView[];
}

const ENDED = new Set(['Succeeded', 'Failed', 'Cancelled']);

function render(w: WorkflowView, format: OutputFormat): string {
  if (format === 'json') return JSON.stringify(w, null, 2);
  if (format === 'yaml') return stringify(w).trimEnd();
  const head = [
    `workflow ${w.id}  ${w.type}  ${w.state}`,
    `tenant   ${w.tenantSlug ?? w.tenantId}`,
    ...(w.error ? [`error    ${w.error}`] : []),
  ];
  const steps = table([
    ['STEP', 'STATE', 'ATTEMPTS', 'STARTED', 'ENDED', 'ERROR'],
    ...(w.steps ?? []).map((s) => [
      s.name,
      s.state,
      String(s.attempts),
      s.startedAt ?? '-',
      s.endedAt ?? '-',
      s.error ?? '',
    ]),
  ]);
  return `${head.join('\n')}\n\n${steps}`;
}

/**
 * Follows a workflow until it ends, printing each step as it changes (polling its description);
 * returns its last view. The caller exits non-zero unless it Succeeded.
 */
export async function waitForWorkflow(
  client: TenantryClient,
  id: string,
  pollMs = 300,
): Promise<WorkflowView> {
  const seen = new Map<string, string>();
  for (;;) {
    const { body } = await client.request<WorkflowView>('GET', `/v1/workflows/${encodeURIComponent(id)}`);
    for (const s of body.steps ?? []) {
      const line = `${s.state}${s.attempts > 1 ? ` (attempt ${s.attempts})` : ''}${s.error ? `: ${s.error}` : ''}`;
      // A step is shown when it ends, and while it runs only once it has failed an attempt (so the
      // output does not depend on when a poll happened to land).
      const quietlyRunning = s.state === 'Running' && !s.error;
      if (s.state !== 'Pending' && !quietlyRunning && seen.get(s.name) !== line) {
        seen.set(s.name, line);
        console.log(`  ${s.name.padEnd(26)} ${line}`);
      }
    }
    if (ENDED.has(body.state) || body.state === 'Waiting') {
      console.log(`workflow ${body.id} ${body.state}${body.error ? `: ${body.error}` : ''}`);
      return body;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

export function registerWorkflowCommands(program: Command, deps: Deps): void {
  const workflows = program
    .command('workflows')
    .description('lifecycle workflows: list, describe, retry, cancel');
  workflows
    .command('list')
    .description('workflows, newest first')
    .option('--tenant <tenant>', 'tenant slug or UUID')
    .option('--state <state>', 'Pending | Running | Waiting | Compensating | Succeeded | Failed | Cancelled')
    .option('--limit <n>', 'workflows per page (1-500)', '50')
    .option('--cursor <id>', 'continue after this page (the nextCursor a page printed)')
    .option('--all', 'follow every page')
    .action(
      async (opts: { tenant?: string; state?: string; limit: string; cursor?: string; all?: boolean }) => {
        await deps.run(async () => {
          const body = await allPages<WorkflowView>((cursor) => {
            const q = new URLSearchParams({ limit: opts.limit });
            if (opts.tenant) q.set('tenant', opts.tenant);
            if (opts.state) q.set('state', opts.state);
            if (cursor) q.set('cursor', cursor);
            return deps.client().request('GET', `/v1/workflows?${q}`);
          }, opts);
          const format = deps.output();
          if (format === 'json') console.log(JSON.stringify(body, null, 2));
          else if (format === 'yaml') console.log(stringify(body).trimEnd());
          else
            console.log(
              table([
                ['ID', 'TYPE', 'STATE', 'TENANT', 'CREATED', 'ERROR'],
                ...body.items.map((w) => [w.id, w.type, w.state, w.tenantId, w.createdAt, w.error ?? '']),
              ]),
            );
          if (format !== 'json' && format !== 'yaml' && body.nextCursor)
            console.error(`more: --cursor ${body.nextCursor} (or --all)`);
        });
      },
    );
  workflows
    .command('describe')
    .description('a workflow and its steps (state, attempts, start, end, error)')
    .argument('<id>', 'workflow id')
    .action(async (id: string) => {
      await deps.run(async () => {
        const { body } = await deps
          .client()
          .request<WorkflowView>('GET', `/v1/workflows/${encodeURIComponent(id)}`);
        console.log(render(body, deps.output()));
      });
    });
  for (const verb of ['retry', 'cancel'] as const) {
    workflows
      .command(verb)
      .description(
        verb === 'retry'
          ? 'run the failed step of a Waiting workflow again'
          : 'cancel an open workflow: its completed steps are undone',
      )
      .argument('<id>', 'workflow id')
      .option(
        '--wait',
        'follow it until it ends; exit 1 unless it succeeded (retry) or was cancelled (cancel)',
      )
      .action(async (id: string, opts: { wait?: boolean }) => {
        await deps.run(async () => {
          const client = deps.client();
          const { body } = await client.request<WorkflowView>(
            'POST',
            `/v1/workflows/${encodeURIComponent(id)}/${verb}`,
          );
          console.log(`workflow ${body.id} ${body.state}`);
          if (!opts.wait) return;
          const end = await waitForWorkflow(client, id);
          if (end.state !== (verb === 'retry' ? 'Succeeded' : 'Cancelled')) process.exitCode = 1;
        });
      });
  }
}
