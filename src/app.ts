import type { KeyObject } from 'node:crypto';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { Logger } from 'pino';
import { AgentService } from './agent/agent.service.js';
import { EmbeddedAgents } from './agent/embedded-agents.js';
import { LeaseMonitor } from './agent/lease-monitor.js';
import { buildServer } from './api/server.js';
import { AuditService, readTrustedKeys } from './audit/audit.service.js';
import {
  AuditCheckpointer,
  AuditSequencer,
  type AuditSigner,
  CheckpointPublisher,
  loadAuditSigner,
  parseWitnessEndpoint,
  WitnessSubmitter,
} from './audit/index.js';
import type { Config } from './config/config.js';
import { Controller } from './controller/controller.js';
import {
  closeProviders,
  createProviders,
  defaultDataplaneUrl,
  type ProviderSet,
} from './controller/providers.js';
import { JobTypes } from './controller/queue/job-types.js';
import { guardClient } from './db/connection-errors.js';
import {
  asPlatform,
  createDb,
  type Db,
  ensureAppRole,
  ensurePlatformRole,
  migrate,
  restrictConnect,
} from './db/database.js';
import { EmbeddedDatabase } from './db/embedded-postgres.js';
import { systemClock } from './domain/clock.js';
import { EventNotifier } from './events/event-notifier.js';
import { EventsService } from './events/events.service.js';
import { KafkaEventBus } from './events/kafka-event-bus.js';
import type { BuiltinIssuer } from './identity/builtin-issuer.js';
import { createSecurity, type Security } from './identity/security.js';
import { Metrics } from './observability/metrics.js';
import { RequestLog } from './observability/request-log.js';
import { startTracing } from './observability/tracing.js';
import { PlacementPolicy } from './placement/placement.policy.js';
import { SecretStore } from './providers/postgres/secret-store.js';
import { ObjectCache, type ObjectInvalidation, watchedKinds } from './registry/object-cache.js';
import { RegistryService } from './registry/registry.service.js';
import { withPromotions } from './releases/promotion-workflow.js';
import { RETENTION_SWEEP, retentionSweepHandler, scheduleRetentionSweep } from './runtime/retention-sweep.js';
import { LocalFileKeyProvider, secretCipherFor } from './secrets/index.js';
import { workflowTypes } from './tenant-migrations/migration-workflows.js';
import { StandbyKeeper } from './tenant-migrations/standby-keeper.js';
import { literalAddressRefusal } from './webhooks/url-guard.js';
import { WebhookDispatcher } from './webhooks/webhook-dispatcher.js';
import { sealSecrets } from './webhooks/webhook-secret-sealing.js';
import { applySecret, type StoredSecret } from './webhooks/webhook-secrets.js';
import { WorkflowEngine } from './workflows/workflow-engine.js';

