import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { TenantryClient } from './client.js';
import { type OutputFormat, table } from './output.js';

interface Deps {
  client: () => TenantryClient;
  output: () => OutputFormat;
  run: (action: () => Promise<void>) => Promise<void>;
}

interface ConfigVersion {
  metadata: { name: string; createdAt: string; uuid: string };
  spec: {
    tenant: string;
    name: string;
    version: number;
    content: Record<string, unknown>;
    secretRefs?: Record<string, string>;
    state: string;
    reason: string;
    rollbackOf?: number;
  };
  status: { state?: string; checksum?: string };
}

interface ServiceView {
  metadata: { name: string };
  spec: { replicas: number };
  status: {
    observed?: {
      target: string;
      replicas: { items: { name: string; phase: string; ready: boolean; version: string }[] };
    };
  };
}

function print(body: unknown, rows: string[][], format: OutputFormat): void {
  if (format === 'json') console.log(JSON.stringify(body, null, 2));
  else if (format === 'yaml') console.log(stringify(body).trimEnd());
  else console.log(table(rows));
}

async function history(client: TenantryClient, tenant: string, name: string): Promise<ConfigVersion[]> {
  const q = new URLSearchParams({ tenant, name, limit: '500' });
  const { body } = await client.request<{ items: ConfigVersion[] }>('GET', `/v1/configurations?${q}`);
  return body.items.sort((a, b) => a.spec.version - b.spec.version);
}

/** `tenantry get replicas`: every replica of the services (as the compute target reported them). */
export async function showReplicas(deps: Deps, filters: URLSearchParams): Promise<void> {
  filters.set('limit', '500');
  const { body } = await deps.client().request<{ items: ServiceView[] }>('GET', `/v1/services?${filters}`);
  const replicas = body.items.flatMap((s) =>
    (s.status.observed?.replicas.items ?? []).map((r) => ({ service: s.metadata.name, ...r })),
  );
  print(
    { items: replicas },
    [
      ['SERVICE', 'REPLICA', 'PHASE', 'READY', 'VERSION'],
      ...replicas.map((r) => [r.service, r.name, r.phase, r.ready ? 'yes' : 'no', r.version]),
    ],
    deps.output(),
  );
}

interface DriftView {
  kind: string;
  name: string;
  drift: string[];
  openedAt: string;
  resolvedAt: string | null;
  resolvedBy: string | null;
}

/** `tenantry get drift`: drift findings, newest first (`--filter state=open`, `tenant=…`). */
export async function showDrift(deps: Deps, filters: URLSearchParams): Promise<void> {
  const { body } = await deps.client().request<{ items: DriftView[] }>('GET', `/v1/drift?${filters}`);
  print(
    body,
    [
      ['KIND', 'NAME', 'OPENED', 'RESOLVED', 'BY', 'DRIFT'],
      ...body.items.map((f) => [
        f.kind,
        f.name,
        f.openedAt,
        f.resolvedAt ?? 'open',
        f.resolvedBy ?? '',
        f.drift.join('; '),
      ]),
    ],
    deps.output(),
  );
}

export function registerRuntimeCommands(program: Command, deps: Deps): void {
  const config = program.command('config').description('configuration versions: history, rollback');
  config
    .command('history')
    .description("a configuration's versions, oldest first, with state and checksum")
    .argument('<name>', 'configuration name')
    .requiredOption('--tenant <tenant>', 'tenant slug')
    .action(async (name: string, opts: { tenant: string }) => {
      await deps.run(async () => {
        const versions = await history(deps.client(), opts.tenant, name);
        print(
          { items: versions },
          [
            ['VERSION', 'STATE', 'CHECKSUM', 'CREATED', 'REASON'],
            ...versions.map((v) => [
              String(v.spec.version),
              v.status.state ?? '',
              v.status.checksum ?? '',
              v.metadata.createdAt,
              v.spec.reason,
            ]),
          ],
          deps.output(),
        );
      });
    });
  config
    .command('rollback')
    .description("a new active version with an old version's content (history is never rewritten)")
    .argument('<name>', 'configuration name')
    .requiredOption('--tenant <tenant>', 'tenant slug')
    .requiredOption('--to <version>', 'the version whose content to restore')
    .option('--reason <text>', 'why (recorded on the new version)')
    .action(async (name: string, opts: { tenant: string; to: string; reason?: string }) => {
      await deps.run(async () => {
        const client = deps.client();
        const versions = await history(client, opts.tenant, name);
        const to = Number(opts.to);
        const old = versions.find((v) => v.spec.version === to);
        if (!old) throw new Error(`configuration "${name}" of ${opts.tenant} has no version ${opts.to}`);
        const next = Math.max(...versions.map((v) => v.spec.version)) + 1;
        const manifest = {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Configuration',
          metadata: {},
          spec: {
            tenant: opts.tenant,
            name,
            version: next,
            content: old.spec.content,
            ...(old.spec.secretRefs ? { secretRefs: old.spec.secretRefs } : {}),
            state: 'active',
            reason: opts.reason ?? `rollback to version ${to}`,
            rollbackOf: to,
          },
        };
        await client.request('POST', '/v1/apply', [manifest]);
        console.log(`configuration ${name} version ${next} (content of version ${to}) applied as active`);
      });
    });
  program
    .command('replicas')
    .description('every replica of the services, as the compute target reports it (= get replicas)')
    .option('--tenant <tenant>', 'tenant slug or UUID')
    .action(async (opts: { tenant?: string }) => {
      await deps.run(() =>
        showReplicas(deps, new URLSearchParams(opts.tenant ? { tenant: opts.tenant } : {})),
      );
    });
}
