import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { Logger } from 'pino';
import { type IdentityHook, localOperator } from './api/identity.js';
import { buildServer } from './api/server.js';
import type { Config } from './config/config.js';
import { createDb, type Db, ensureAppRole, migrate } from './db/database.js';
import { EmbeddedDatabase } from './db/embedded-postgres.js';
import { EventNotifier } from './events/event-notifier.js';
import { EventsService } from './events/events.service.js';
import { RegistryService } from './registry/registry.service.js';
import { WebhookDispatcher } from './webhooks/webhook-dispatcher.js';

export interface Tenantry {
  /** Where the API listens. */
  url: string;
  /** Where the data lives: the embedded cluster's folder, or the external server (without credentials). */
  dataLocation: string;
  server: FastifyInstance;
  db: Db;
  registry: RegistryService;
  stop(): Promise<void>;
}

export interface StartOptions {
  logger: Logger;
  identify?: IdentityHook;
}

const DATABASE = 'tenantry';

async function ensureDatabase(serverUrl: string): Promise<string> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    const exists = await client.query('select 1 from pg_database where datname = $1', [DATABASE]);
    if (exists.rowCount === 0) await client.query(`create database ${DATABASE}`);
  } finally {
    await client.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${DATABASE}`;
  return url.toString();
}

function redactUrl(u: string): string {
  const url = new URL(u);
  url.password = '';
  return url.toString();
}

/** The composition root: database, migrations, services, HTTP server. */
export async function startTenantry(config: Config, opts: StartOptions): Promise<Tenantry> {
  const log = opts.logger;
  let embedded: EmbeddedDatabase | undefined;
  let ownerUrl = config.databaseUrl;
  let dataLocation: string;
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((err) => log.error({ err }, 'error while stopping'));
    stops.length = 0;
  };
  try {
    if (!ownerUrl) {
      embedded = new EmbeddedDatabase({
        clusterDir: path.join(config.dataDir, 'pg'),
        credentialsFile: path.join(config.dataDir, 'pg-password'),
        logger: log,
      });
      log.info({ dataDir: config.dataDir }, 'starting embedded PostgreSQL');
      await embedded.start();
      const e = embedded;
      stops.push(() => e.stop());
      ownerUrl = await ensureDatabase(embedded.url);
      dataLocation = config.dataDir;
    } else {
      dataLocation = redactUrl(ownerUrl);
    }
    const applied = await migrate(ownerUrl);
    if (applied.length > 0) log.info({ migrations: applied }, 'migrations applied');
    const appUrl = config.appDatabaseUrl ?? (await ensureAppRole(ownerUrl));
    const db = createDb(appUrl, 20);
    stops.push(() => db.destroy());
    const registry = new RegistryService(db, config);
    const notifier = new EventNotifier(appUrl, log);
    await notifier.start();
    stops.push(() => notifier.stop());
    const server = await buildServer({
      config,
      db,
      registry,
      identify: opts.identify ?? localOperator,
      logger: log,
      events: new EventsService(db, config, notifier),
    });
    stops.push(() => server.close());
    if (config.events.dispatcher) {
      const dispatcher = new WebhookDispatcher(db, config, log.child({ component: 'webhooks' }), notifier);
      dispatcher.start();
      stops.push(() => dispatcher.stop());
    }
    await server.listen({ port: config.port, host: config.host });
    const address = server.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    return { url: `http://${host}:${port}`, dataLocation, server, db, registry, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
