import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino, { type Logger } from 'pino';
import { afterAll, beforeAll } from 'vitest';
import { createRegistry } from '../../src/app.js';
import { type Config, type ControllerConfig, loadConfig } from '../../src/config/config.js';
import { type RequestContext, systemContext } from '../../src/context/request-context.js';
import { Controller } from '../../src/controller/controller.js';
import {
  closeProviders,
  createProviders,
  defaultDataplaneUrl,
  type ProviderSet,
} from '../../src/controller/providers.js';
import type { JobTypes } from '../../src/controller/queue/job-types.js';
import { createDb, type Db } from '../../src/db/database.js';
import type { RegistryService } from '../../src/registry/registry.service.js';
import { secretsKeyEnv } from './secrets-key-env.js';
import { createTestDatabase, type TestDatabase } from './test-database.js';

/** Short leases, quick backoff, a long resync: what controller tests want unless they say otherwise. */
export const FAST: ControllerConfig = {
  workers: 8,
  leaseMs: 1_000,
  backoffBaseMs: 20,
  backoffCapMs: 200,
  maxAttempts: 3,
  resyncIntervalMs: 60_000,
  pollIntervalMs: 50,
};

export interface TestController {
  controller: Controller;
  providers: ProviderSet;
  config: Config;
  db: Db;
  stop(): Promise<void>;
}

/** What a controller test file shares: a test database of its own, a registry over it, and who applies. */
export interface ControllerTestFile {
  /** Set by the file's beforeAll, as is `registry`. */
  t: TestDatabase;
  registry: RegistryService;
  ctx: RequestContext;
}

/**
 * Registers a controller test file's beforeAll (its test database and a registry over it, then
 * `seed`) and afterAll (the data-plane database the providers created is dropped, then the test
 * database). Call it at the top of the file.
 */
export function useControllerTestDatabase(
  seed?: (f: ControllerTestFile) => Promise<unknown>,
): ControllerTestFile {
  const f = { ctx: systemContext('test-operator') } as ControllerTestFile;
  beforeAll(async () => {
    f.t = await createTestDatabase();
    f.registry = createRegistry(f.t.db, f.t.config);
    await seed?.(f);
  });
  afterAll(async () => {
    await dropDataplane(f.t);
    await f.t?.destroy();
  });
  return f;
}

/**
 * Manifests of a customer with one tenant (`<customer>-eu-dev`), a system, and that system's
 * deployment in the tenant (`<customer>-eu-dev-<system>`). Display names are the capitalised names.
 */
const doc = (kind: string, metadata: { name?: string }, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});

export function deploymentManifests(customer: string, system: string): unknown[] {
  const title = (name: string) => name.charAt(0).toUpperCase() + name.slice(1);
  return [
    doc('Customer', { name: customer }, { displayName: title(customer), shortCode: customer }),
    doc('Tenant', {}, { customer, region: 'eu', environmentType: 'dev' }),
    doc('System', { name: system }, { displayName: title(system), serviceId: system }),
    doc('Deployment', {}, { tenant: `${customer}-eu-dev`, system }),
  ];
}

/** A customer (`displayName`) with a pool tenant (`<customer>-eu-dev`) and the tenant's pool database. */
export function poolTenantManifests(customer: string, displayName: string): unknown[] {
  return [
    doc('Customer', { name: customer }, { displayName, shortCode: customer }),
    doc('Tenant', {}, { customer, region: 'eu', environmentType: 'dev', isolation: 'pool' }),
    doc(
      'IntegrationResource',
      {},
      { scope: { tenant: `${customer}-eu-dev` }, type: 'database', database: { isolation: 'pool' } },
    ),
  ];
}

/** A cell of region eu for `dev` tenants, room for five. */
export function cellManifest(name: string, tenancy: 'shared' | 'dedicated' = 'shared'): unknown {
  return {
    apiVersion: 'tenantry.dev/v1',
    kind: 'Cell',
    metadata: { name },
    spec: { region: 'eu', stage: 'nonprod', environmentTypes: ['dev'], tenancy, capacity: { tenants: 5 } },
  };
}

export async function tempDataDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-ctl-'));
}

/** A controller over the test database, with its own connection pool (as another process would have). */
export async function startController(
  t: TestDatabase,
  opts: {
    dataDir?: string;
    env?: Record<string, string>;
    controller?: Partial<ControllerConfig>;
    providers?: (p: ProviderSet) => Partial<ProviderSet>;
    logger?: Logger;
    /** Job types served besides reconciles (e.g. the retention sweep). */
    jobTypes?: JobTypes;
  } = {},
): Promise<TestController> {
  const dataDir = opts.dataDir ?? (await tempDataDir());
  const config = loadConfig({}, { TENANTRY_DATA_DIR: dataDir, ...secretsKeyEnv(), ...opts.env });
  const db = createDb(t.appUrl, 10, { platformUrl: t.platformUrl });
  const logger = opts.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  let providers = createProviders({
    config,
    db,
    dataplaneUrl: config.providers.dataplaneDatabaseUrl ?? defaultDataplaneUrl(t.ownerUrl),
    logger,
  });
  if (opts.providers) providers = { ...providers, ...opts.providers(providers) };
  const controller = new Controller({
    db,
    config: { ...FAST, ...opts.controller },
    providers,
    logger,
    ...(opts.jobTypes ? { jobTypes: opts.jobTypes } : {}),
  });
  controller.start();
  return {
    controller,
    providers,
    config,
    db,
    async stop() {
      await controller.stop();
      await closeProviders(providers);
      await db.destroy();
    },
  };
}

/** Polls until `check` returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const started = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() - started > timeoutMs)
      throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface StatusRow {
  kind: string;
  slug: string;
  phase: string;
  reason: string;
  message: string;
  deleted: boolean;
}

/** Every registry object's phase and Ready reason, seen as the owner (behind the API's back). */
export async function statuses(owner: pg.Pool): Promise<StatusRow[]> {
  const r = await owner.query<StatusRow>(`
    select kind, slug, phase, c->>'reason' as reason, c->>'message' as message, deleted
    from (
      select 'Customer' as kind, slug, phase, conditions, deleted_at is not null as deleted from customers
      union all select 'System', slug, phase, conditions, deleted_at is not null from systems
      union all select 'Tenant', slug, phase, conditions, deleted_at is not null from tenants
      union all select 'Deployment', slug, phase, conditions, deleted_at is not null from deployments
      union all select 'IntegrationResource', slug, phase, conditions, deleted_at is not null from integration_resources
    ) o, lateral (select c from jsonb_array_elements(o.conditions) c where c->>'type' = 'Ready') ready
    order by kind, slug`);
  return r.rows;
}

export async function dropDataplane(t: TestDatabase): Promise<void> {
  const url = new URL(t.ownerUrl);
  const name = `${url.pathname.slice(1)}_dataplane`;
  url.pathname = '/postgres';
  const c = new pg.Client({ connectionString: url.toString() });
  await c.connect();
  await c.query(`drop database if exists ${name} with (force)`);
  await c.end();
}
