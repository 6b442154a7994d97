import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { type Config, loadConfig } from '../../src/config/config.js';
import { guardPool } from '../../src/db/connection-errors.js';
import {
  createDb,
  type Db,
  ensureAppRole,
  ensurePlatformRole,
  restrictConnect,
} from '../../src/db/database.js';

export interface TestDatabase {
  name: string;
  ownerUrl: string;
  appUrl: string;
  /** The platform role's connection (platform-scope work; the application role cannot be platform). */
  platformUrl: string;
  /** Connected as the application role (bound by row-level security). */
  db: Db;
  /** Connected as the owner: for fault injection and for looking behind the application's back. */
  owner: pg.Pool;
  config: Config;
  destroy(): Promise<void>;
}

/** Clones the migrated template into a database of this test file's own. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const serverUrl = inject('serverUrl');
  const name = `test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  for (let attempt = 0; ; attempt++) {
    try {
      await admin.query(`create database ${name} template tenantry_template`);
      break;
    } catch (err) {
      // Two clones of one template at the same instant can collide; try again shortly.
      if (attempt > 20 || !String((err as Error).message).includes('being accessed')) throw err;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const ownerUrl = url.toString();
  const appUrl = await ensureAppRole(ownerUrl);
  const platformUrl = await ensurePlatformRole(ownerUrl);
  // As `tenantry serve` does (src/app.ts): only Tenantry's roles connect to its database.
  await restrictConnect(ownerUrl, ['tenantry_app', 'tenantry_platform']);
  const db = createDb(appUrl, 20, { platformUrl });
  const owner = guardPool(new pg.Pool({ connectionString: ownerUrl, max: 4 }));
  const config = loadConfig({}, { TENANTRY_DATA_DIR: '/tmp/unused' });
  return {
    name,
    ownerUrl,
    appUrl,
    platformUrl,
    db,
    owner,
    config,
    async destroy() {
      await db.destroy();
      await owner.end();
      const a = new pg.Client({ connectionString: serverUrl });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}
