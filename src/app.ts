import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { Logger } from 'pino';
import { buildServer } from './api/server.js';
import { AuditService, readTrustedKeys } from './audit/audit.service.js';
import { AuditCheckpointer, loadAuditSigner } from './audit/index.js';
import type { Config } from './config/config.js';
import { Controller } from './controller/controller.js';
import { closeProviders, createProviders, defaultDataplaneUrl } from './controller/providers.js';
import { createDb, type Db, ensureAppRole, ensurePlatformRole, migrate } from './db/database.js';
import { EmbeddedDatabase } from './db/embedded-postgres.js';
import { EventNotifier } from './events/event-notifier.js';
import { EventsService } from './events/events.service.js';
import { KafkaEventBus } from './events/kafka-event-bus.js';
import type { BuiltinIssuer } from './identity/builtin-issuer.js';
import { createSecurity, type Security } from './identity/security.js';
import { metrics } from './observability/metrics.js';
import { RequestLog } from './observability/request-log.js';
import { startTracing } from './observability/tracing.js';
import { RegistryService } from './registry/registry.service.js';
import { WebhookDispatcher } from './webhooks/webhook-dispatcher.js';

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
  audit: AuditService;
  /** Absent for `role: controller`. */
  security: Security | undefined;
  stop(): Promise<void>;
}

export interface StartOptions {
  logger: Logger;
  /** The built-in token issuer (default: its key from the data folder or TENANTRY_TOKEN_SIGNING_KEY_FILE). */
  issuer?: BuiltinIssuer;
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
    if (config.tracing) {
      const tracing = startTracing({ instanceId: config.instanceId });
      stops.push(() => tracing.shutdown());
    }
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
    const platformUrl = config.platformDatabaseUrl ?? (await ensurePlatformRole(ownerUrl));
    // Tenant requests run as tenantry_app; platform-scope work over a pool of tenantry_platform.
    const db = createDb(appUrl, 20, { platformUrl });
    stops.push(() => db.destroy());
    const requestLog = new RequestLog(db, log, { retentionDays: config.requestLogRetentionDays });
    requestLog.start();
    stops.push(() => requestLog.stop());
    const registry = new RegistryService(db, config);
    const signer = await loadAuditSigner({
      dataDir: config.dataDir,
      ...(config.auditSigningKeyFile ? { keyFile: config.auditSigningKeyFile } : {}),
    });
    const audit = new AuditService(db, signer, await readTrustedKeys(config.auditTrustedKeyFiles));
    const checkpointer = new AuditCheckpointer(db, signer, config.auditCheckpointIntervalMs, (err) =>
      log.error({ err }, 'audit checkpoint failed'),
    );
    checkpointer.start();
    stops.push(async () => {
      await checkpointer.stop();
      // A last checkpoint, so the heads written until now are signed before the process ends.
      await checkpointer.tick();
    });
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
      return {
        url: '',
        dataLocation,
        server: undefined,
        controller,
        db,
        registry,
        audit,
        security: undefined,
        stop,
      };
    }
    const notifier = new EventNotifier(appUrl, log);
    await notifier.start();
    stops.push(() => notifier.stop());
    const security = await createSecurity(config, db, opts.issuer ? { issuer: opts.issuer } : {});
    const server = await buildServer({
      config,
      db,
      registry: security.guard(registry),
      audit,
      security,
      logger: log,
      metrics,
      requestLog,
      tracing: config.tracing,
      events: new EventsService(db, config, notifier),
    });
    stops.push(() => server.close());
    if (config.events.dispatcher) {
      const dispatcher = new WebhookDispatcher(db, config, log.child({ component: 'webhooks' }), notifier);
      dispatcher.start();
      stops.push(() => dispatcher.stop());
    }
    if (config.events.bus === 'kafka') {
      if (!config.kafka)
        throw new Error('TENANTRY_EVENT_BUS=kafka needs a Kafka cluster: set TENANTRY_KAFKA_BROKERS.');
      const bus = new KafkaEventBus(
        db,
        appUrl,
        config.kafka,
        config.source,
        log.child({ component: 'event-bus' }),
      );
      await bus.start();
      stops.push(() => bus.stop());
    }
    await server.listen({ port: config.port, host: config.host });
    const address = server.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    return {
      url: `http://${host}:${port}`,
      dataLocation,
      server,
      controller,
      db,
      registry,
      audit,
      security,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
