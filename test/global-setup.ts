import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { ensureAppRole, ensurePlatformRole, migrate } from '../src/db/database.js';
import { EmbeddedDatabase } from '../src/db/embedded-postgres.js';

export const TEMPLATE = 'tenantry_template';

declare module 'vitest' {
  export interface ProvidedContext {
    serverUrl: string;
  }
}

/**
 * One PostgreSQL for the whole run (embedded, or DATABASE_URL), one migrated template database;
 * every test file clones its own database from the template (test/helpers/test-database.ts).
 */
export default async function setup(project: TestProject) {
  let embedded: EmbeddedDatabase | undefined;
  let dir: string | undefined;
  let serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-test-'));
    await fs.chmod(dir, 0o755);
    embedded = new EmbeddedDatabase({
      clusterDir: path.join(dir, 'pg'),
      credentialsFile: path.join(dir, 'pg-password'),
      ephemeral: true,
    });
    await embedded.start();
    serverUrl = embedded.url;
  }
  // One key-encryption key for the run (src/secrets): test processes and the processes they spawn
  // inherit the variable, so all of them open what any of them sealed.
  const keyDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-test-kek-'));
  process.env.TENANTRY_SECRETS_KEY_FILE ??= path.join(keyDir, 'kek.json');
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${TEMPLATE}`);
  await admin.query(`create database ${TEMPLATE}`);
  await admin.end();
  const templateUrl = new URL(serverUrl);
  templateUrl.pathname = `/${TEMPLATE}`;
  await migrate(templateUrl.toString());
  await ensureAppRole(templateUrl.toString());
  await ensurePlatformRole(templateUrl.toString());
  project.provide('serverUrl', serverUrl);
  return async () => {
    await embedded?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(keyDir, { recursive: true, force: true });
  };
}
