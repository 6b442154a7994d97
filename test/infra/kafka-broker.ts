/**
 * A real single-node Apache Kafka broker (KRaft, combined broker + controller) for tests and local
 * development, run from the jars on Maven Central:
 *   1. `mvn dependency:copy-dependencies` on test/infra/kafka/pom.xml into a cache folder, once
 *      (~/.cache/tenantry/kafka-<version>, or TENANTRY_KAFKA_JARS_DIR), reused by every later run;
 *   2. a server.properties on free loopback ports: SASL/PLAIN on both listeners with a generated
 *      admin user, the StandardAuthorizer with that admin as the only super user (so ACLs matter);
 *   3. `kafka.tools.StorageTool format`, then `java -cp <jars>/* kafka.Kafka server.properties`;
 *   4. ready when the admin can describe the cluster; stop() kills the JVM and removes its data.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';

const run = promisify(execFile);
const POM = fileURLToPath(new URL('./kafka/pom.xml', import.meta.url));

export interface KafkaBroker {
  /** `host:port` of the SASL_PLAINTEXT client listener (the TENANTRY_KAFKA_BROKERS value). */
  brokers: string;
  /** The super user (SASL/PLAIN). */
  username: string;
  password: string;
  /** Extra SASL/PLAIN users that may log in (no ACLs of their own): user → password. */
  users: Record<string, string>;
  /** How long the broker took from `java` spawn to ready. */
  startMillis: number;
  stop(): Promise<void>;
}

export interface KafkaBrokerOptions {
  /** Extra SASL/PLAIN logins, e.g. a consumer deployment's slug, to prove ACLs for real. */
  users?: string[];
  /** Fixed client port (0 or absent: a free one). */
  port?: number;
  /** The admin's password (default: generated); a restart on a kept dataDir needs the same one. */
  password?: string;
  /** Keep data under this folder instead of a temporary one (kept on stop). */
  dataDir?: string;
  /** Where the broker's own log goes; default `<dataDir>/server.log`. */
  log?: 'file' | 'inherit';
}

/** Why the Kafka tests cannot run here, or undefined when `java` and `mvn` are on the PATH. */
export async function kafkaUnavailableReason(): Promise<string | undefined> {
  if (process.env.TENANTRY_KAFKA_JARS_DIR && fs.existsSync(jarsReadyMarker(jarsDir()))) {
    return (await has('java')) ? undefined : 'java is not on the PATH';
  }
  for (const tool of ['java', 'mvn']) {
    if (!(await has(tool)))
      return `${tool} is not on the PATH (the test Kafka broker needs Java 17 and Maven)`;
  }
  return undefined;
}

async function has(tool: string): Promise<boolean> {
  try {
    await run(tool, ['-version'], { timeout: 30_000 });
    return true;
  } catch {
    return false;
  }
}

function kafkaVersion(): string {
  const m = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(fs.readFileSync(POM, 'utf8'));
  if (!m) throw new Error(`no <kafka.version> in ${POM}`);
  return m[1]!;
}

function jarsDir(): string {
  return (
    process.env.TENANTRY_KAFKA_JARS_DIR ??
    path.join(
      process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'),
      'tenantry',
      `kafka-${kafkaVersion()}`,
    )
  );
}

function jarsReadyMarker(dir: string): string {
  return path.join(dir, '.complete');
}

/**
 * Resolves the broker's jars once (Maven Central through `mvn`, which also keeps ~/.m2) and returns
 * the folder. Concurrent callers (parallel test files) share one resolution through a lock folder.
 */
