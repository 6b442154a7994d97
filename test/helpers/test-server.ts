import { generateKeyPairSync } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { compose } from '../../src/app.js';
import type { AuditService } from '../../src/audit/audit.service.js';
import { AuditSigner } from '../../src/audit/index.js';
import { createDb } from '../../src/db/database.js';
import type { EventNotifier } from '../../src/events/event-notifier.js';
import type { EventsService } from '../../src/events/events.service.js';
import { BuiltinIssuer, type MintOptions } from '../../src/identity/builtin-issuer.js';
import type { Security } from '../../src/identity/security.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { RequestLog } from '../../src/observability/request-log.js';
import type { ObjectCache } from '../../src/registry/object-cache.js';
import { createTestDatabase, type TestDatabase } from './test-database.js';

export interface RequestOptions {
  body?: unknown;
  raw?: string;
  contentType?: string;
  headers?: Record<string, string>;
  /** The bearer token; default: a platform-admin token of the built-in issuer; `null`: none. */
  token?: string | null;
}

export interface TestServer {
  t: TestDatabase;
  app: FastifyInstance;
  url: string;
  audit: AuditService;
  requestLog: RequestLog;
  /** The server's metrics (what GET /metrics exposes). */
  metrics: Metrics;
  security: Security;
  /** The read cache of GET answers (only with a notifier). */
  objects: ObjectCache | undefined;
  issuer: BuiltinIssuer;
  /** The platform-admin token `request()` sends by default. */
  adminToken: string;
  /** Mints a token of the server's built-in issuer (default: no session). */
  token(opts: Partial<MintOptions>): Promise<string>;
  request(
    method: string,
    path: string,
    opts?: RequestOptions,
  ): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

export interface TestServerOptions {
  /** Change the configuration before the server is built (e.g. trusted issuers). */
  configure?: (config: TestDatabase['config']) => void;
  logger?: Logger;
  /** Server spans per request (the test registers a tracer provider). */
  tracing?: boolean;
  /** A further server over an existing test database, with a pool of its own (a second API process). */
  database?: TestDatabase;
  /** The event log service (e.g. with a LISTEN notifier); default: one that polls. */
  events?: EventsService;
  /**
   * The process's LISTEN connection (like `tenantry serve`'s): turns the identity cache on. Also
   * taken from `events` when that has one. Without either, every request identifies.
   */
  notifier?: EventNotifier;
}

/**
 * The real HTTP server on a loopback port over this test file's own database, with authentication
 * on. With `database`, a further server over an existing test database, with a connection pool of
 * its own (like a second API process); closing it leaves the database alone.
 */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const t = opts.database ?? (await createTestDatabase());
  const db = opts.database ? createDb(t.appUrl, 10, { platformUrl: t.platformUrl }) : t.db;
  opts.configure?.(t.config);
  const logger = opts.logger ?? pino({ level: 'silent' });
  const issuer = await BuiltinIssuer.ephemeral(t.config.identity.issuer, t.config.identity.audience);
  // The same composition as `tenantry serve` (src/app.ts), over this database.
  const { server, security, requestLog, audit, metrics, objects } = await compose({
    config: t.config,
    db,
    logger,
    metrics: new Metrics(),
    auditSigner: new AuditSigner(generateKeyPairSync('ed25519').privateKey),
    issuer,
    tracing: opts.tracing ?? false,
    ...(opts.events ? { events: opts.events } : {}),
    ...(opts.notifier ? { notifier: opts.notifier } : {}),
  });
  if (!server || !security) throw new Error('compose() built no API');
  const app = server;
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const token = (o: Partial<MintOptions>) =>
    issuer.mint({ subject: 'test-admin', roles: ['platform-admin'], sessionId: null, ...o });
  const adminToken = await token({});
  return {
    t,
    app,
    url,
    audit,
    requestLog,
    metrics,
    security,
    objects,
    issuer,
    adminToken,
    token,
    async request(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      const bearer = opts.token === undefined ? adminToken : opts.token;
      if (bearer !== null && headers.authorization === undefined) headers.authorization = `Bearer ${bearer}`;
      let body: string | undefined;
      if (opts.raw !== undefined) {
        body = opts.raw;
        headers['content-type'] = opts.contentType ?? 'application/json';
      } else if (opts.body !== undefined) {
        body = JSON.stringify(opts.body);
        headers['content-type'] = 'application/json';
      }
      const res = await fetch(`${url}${path}`, { method, headers, body });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        // leave as text
      }
      return { status: res.status, body: parsed, headers: res.headers };
    },
    async close() {
      await app.close();
      await requestLog.stop();
      if (opts.database) await db.destroy();
      else await t.destroy();
    },
  };
}
