import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { Logger } from 'pino';
import { type IdentityHook, localOperator } from './api/identity.js';
import { buildServer } from './api/server.js';
import type { Config } from './config/config.js';
import { Controller } from './controller/controller.js';
import { closeProviders, createProviders, defaultDataplaneUrl } from './controller/providers.js';
import { createDb, type Db, ensureAppRole, migrate } from './db/database.js';
import { EmbeddedDatabase } from './db/embedded-postgres.js';
import { RegistryService } from './registry/registry.service.js';

export interface Tenantry {
  /** Where the API listens; empty for `role: controller`. */
  url: string;
  /** Where the data lives: the embedded cluster's folder, or the external server (without credentials). */
  dataLocation: string;
  /** Absent for `role: controller`. */
  server: FastifyInstance | undefined;
  /** Absent for `role: api`. */
  controller: Controller | undefined;
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
    let controller: Controller | undefined;
    if (config.role !== 'api') {
      const providers = createProviders({
        config,
        db,
        dataplaneUrl: config.providers.dataplaneDatabaseUrl ?? defaultDataplaneUrl(ownerUrl),
      });
      stops.push(() => closeProviders(providers));
      const c = new Controller({
        db,
        config: config.controller,
        providers,
        logger: log.child({ component: 'controller' }),
      });
      c.start();
      stops.push(() => c.stop());
      controller = c;
    }
    if (config.role === 'controller') {
      return { url: '', dataLocation, server: undefined, controller, db, registry, stop };
    }
    const server = await buildServer({
      config,
      db,
      registry,
      identify: opts.identify ?? localOperator,
      logger: log,
    });
    stops.push(() => server.close());
    await server.listen({ port: config.port, host: config.host });
    const address = server.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    return { url: `http://${host}:${port}`, dataLocation, server, controller, db, registry, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
