import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import type { ProviderSet } from '../../src/controller/providers.js';
import type { DesiredResource, ResourceProvider } from '../../src/providers/provider.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts')];

/**
 * The control plane's providers when every cell's data plane is an agent's: each call is recorded
 * in `calls` (as `entry` words it: by default `<type> <physical name>`) and refused, so a test
 * shows the control plane touched no data-plane engine.
 */
export function refusingProviders(
  calls: string[],
  entry: (d: DesiredResource, type: ResourceProvider['type']) => string = (d, type) =>
    `${type} ${d.physicalName}`,
): ProviderSet {
  const refusing = (type: ResourceProvider['type']): ResourceProvider => {
    const refuse = async (d: DesiredResource): Promise<never> => {
      calls.push(entry(d, type));
      throw new Error('the control plane called a data-plane provider');
    };
    return {
      type,
      name: 'control-plane',
      observe: refuse,
      ensure: refuse,
      delete: refuse,
      close: async () => {},
    };
  };
  return {
    'blob-container': { provider: refusing('blob-container') },
    'kafka-topic': { provider: refusing('kafka-topic') },
    database: { provider: refusing('database') },
    regions: {},
  };
}

/**
 * `tenantry agent` in its own process for `cell`, joined with `joinToken` (none: restarted with the
 * credential it saved in `dataDir`), its provider settings (data-plane PostgreSQL, storage, key
 * file) in `env` (a variable set to undefined there is not passed on); resolves once it runs
 * against the server. The caller kills the processes in `children` when done.
 */
export function startAgentProcess(o: {
  server: string;
  cell: string;
  dataDir: string;
  joinToken?: string;
  env?: Record<string, string | undefined>;
  children: ChildProcess[];
}): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      ...CLI,
      '--server',
      o.server,
      'agent',
      '--cell',
      o.cell,
      '--data-dir',
      o.dataDir,
      ...(o.joinToken ? ['--join-token', o.joinToken] : []),
    ],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TENANTRY_LOG_LEVEL: 'warn', TENANTRY_RESYNC_MS: '1000', ...o.env },
    },
  );
  o.children.push(child);
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      if (out.includes('running against')) {
        clearInterval(timer);
        resolve(child);
      }
    }, 100);
    child.on('exit', (code) => {
      clearInterval(timer);
      reject(new Error(`agent of ${o.cell} exited ${code}: ${out}`));
    });
  });
}

/**
 * startAgentProcess with what a test's agents share: the server (`server()`, read at each start),
 * the `children` list and `env`.
 */
export function agentStarter(
  server: () => string,
  children: ChildProcess[],
  env?: Record<string, string | undefined>,
): (cell: string, dataDir: string, joinToken?: string) => Promise<ChildProcess> {
  return (cell, dataDir, joinToken) =>
    startAgentProcess({ server: server(), cell, dataDir, joinToken, children, env });
}
