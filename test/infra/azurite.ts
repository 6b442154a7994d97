/**
 * Azurite's Blob service (the devDependency) on a free loopback port, in memory, for tests and local
 * development. The account is Azurite's documented development account (devstoreaccount1 and its
 * published key), which only ever works against an emulator.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './kafka-broker.js';

const BIN = fileURLToPath(new URL('../../node_modules/.bin/azurite-blob', import.meta.url));
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface Azurite {
  /** The TENANTRY_AZURE_STORAGE_CONNECTION_STRING value. */
  connectionString: string;
  blobEndpoint: string;
  startMillis: number;
  stop(): Promise<void>;
}

export function azuriteConnectionString(blobEndpoint: string, key = AZURITE_KEY): string {
  return `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${key};BlobEndpoint=${blobEndpoint};`;
}

/** Why Azurite cannot run here, or undefined. */
export function azuriteUnavailableReason(): string | undefined {
  return fs.existsSync(BIN) ? undefined : `${BIN} is missing (the azurite devDependency)`;
}

export async function startAzurite(options: { port?: number } = {}): Promise<Azurite> {
  const port = options.port || (await freePort());
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tenantry-azurite-'));
  const started = Date.now();
  const child: ChildProcess = spawn(
    BIN,
    [
      '--blobHost',
      '127.0.0.1',
      '--blobPort',
      String(port),
      '--disableTelemetry',
      '--inMemoryPersistence',
      '--skipApiVersionCheck',
      '--loose',
      '--silent',
    ],
    // In memory; its working folder only catches whatever else it might write.
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
  );
  let output = '';
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('successfully listens on')) resolve();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code, signal) =>
      reject(new Error(`Azurite exited with ${signal ?? code}:\n${output}`)),
    );
    setTimeout(() => reject(new Error(`Azurite not ready after 60 s:\n${output}`)), 60_000).unref();
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await fsp.rm(dir, { recursive: true, force: true });
  };
  try {
    await ready;
  } catch (err) {
    await stop();
    throw err;
  }
  const blobEndpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  return {
    connectionString: azuriteConnectionString(blobEndpoint),
    blobEndpoint,
    startMillis: Date.now() - started,
    stop,
  };
}
