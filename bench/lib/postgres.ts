import { rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { ensureAppRole, ensurePlatformRole, migrate } from '../../src/db/database.js';
import { EmbeddedDatabase } from '../../src/db/embedded-postgres.js';

export interface BenchPostgres {
  /** Temporary folder holding the cluster; removed by stop(). */
  dir: string;
  /** Superuser URL of the server's `postgres` database. */
  serverUrl: string;
  /** Creates a database, migrates it and makes sure the application role can log in. */
  createDatabase(name: string): Promise<{ ownerUrl: string; appUrl: string }>;
  stop(): Promise<void>;
}

/**
 * A throw-away embedded PostgreSQL, like test/global-setup.ts starts, but durable (fsync on): the
 * figures include the cost of a real commit on both sides of every ratio.
 */
export async function startBenchPostgres(settings?: Record<string, string>): Promise<BenchPostgres> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-'));
  // As root, PostgreSQL runs as `postgres`, which must reach the cluster folder.
  await fs.chmod(dir, 0o755);
  const embedded = new EmbeddedDatabase({
    clusterDir: path.join(dir, 'pg'),
    credentialsFile: path.join(dir, 'pg-password'),
    settings,
  });
  // On Ctrl-C, embedded-postgres's own exit hook stops the server and exits the process; the
  // folder goes then.
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  process.on('exit', removeDir);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      await embedded.stop();
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
      process.off('exit', removeDir);
    }
  };
  try {
    await embedded.start();
    if (process.env.BENCH_PG_STATEMENTS) await loadPgStatStatements(embedded);
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  const serverUrl = embedded.url;
  return {
    dir,
    serverUrl,
    async createDatabase(name) {
      const admin = new pg.Client({ connectionString: serverUrl });
      await admin.connect();
      try {
        await admin.query(`create database ${name}`);
      } finally {
        await admin.end();
      }
      const url = new URL(serverUrl);
      url.pathname = `/${name}`;
      const ownerUrl = url.toString();
      await migrate(ownerUrl);
      await ensureAppRole(ownerUrl);
      // The suites do tenant and platform work over one connection: the platform role, which is
      // bound by the same policies (and sees one tenant when it sets one).
      const appUrl = await ensurePlatformRole(ownerUrl);
      return { ownerUrl, appUrl };
    },
    stop,
  };
}

/**
 * BENCH_PG_STATEMENTS=1: the server restarted with pg_stat_statements loaded (every statement,
 * nested ones too, and its planning), so that a suite can say which statements its time went to
 * (the reconcile suite's flat cost prints them per window). Off by default: tracking costs the
 * server a little on every statement.
 */
async function loadPgStatStatements(embedded: EmbeddedDatabase): Promise<void> {
  const admin = new pg.Client({ connectionString: embedded.url });
  await admin.connect();
  try {
    await admin.query(`alter system set shared_preload_libraries = 'pg_stat_statements'`);
    await admin.query(`alter system set pg_stat_statements.track = 'all'`);
    await admin.query(`alter system set pg_stat_statements.track_planning = on`);
  } finally {
    await admin.end();
  }
  await embedded.stop();
  await embedded.start();
}