export async function resolveKafkaJars(): Promise<string> {
  const dir = jarsDir();
  if (fs.existsSync(jarsReadyMarker(dir))) return dir;
  await fsp.mkdir(path.dirname(dir), { recursive: true });
  const lock = `${dir}.lock`;
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      await fsp.mkdir(lock);
      break;
    } catch {
      if (fs.existsSync(jarsReadyMarker(dir))) return dir;
      // A lock older than the deadline is a crashed resolver's: take it over.
      const age = Date.now() - (await fsp.stat(lock).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > 10 * 60_000) await fsp.rm(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await sleep(500);
    }
  }
  try {
    if (fs.existsSync(jarsReadyMarker(dir))) return dir;
    const tmp = `${dir}.tmp-${process.pid}`;
    await fsp.rm(tmp, { recursive: true, force: true });
    await run('mvn', ['-q', '-B', '-f', POM, 'dependency:copy-dependencies', `-DoutputDirectory=${tmp}`], {
      timeout: 10 * 60_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rename(tmp, dir);
    await fsp.writeFile(jarsReadyMarker(dir), `${new Date().toISOString()}\n`);
    return dir;
  } finally {
    await fsp.rm(lock, { recursive: true, force: true });
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function jaas(username: string, password: string, users: Record<string, string>): string {
  const logins = Object.entries(users)
    .map(([u, p]) => ` user_${u}="${p}"`)
    .join('');
  return (
    `org.apache.kafka.common.security.plain.PlainLoginModule required username="${username}" ` +
    `password="${password}" user_${username}="${password}"${logins};`
  );
}

/** Starts a broker and resolves once it answers an authenticated admin request. */
export async function startKafkaBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  const jars = await resolveKafkaJars();
  const ownDir = options.dataDir === undefined;
  const dir = options.dataDir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'tenantry-kafka-')));
  await fsp.mkdir(dir, { recursive: true });
  const port = options.port || (await freePort());
  const controllerPort = await freePort();
  const username = 'tenantry-admin';
  const password = options.password ?? randomBytes(18).toString('base64url');
  const users = Object.fromEntries(
    (options.users ?? []).map((u) => [u, randomBytes(12).toString('base64url')]),
  );
  const logDirs = path.join(dir, 'data');
  const props = path.join(dir, 'server.properties');
  const login = jaas(username, password, users);
  await fsp.writeFile(
    props,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=CLIENT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=CLIENT://127.0.0.1:${port}`,
      'listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT',
      'inter.broker.listener.name=CLIENT',
      'controller.listener.names=CONTROLLER',
      'sasl.enabled.mechanisms=PLAIN',
      'sasl.mechanism.inter.broker.protocol=PLAIN',
      'sasl.mechanism.controller.protocol=PLAIN',
      `listener.name.client.plain.sasl.jaas.config=${login}`,
      `listener.name.controller.plain.sasl.jaas.config=${login}`,
      'authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer',
      `super.users=User:${username}`,
      'allow.everyone.if.no.acl.found=false',
      `log.dirs=${logDirs}`,
      'num.partitions=1',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      'auto.create.topics.enable=false',
      'delete.topic.enable=true',
      '',
    ].join('\n'),
  );
  const log4j = path.join(dir, 'log4j.properties');
  await fsp.writeFile(
    log4j,
    [
      'log4j.rootLogger=WARN, out',
      'log4j.appender.out=org.apache.log4j.ConsoleAppender',
      'log4j.appender.out.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n',
      'log4j.logger.kafka.server.KafkaRaftServer=INFO',
      '',
    ].join('\n'),
  );
  const classpath = `${jars}/*`;
  // Small heap and the C1 compiler only: a test broker starts faster and uses less of a shared machine.
  const jvm = [
    '-Xms128m',
    '-Xmx512m',
    '-XX:+UseSerialGC',
    '-XX:TieredStopAtLevel=1',
    '-Xshare:auto',
    `-Dlog4j.configuration=file:${log4j}`,
    '-cp',
    classpath,
  ];
  const clusterId = kafkaClusterId();
  // A kept dataDir is formatted already (under its own cluster id): start it as it is.
  if (!fs.existsSync(path.join(logDirs, 'meta.properties')))
    await run(
      'java',
      [...jvm, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', props, '--ignore-formatted'],
      { timeout: 120_000 },
    );

  const started = Date.now();
  const logFile = path.join(dir, 'server.log');
  const out = options.log === 'inherit' ? 'inherit' : fs.openSync(logFile, 'a');
  const child: ChildProcess = spawn('java', [...jvm, 'kafka.Kafka', props], {
    stdio: ['ignore', out, out],
  });
  if (typeof out === 'number') fs.closeSync(out);
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = `exited with ${signal ?? code}`;
      resolve();
    });
    child.once('error', (err) => {
      exited = `could not run: ${err.message}`;
      resolve();
    });
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exit;
      clearTimeout(timer);
    }
    if (ownDir) await fsp.rm(dir, { recursive: true, force: true });
  };

  const brokers = `127.0.0.1:${port}`;
  const kafka = new Kafka({
    clientId: 'tenantry-test-ready',
    brokers: [brokers],
    sasl: { mechanism: 'plain', username, password },
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 1000,
  });
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (exited !== undefined) {
      const tail = fs.existsSync(logFile) ? (await fsp.readFile(logFile, 'utf8')).slice(-3000) : '';
      await stop();
      throw new Error(`Kafka broker ${exited} before it was ready:\n${tail}`);
    }
    const admin = kafka.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      if (cluster.controller !== null && cluster.brokers.length > 0) break;
    } catch {
      // not listening yet
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`Kafka broker not ready after 90 s (log: ${logFile})`);
    }
    await sleep(250);
  }
  return { brokers, username, password, users, startMillis: Date.now() - started, stop };
}

/**
 * A random KRaft cluster id (16 bytes, base64url) that never starts with `-`: `kafka-storage format
 * -t -abc…` would read it as an option. Kafka's own Uuid.randomUuid() skips such ids the same way.
 */
export function kafkaClusterId(random: () => Buffer = () => randomBytes(16)): string {
  for (;;) {
    const id = random().toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}
