import { generateKeyPairSync } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { type IdentityHook, localOperator } from '../../src/api/identity.js';
import { buildServer } from '../../src/api/server.js';
import { AuditService } from '../../src/audit/audit.service.js';
import { AuditSigner } from '../../src/audit/index.js';
import { createDb } from '../../src/db/database.js';
import { metrics } from '../../src/observability/metrics.js';
import { RequestLog } from '../../src/observability/request-log.js';
import { RegistryService } from '../../src/registry/registry.service.js';
import { createTestDatabase, type TestDatabase } from './test-database.js';

export interface TestServer {
  t: TestDatabase;
  app: FastifyInstance;
  url: string;
  audit: AuditService;
  requestLog: RequestLog;
  request(
    method: string,
    path: string,
    opts?: { body?: unknown; raw?: string; contentType?: string; headers?: Record<string, string> },
  ): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

export interface TestServerOptions {
  identify?: IdentityHook;
  logger?: Logger;
  tracing?: boolean;
  /** A further server over an existing test database, with a pool of its own (a second API process). */
  database?: TestDatabase;
}

/**
 * The real HTTP server on a loopback port over this test file's own database. With `database`, a
 * further server over an existing test database, with a connection pool of its own (like a second
 * API process); closing it leaves the database alone.
 */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const t = opts.database ?? (await createTestDatabase());
  const db = opts.database ? createDb(t.appUrl, 10) : t.db;
  const logger = opts.logger ?? pino({ level: 'silent' });
  const requestLog = new RequestLog(db, logger);
  const audit = new AuditService(db, new AuditSigner(generateKeyPairSync('ed25519').privateKey));
  const app = await buildServer({
    config: t.config,
    db,
    registry: new RegistryService(db, t.config),
    audit,
    identify: opts.identify ?? localOperator,
    logger,
    metrics,
    requestLog,
    tracing: opts.tracing ?? false,
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  return {
    t,
    app,
    url,
    audit,
    requestLog,
    async request(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
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
