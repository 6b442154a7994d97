import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { loadConfig } from '../config/config.js';
import { guardPool } from '../db/connection-errors.js';
import { EmbeddedDatabase } from '../db/embedded-postgres.js';
import { kekIdsInUse } from '../secrets/data-keys.js';
import { LocalFileKeyProvider } from '../secrets/local-file-key-provider.js';
import { rewrapDataKeys } from '../secrets/rotate-kek.js';

interface SecretsDeps {
  run: (action: () => Promise<void>) => Promise<void>;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * The owner connection of the installation: DATABASE_URL, else the embedded server of the data
 * folder (the running one, through its postmaster.pid and password file, or started for this
 * command when no Tenantry runs there).
 */
async function ownerDatabase(dataDir: string, databaseUrl: string | undefined) {
  if (databaseUrl) return { url: databaseUrl, stop: async () => undefined };
  const clusterDir = path.join(dataDir, 'pg');
  const credentialsFile = path.join(dataDir, 'pg-password');
  if (!existsSync(path.join(clusterDir, 'PG_VERSION')))
    throw new Error(`no Tenantry data in ${dataDir} (set DATABASE_URL, or --data-dir)`);
  const lock = path.join(dataDir, 'tenantry.pid');
  const owner = existsSync(lock) ? Number((await fs.readFile(lock, 'utf8')).trim()) : 0;
  const pidFile = path.join(clusterDir, 'postmaster.pid');
  if (owner > 0 && alive(owner) && existsSync(pidFile)) {
    const port = (await fs.readFile(pidFile, 'utf8')).split('\n')[3]?.trim();
    const password = (await fs.readFile(credentialsFile, 'utf8')).trim();
    return {
      url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/tenantry`,
      stop: async () => undefined,
    };
  }
  const embedded = new EmbeddedDatabase({ clusterDir, credentialsFile });
  await embedded.start();
  const url = new URL(embedded.url);
  url.pathname = '/tenantry';
  return { url: url.toString(), stop: () => embedded.stop() };
}

export function registerSecretsCommands(program: Command, deps: SecretsDeps): void {
  const secrets = program
    .command('secrets')
    .description('secrets at rest (envelope encryption, src/secrets)');
  secrets
    .command('rotate-key')
    .description(
      'make a new key-encryption key current in TENANTRY_SECRETS_KEY_FILE and re-wrap every data key with it ' +
        '(no data is re-encrypted; running processes keep working); --retire then removes unused old keys',
    )
    .option('--data-dir <dir>', 'data folder (or TENANTRY_DATA_DIR)')
    .option('--retire', 'after re-wrapping, remove the keys no data key uses any more')
    .option('--no-new-key', 're-wrap with the current key only (finish an interrupted rotation)')
    .action(async (opts: { dataDir?: string; retire?: boolean; newKey: boolean }) => {
      await deps.run(async () => {
        const config = loadConfig({ ...(opts.dataDir ? { dataDir: opts.dataDir } : {}) });
        const keys = new LocalFileKeyProvider(config.secretsKeyFile);
        if (!existsSync(config.secretsKeyFile))
          throw new Error(`no key file at ${config.secretsKeyFile}: nothing has been sealed with it`);
        const database = await ownerDatabase(config.dataDir, config.databaseUrl);
        const db = new Kysely<unknown>({
          dialect: new PostgresDialect({
            pool: guardPool(new pg.Pool({ connectionString: database.url, max: 1 })),
          }),
        });
        try {
          if (opts.newKey) console.log(`new key-encryption key ${await keys.rotate()} is current`);
          const result = await rewrapDataKeys(keys, (work) => work(db));
          console.log(`re-wrapped ${result.rewrapped} data key(s) with ${result.keyId}`);
          if (opts.retire) {
            const removed = await keys.retire(await kekIdsInUse(db));
            console.log(removed.length ? `retired ${removed.join(', ')}` : 'no key to retire');
          }
        } finally {
          await db.destroy();
          await database.stop();
        }
      });
    });
}
