/**
 * A real Kubernetes control plane for tests: etcd (Debian package etcd-server) + kube-apiserver +
 * kube-controller-manager, built from the Go module proxy by scripts/kube-engine.sh into a cache folder
 * (../shared/notes/kubernetes-api-server.md says how and why). There is no kubelet: the controller
 * manager's ReplicaSet controller creates pods, which stay Pending (no node), and namespaces finalise.
 *   1. etcd on a free loopback port, its data in a temporary folder;
 *   2. kube-apiserver on a free port with a self-signed certificate it writes itself (--cert-dir), a
 *      static admin token and a generated service-account key pair;
 *   3. kube-controller-manager with a kubeconfig for that admin;
 *   4. ready when /readyz answers; stop() kills the three and removes the folder.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const VERSION = process.env.TENANTRY_KUBE_VERSION ?? '1.34.4';

export function kubeBinDir(): string {
  return path.join(
    process.env.TENANTRY_KUBE_CACHE ?? path.join(os.homedir(), '.cache', 'tenantry', `kubernetes-${VERSION}`),
    'bin',
  );
}

/** Why the Kubernetes tests cannot run here, or undefined when etcd and the built binaries exist. */
export async function kubeUnavailableReason(): Promise<string | undefined> {
  try {
    await run('etcd', ['--version'], { timeout: 30_000 });
  } catch {
    return 'etcd is not on the PATH (apt-get install etcd-server; scripts/kube-engine.sh does it)';
  }
  try {
    await run('kubectl', ['version', '--client'], { timeout: 30_000 });
  } catch {
    return 'kubectl is not on the PATH (apt-get install kubernetes-client; scripts/kube-engine.sh does it)';
  }
  for (const b of ['kube-apiserver', 'kube-controller-manager'])
    if (!fs.existsSync(path.join(kubeBinDir(), b)))
      return `${b} is not built in ${kubeBinDir()} (run scripts/kube-engine.sh, ~5 min once)`;
  return undefined;
}

export interface KubeCluster {
  /** A kubeconfig file for the admin (cluster-admin through system:masters). */
  kubeconfigPath: string;
  server: string;
  startMillis: number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  died: () => string | undefined,
  ms: number,
) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const dead = died();
    if (dead) throw new Error(`${what} exited: ${dead}`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} not ready after ${ms} ms`);
}

export async function startKubeCluster(opts: { controllerManager?: boolean } = {}): Promise<KubeCluster> {
  const started = Date.now();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tenantry-kube-'));
  const procs: ChildProcess[] = [];
  const logs: Record<string, string> = {};
  const spawnLogged = (name: string, cmd: string, args: string[]) => {
    const log = fs.openSync(path.join(dir, `${name}.log`), 'w');
    const p = spawn(cmd, args, { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    p.on('exit', (code, signal) => {
      logs[name] = `code ${code} signal ${signal}; see ${path.join(dir, `${name}.log`)}`;
    });
    procs.push(p);
    return () => logs[name];
  };
  const stop = async () => {
    for (const p of procs.reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
    }
    await fsp.rm(dir, { recursive: true, force: true });
  };
  try {
    const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    const etcdDied = spawnLogged('etcd', 'etcd', [
      `--data-dir=${path.join(dir, 'etcd')}`,
      `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
      `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-cluster=default=http://127.0.0.1:${peerPort}`,
      '--name=default',
    ]);
    await waitFor(
      'etcd',
      async () => (await fetch(`http://127.0.0.1:${etcdPort}/health`)).ok,
      etcdDied,
      30_000,
    );

    const token = randomBytes(24).toString('hex');
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const saKey = path.join(dir, 'sa.key');
    const saPub = path.join(dir, 'sa.pub');
    await fsp.writeFile(saKey, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await fsp.writeFile(saPub, publicKey.export({ type: 'spki', format: 'pem' }));
    await fsp.writeFile(path.join(dir, 'tokens.csv'), `${token},admin,admin,system:masters\n`);
    const certDir = path.join(dir, 'certs');
    const apiDied = spawnLogged('kube-apiserver', path.join(kubeBinDir(), 'kube-apiserver'), [
      `--etcd-servers=http://127.0.0.1:${etcdPort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      `--cert-dir=${certDir}`,
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--token-auth-file=${path.join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--service-cluster-ip-range=10.0.0.0/24',
      '--disable-admission-plugins=ServiceAccount',
    ]);
    const server = `https://127.0.0.1:${apiPort}`;
    const kubeconfigPath = path.join(dir, 'kubeconfig');
    let kubeconfigWritten = false;
    await waitFor(
      'kube-apiserver',
      async () => {
        if (!kubeconfigWritten) {
          const crt = await fsp.readFile(path.join(certDir, 'apiserver.crt'));
          await fsp.writeFile(kubeconfigPath, kubeconfig(server, crt.toString('base64'), token));
          kubeconfigWritten = true;
        }
        const r = await run('kubectl', ['--kubeconfig', kubeconfigPath, 'get', '--raw', '/readyz'], {
          timeout: 10_000,
        });
        return r.stdout.trim() === 'ok';
      },
      apiDied,
      120_000,
    );
    if (opts.controllerManager !== false) {
      const kcmPort = await freePort();
      spawnLogged('kube-controller-manager', path.join(kubeBinDir(), 'kube-controller-manager'), [
        `--kubeconfig=${kubeconfigPath}`,
        '--leader-elect=false',
        `--service-account-private-key-file=${saKey}`,
        '--use-service-account-credentials=false',
        '--bind-address=127.0.0.1',
        `--secure-port=${kcmPort}`,
        `--cert-dir=${path.join(dir, 'kcm-certs')}`,
        '--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route',
      ]);
    }
    return { kubeconfigPath, server, startMillis: Date.now() - started, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function kubeconfig(server: string, caData: string, token: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server, 'certificate-authority-data': caData } }],
    users: [{ name: 'admin', user: { token } }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'admin' } }],
    'current-context': 'test',
  });
}
