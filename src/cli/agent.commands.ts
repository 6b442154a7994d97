import path from 'node:path';
import type { Command } from 'commander';
import type { TenantryClient } from './client.js';

interface Deps {
  client: () => TenantryClient;
  run: (action: () => Promise<void>) => Promise<void>;
}

/** `30m`, `2h`, `900` (seconds) → seconds. */
function ttlSeconds(text: string): number {
  const m = /^(\d+)([smh]?)$/.exec(text.trim());
  const n = m ? Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600 } as Record<string, number>)[m[2] ?? '']! : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 86_400)
    throw new Error(`--ttl wants e.g. 600, 15m or 1h (at most 24h), got "${text}"`);
  return n;
}

/** `tenantry cells join-token|revoke-agent` (operators) and `tenantry agent` (the data plane). */
export function registerAgentCommands(program: Command, { client, run }: Deps): void {
  const cells = program.command('cells').description("cells' agents: join tokens and revocation");
  cells
    .command('join-token')
    .description("mint a one-time, short-lived join token for the cell's agent")
    .argument('<cell>', 'slug or UUID')
    .option('--ttl <duration>', 'lifetime, e.g. 600, 15m, 1h (default 15m)')
    .action(async (cell: string, opts: { ttl?: string }) => {
      await run(async () => {
        const { body } = await client().request<{ token: string; expiresAt: string }>(
          'POST',
          `/v1/cells/${encodeURIComponent(cell)}/join-tokens`,
          opts.ttl ? { ttlSeconds: ttlSeconds(opts.ttl) } : {},
        );
        console.log(body.token);
        console.error(`join token for cell ${cell}, valid once until ${body.expiresAt}`);
      });
    });
  cells
    .command('revoke-agent')
    .description("revoke the cell's agent: its credential is refused from its next request")
    .argument('<cell>', 'slug or UUID')
    .action(async (cell: string) => {
      await run(async () => {
        const { body } = await client().request<{ revokedAt: string }>(
          'POST',
          `/v1/cells/${encodeURIComponent(cell)}/revoke-agent`,
        );
        console.log(`agent of cell ${cell} revoked at ${body.revokedAt}`);
      });
    });

  program
    .command('agent')
    .description("run a cell's agent: pull its desired state, run the providers here, report status")
    .requiredOption('--cell <cell>', 'the cell (slug or UUID)')
    .option('--join-token <token>', 'needed the first time (or TENANTRY_JOIN_TOKEN)')
    .option(
      '--data-dir <dir>',
      "the agent's folder: credential, last desired state, local blobs",
      '.tenantry-agent',
    )
    .option('--name <name>', 'shown on the cell', 'agent')
    .action(
      // --server (the control plane's URL) is the global option, as for every other command.
      async (opts: { cell: string; joinToken?: string; dataDir: string; name: string }) => {
        const server = client().server;
        const { loadConfig } = await import('../config/config.js');
        const { createLogger } = await import('../logging/logger.js');
        const { createProviders, closeProviders } = await import('../controller/providers.js');
        const { DataplaneSecretStore } = await import('../providers/postgres/secret-store.js');
        const { CellAgent } = await import('../agent/cell-agent.js');
        // Provider settings live here, with the agent: TENANTRY_KAFKA_BROKERS, TENANTRY_AZURE_*,
        // TENANTRY_DATAPLANE_DATABASE_URL (generated credentials are kept in that database too).
        const config = loadConfig({ dataDir: opts.dataDir });
        const logger = createLogger(config.logLevel, process.stdout.isTTY === true);
        const dataplane = config.providers.dataplaneDatabaseUrl;
        const { LocalFileKeyProvider } = await import('../secrets/index.js');
        // Sealed at rest by the agent's own key file (in its folder unless TENANTRY_SECRETS_KEY_FILE says).
        const secrets = dataplane
          ? new DataplaneSecretStore(dataplane, new LocalFileKeyProvider(config.secretsKeyFile))
          : undefined;
        const providers = createProviders({
          config,
          db: { secrets: secrets ?? (undefined as never) },
          dataplaneUrl: dataplane,
        });
        const joinToken = opts.joinToken ?? process.env.TENANTRY_JOIN_TOKEN;
        const agent = new CellAgent({
          server,
          cell: opts.cell,
          ...(joinToken ? { joinToken } : {}),
          stateDir: path.resolve(config.dataDir),
          providers,
          ...(secrets ? { secrets } : {}),
          ...(dataplane ? { dataplaneUrl: dataplane } : {}),
          ...(config.providers.dataplanePeerAddress
            ? { peerAddress: config.providers.dataplanePeerAddress }
            : {}),
          logger,
          name: opts.name,
          resyncMs: config.controller.resyncIntervalMs,
        });
        try {
          await agent.start();
        } catch (err) {
          logger.fatal({ err: (err as Error).message }, 'the agent could not start');
          process.exitCode = 1;
          await closeProviders(providers);
          await secrets?.close();
          return;
        }
        // Webhook deliveries of the cell's tenants go out from here, the data plane (issue 22).
        const { AgentWebhooks } = await import('../agent/agent-webhooks.js');
        const webhooks = new AgentWebhooks({
          server,
          agent,
          allowedNetworks: config.events.webhookAllowedNetworks,
          logger: logger.child({ component: 'webhooks' }),
        });
        await webhooks.start();
        console.log(`Tenantry agent of cell ${opts.cell} running against ${server}`);
        const shutdown = async () => {
          await webhooks.stop();
          await agent.stop();
          await closeProviders(providers);
          await secrets?.close();
          process.exit(0);
        };
        process.on('SIGINT', () => void shutdown());
        process.on('SIGTERM', () => void shutdown());
      },
    );
}