export interface Tenantry {
  /** Where the API listens; empty for `role: controller`. */
  url: string;
  /** Where the data lives: the embedded cluster's folder, or the external server (without credentials). */
  dataLocation: string;
  /** Absent for `role: controller`. */
  server: FastifyInstance | undefined;
  /** Absent for `role: api`. */
  controller: Controller | undefined;
  /** The workflow engine (src/workflows); absent for `role: api`. */
  workflowEngine: WorkflowEngine | undefined;
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
  const client = guardClient(new pg.Client({ connectionString: serverUrl }));
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

/** The registry with its placement policy and the webhook policy (URL guard, secret rotation) of src/webhooks. */
export function createRegistry(db: Db, config: Config, objects?: ObjectCache): RegistryService {
  const cipher = secretCipherFor(db, config);
  return new RegistryService(
    db,
    {
      config,
      policy: new PlacementPolicy(),
      webhooks: {
        urlRefusal: (url) => literalAddressRefusal(url, config.events.webhookAllowedNetworks) ?? undefined,
        // New secrets are sealed before they reach the row (src/secrets); kept ones stay sealed.
        settleSecret: async (existing, given, endpoint) => {
          const change = applySecret(
            existing as StoredSecret[] | null,
            given,
            new Date(),
            config.events.webhookSecretOverlapMs,
          );
          if (change.kind !== 'ok') return change;
          return { ...change, secrets: await sealSecrets(cipher, change.secrets, endpoint) };
        },
      },
    },
    objects,
  );
}

export interface ComposeOptions {
  config: Config;
  db: Db;
  logger: Logger;
  /** The process's metrics (one registry per process). */
  metrics: Metrics;
  /** Signs audit checkpoints and exports. */
  auditSigner: AuditSigner;
  /** Further public keys audit verification trusts (rotated-out signers). */
  trustedAuditKeys?: KeyObject[];
  /** The built-in token issuer (default: its key from the data folder or TENANTRY_TOKEN_SIGNING_KEY_FILE). */
  issuer?: BuiltinIssuer;
  /** The event log service (with a LISTEN notifier); absent: one that polls. */
  events?: EventsService;
  /** That LISTEN notifier (it also wakes the cell agents' long polls). */
  notifier?: EventNotifier;
  /** Server spans per request (a tracer provider is registered). */
  tracing?: boolean;
  /** Build the HTTP API (security and server); false for `role: controller`. */
  api?: boolean;
}

export interface Services {
  registry: RegistryService;
  audit: AuditService;
  requestLog: RequestLog;
  metrics: Metrics;
  /** Absent without the API. */
  security: Security | undefined;
  /** The HTTP server, built but not listening; absent without the API. */
  server: FastifyInstance | undefined;
  /** The API's read cache of GET answers; absent without the API or without NOTIFY. */
  objects?: ObjectCache | undefined;
}

/**
 * Builds every service from its dependencies; starts nothing (the caller starts what runs and
 * listens). startTenantry() and the test server (test/helpers/test-server.ts) both use it.
 */
export async function compose(o: ComposeOptions): Promise<Services> {
  const { config, db, logger, metrics } = o;
  // The identity and object caches need NOTIFY: the process's LISTEN connection, or the event log's.
  const notifier = o.api === false ? undefined : (o.notifier ?? o.events?.notifier);
  const objects = notifier ? await objectCache(db, config, notifier, logger) : undefined;
  const registry = createRegistry(db, config, objects);
  const audit = new AuditService(db, o.auditSigner, o.trustedAuditKeys);
  const requestLog = new RequestLog(db, logger, { retentionDays: config.requestLogRetentionDays });
  if (o.api === false)
    return { registry, audit, requestLog, metrics, security: undefined, server: undefined };
  const security = await createSecurity(config, db, {
    ...(o.issuer ? { issuer: o.issuer } : {}),
    metrics,
    ...(notifier ? { notifier } : {}),
  });
  const server = await buildServer({
    config,
    db,
    registry: security.guard(registry),
    audit,
    security,
    logger,
    metrics,
    requestLog,
    tracing: o.tracing ?? false,
    events: o.events ?? new EventsService(db, config),
    ...(o.notifier ? { notifier: o.notifier } : {}),
    ...(objects ? { objects } : {}),
  });
  return { registry, audit, requestLog, metrics, security, server, objects };
}

/** The most GET answers one process keeps (src/registry/object-cache.ts). */
const OBJECT_CACHE_ENTRIES = 10_000;

/** The API's read cache, on for the kinds whose tables send `tenantry_objects` (migration 0057). */
async function objectCache(
  db: Db,
  config: Config,
  notifier: ObjectInvalidation,
  logger: Logger,
): Promise<ObjectCache | undefined> {
  if (config.objectCacheSeconds <= 0) return undefined;
  const cache = new ObjectCache({
    ttlMs: config.objectCacheSeconds * 1000,
    maxEntries: OBJECT_CACHE_ENTRIES,
  });
  try {
    cache.attach(notifier, await watchedKinds(db));
  } catch (err) {
    // The catalogue could not be read: no kind is cached, every GET reads the database.
    logger.warn({ err }, 'object cache off: the watched kinds could not be read');
    return undefined;
  }
  return cache;
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
      const tracing = await startTracing({ instanceId: config.instanceId });
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
    // The key-encryption key of the secrets at rest: generated (0600) on the first start unless
    // TENANTRY_SECRETS_KEY_FILE names one; read now, so a missing or broken file stops the start.
    const keys = new LocalFileKeyProvider(config.secretsKeyFile);
    await keys.currentKeyId();
    const applied = await migrate(ownerUrl, { keys });
    if (applied.length > 0) log.info({ migrations: applied }, 'migrations applied');
    const appUrl = config.appDatabaseUrl ?? (await ensureAppRole(ownerUrl));
    const platformUrl = config.platformDatabaseUrl ?? (await ensurePlatformRole(ownerUrl));
    // With the roles Tenantry derives, nobody else connects to its database through PUBLIC.
    if (!config.appDatabaseUrl && !config.platformDatabaseUrl)
      await restrictConnect(ownerUrl, ['tenantry_app', 'tenantry_platform']).catch(
        (err: Error & { code?: string }) => {
          // A DATABASE_URL role that does not own the database cannot change who connects: say so.
          if (err.code !== '42501') throw err;
          log.warn({ err: err.message }, 'could not take CONNECT on the database from PUBLIC');
        },
      );
    // Tenant requests run as tenantry_app; platform-scope work over a pool of tenantry_platform.
    const db = createDb(appUrl, 20, { platformUrl });
    stops.push(() => db.destroy());
    const metrics = new Metrics();
    // NOTIFY wakes the API's event readers and the workflow engine early (both also poll).
    const notifier = new EventNotifier(appUrl, log);
    await notifier.start();
    stops.push(() => notifier.stop());
    const signer = await loadAuditSigner({
      dataDir: config.dataDir,
      ...(config.auditSigningKeyFile ? { keyFile: config.auditSigningKeyFile } : {}),
    });
    const services = await compose({
      config,
      db,
      logger: log,
      metrics,
      auditSigner: signer,
      trustedAuditKeys: await readTrustedKeys(config.auditTrustedKeyFiles),
      ...(opts.issuer ? { issuer: opts.issuer } : {}),
      ...(config.role !== 'controller'
        ? { events: new EventsService(db, config, notifier), ...(notifier ? { notifier } : {}) }
        : {}),
      tracing: config.tracing,
      api: config.role !== 'controller',
    });
    const { registry, audit, requestLog, security } = services;
    requestLog.start();
    stops.push(() => requestLog.stop());
    // Each checkpoint is sent to the witnesses (TENANTRY_AUDIT_WITNESSES) as it is made, in the
    // background: neither the sequencer nor the checkpointer waits for a witness.
    const witnesses = new WitnessSubmitter(
      db,
      signer,
      config.auditWitnesses.map(parseWitnessEndpoint),
      (chain, o) => {
        if (o.status !== 'cosigned') log.warn({ chain, witness: o }, 'audit checkpoint not cosigned');
      },
    );
    // Stopped last (stops run in reverse): what the last checkpoints published is submitted.
    stops.push(() => witnesses.idle());
    const checkpointer = new AuditCheckpointer(
      db,
      signer,
      config.auditCheckpointIntervalMs,
      (err) => log.error({ err }, 'audit checkpoint failed'),
      (published) => witnesses.submit(published),
    );
    checkpointer.start();
    stops.push(async () => {
      await checkpointer.stop();
      // A last checkpoint, so the heads written until now are signed before the process ends.
      await checkpointer.tick();
    });
    // The logs the sequencer moves get a signed checkpoint event, at most one per log per second,
    // published a few times a second for all of them together (not per batch).
    const publisher = new CheckpointPublisher(db, signer, {
      onPublished: (published) => witnesses.submit(published),
      onError: (err) => log.warn({ err }, 'audit checkpoint publication failed; retrying'),
    });
    publisher.start();
    stops.push(() => publisher.stop());
    // Every process runs a sequencer; an advisory lock makes one of them integrate at a time.
    const sequencer = new AuditSequencer(db, {
      onBatch: (batch) => publisher.add(batch.trees),
      onError: (err) => log.warn({ err }, 'audit sequencing failed; retrying'),
    });
    sequencer.start();
    stops.push(async () => {
      await sequencer.stop();
      // What committed until now goes into its chain before the last checkpoint.
      await sequencer.tick();
    });
    let controller: Controller | undefined;
    let workflowEngine: WorkflowEngine | undefined;
    let providers: ProviderSet | undefined;
    if (config.role !== 'api') {
      providers = createProviders({
        config,
        db,
        dataplaneUrl: config.providers.dataplaneDatabaseUrl ?? defaultDataplaneUrl(ownerUrl),
        logger: log,
      });
      const p = providers;
      stops.push(() => closeProviders(p));
      // Cells whose agent stopped heartbeating show Unknown (src/agent).
      const leases = new LeaseMonitor(
        db,
        Math.max(100, Math.floor(config.agent.heartbeatIntervalMs / 2)),
        log.child({ component: 'agents' }),
      );
      leases.start();
      stops.push(() => leases.stop());
      // Region standbys (issue 19): established where a tenant names one, measured and blob-synced.
      const standbys = new StandbyKeeper({ db, providers: p, logger: log.child({ component: 'standbys' }) });
      standbys.start();
      stops.push(() => standbys.stop());
      // Besides reconciles, the queue serves the retention sweep of the runtime inventory (seed 002).
      await asPlatform(db, scheduleRetentionSweep);
      const c = new Controller({
        db,
        config: config.controller,
        providers,
        logger: log.child({ component: 'controller' }),
        metrics,
        jobTypes: new JobTypes().register(RETENTION_SWEEP, retentionSweepHandler(db, systemClock)),
      });
      c.start();
      stops.push(() => c.stop());
      controller = c;
      const engine = new WorkflowEngine({
        db,
        registry: withPromotions(
          workflowTypes(
            db,
            providers,
            config.providers.dataplaneDatabaseUrl ?? defaultDataplaneUrl(ownerUrl),
          ),
          { db, clock: systemClock, recheckMs: 30_000 },
        ),
        logger: log.child({ component: 'workflows' }),
        config: {
          ...config.controller,
          stepTimeoutMs: 60_000,
        },
      });
      engine.start();
      // A workflow started (or retried, or cancelled) anywhere is picked up at once, not at the next poll.
      const unsubscribe = notifier.subscribe('tenantry_workflows', () => engine.wake());
      stops.push(async () => {
        unsubscribe();
        await engine.stop();
      });
      workflowEngine = engine;
    }
    if (config.role === 'controller') {
      return {
        url: '',
        dataLocation,
        server: undefined,
        controller,
        workflowEngine,
        db,
        registry,
        audit,
        security: undefined,
        stop,
      };
    }
    const server = services.server;
    if (!server || !notifier) throw new Error('the API role builds the server');
    stops.push(() => server.close());
    if (config.events.dispatcher) {
      const dispatcher = new WebhookDispatcher(
        db,
        config,
        log.child({ component: 'webhooks' }),
        notifier,
        metrics,
      );
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
    if (config.role === 'all' && config.agent.embedded && providers && security?.issuer) {
      // The embedded default's data plane: the same agent as `tenantry agent`, in process, over loopback.
      const loopback = ['0.0.0.0', '::', 'localhost'].includes(config.host) ? '127.0.0.1' : host;
      const embeddedAgents = new EmbeddedAgents({
        agents: new AgentService(db, config.agent, security.issuer, security.authorizer),
        server: `http://${loopback}:${port}`,
        providers,
        secrets: new SecretStore(db, secretCipherFor(db, config)),
        dataDir: config.dataDir,
        logger: log.child({ component: 'agent' }),
        resyncMs: config.controller.resyncIntervalMs,
        intervalMs: 2_000,
      });
      await embeddedAgents.start();
      // Stopped before the server closes (stops run in reverse).
      stops.push(() => embeddedAgents.stop());
    }
    return {
      url: `http://${host}:${port}`,
      dataLocation,
      server,
      controller,
      workflowEngine,
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
