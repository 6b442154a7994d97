import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLE_DIR } from './helpers/examples.js';

/**
 * The built `tenantry` executable end to end: `serve` on its embedded PostgreSQL in a fresh data
 * folder, the client commands against it, Ctrl-C, and a second start on the same data.
 */
const BIN = path.resolve(import.meta.dirname, '../bin/tenantry.js');
const run = promisify(execFile);
let dataDir: string;
let server: ChildProcess | undefined;
let url = '';
let token = '';

async function serve(): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TENANTRY_LOG_LEVEL: 'warn' },
  });
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const found = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      // The banner's last line: the whole banner has arrived (stdout may come in several chunks).
      const m = /listening on (http:\/\/\S+)[\s\S]*\n {2}try: /.exec(out);
      if (m?.[1]) {
        clearInterval(timer);
        resolve(m[1]);
      }
    }, 100);
    child.on('exit', (code) => {
      clearInterval(timer);
      reject(new Error(`serve exited ${code}: ${out}`));
    });
  });
  return { child, url: found, output: () => out };
}

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BIN, '--server', url, ...args], {
      env: { ...process.env, TENANTRY_TOKEN: token, XDG_CONFIG_HOME: path.join(dataDir, 'config') },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function postgresPids(): number[] {
  const pidFile = path.join(dataDir, 'pg', 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return [];
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  try {
    process.kill(pid, 0);
    return [pid];
  } catch {
    return [];
  }
}

async function stop(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  child.kill('SIGINT');
  return exited;
}

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-cli-'));
  fs.chmodSync(dataDir, 0o755);
  const s = await serve();
  server = s.child;
  url = s.url;
  expect(s.output()).toContain(`data:      ${dataDir}`);
  // The first start says how to get an operator token; `token create` mints it from the data folder.
  expect(s.output()).toContain(`tenantry token create --role platform-admin --data-dir ${dataDir} --save`);
  const minted = await cli(
    'token',
    'create',
    '--role',
    'platform-admin',
    '--data-dir',
    dataDir,
    '--ttl',
    '1h',
  );
  expect(minted.code).toBe(0);
  token = minted.stdout.trim();
  // The banner names the console and a one-time sign-in link that opens it once.
  expect(s.output()).toContain(`console:   ${url}/console/`);
  const link = /sign in: {3}(\S+)/.exec(s.output())?.[1] ?? '';
  const code = new URL(link).searchParams.get('code') ?? '';
  const signIn = () =>
    fetch(`${url}/console/login`, {
      method: 'POST',
      body: new URLSearchParams({ code }),
      redirect: 'manual',
    });
  const first = await signIn();
  expect(first.status).toBe(303);
  const cookie = first.headers.get('set-cookie')?.split(';')[0] ?? '';
  expect((await fetch(`${url}/console/tree`, { headers: { cookie } })).status).toBe(200);
  expect((await signIn()).status).toBe(401);
}, 120_000);

afterAll(async () => {
  if (server && server.exitCode === null) await stop(server);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

describe('tenantry CLI', () => {
  it('refuses calls without a token and accepts a saved one', async () => {
    const saved = token;
    token = '';
    const refused = await cli('get', 'tenants');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('[token.missing]');
    // `cli()` passes --server; this call doesn't: the server comes from what `serve` noted in the data folder.
    const save = await run(process.execPath, [BIN, 'token', 'create', '--data-dir', dataDir, '--save'], {
      env: { ...process.env, TENANTRY_TOKEN: '', XDG_CONFIG_HOME: path.join(dataDir, 'config') },
    });
    const file = path.join(dataDir, 'config', 'tenantry', 'config.json');
    expect(save.stderr).toContain(`saved the token and the server ${url} to ${file}`);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).server).toBe(url);
    // With nothing but the saved file (no --server, no TENANTRY_SERVER), the next command reaches the server.
    const env: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: path.join(dataDir, 'config') };
    delete env.TENANTRY_SERVER;
    delete env.TENANTRY_TOKEN;
    const listed = await run(process.execPath, [BIN, 'get', 'tenants'], { env });
    expect(listed.stdout).toContain('NAME');
    expect((await cli('get', 'tenants')).code).toBe(0);
    token = saved;
  });

  it('applies the Circle K example, then reports every object unchanged', async () => {
    const first = await cli('apply', '-f', EXAMPLE_DIR);
    expect(first.code).toBe(0);
    expect(first.stdout.trim().split('\n')).toHaveLength(38);
    expect(first.stdout).toContain('tenant/circlek-eu-uat-dev created');
    // The seed's malformed UUIDs are fixed valid ones in the example: the same topic name on every install.
    const topic = await cli(
      '-o',
      'json',
      'get',
      'resource',
      'circlek-eu-uat-dev-plan.supply-chain.transactions.order-proposals.v1.pub',
    );
    expect(topic.stdout).toContain(
      '"e5f6a7b9-c9d0-4e2f-8a4b-5c6d7e8f9a0b.supply-chain.transactions.order-proposals.v1.pub"',
    );
    const second = await cli('apply', '-f', EXAMPLE_DIR);
    expect(
      second.stdout
        .trim()
        .split('\n')
        .every((l) => l.endsWith(' unchanged')),
    ).toBe(true);
  });

  it('apply --wait returns once the controller made everything Ready, and names what failed', async () => {
    const file = path.join(dataDir, 'demo.yaml');
    const doc = (kind: string, metadata: object, spec: object) =>
      JSON.stringify({ apiVersion: 'tenantry.dev/v1', kind, metadata, spec });
    fs.writeFileSync(
      file,
      [
        doc('Customer', { name: 'demo' }, { displayName: 'Demo', shortCode: 'demo' }),
        doc('Tenant', {}, { customer: 'demo', region: 'eu', environmentType: 'dev' }),
        doc('Deployment', {}, { tenant: 'demo-eu-dev', system: 'plan' }),
        doc('IntegrationResource', {}, { scope: { deployment: 'demo-eu-dev-plan' }, type: 'blob-container' }),
        doc(
          'IntegrationResource',
          {},
          { scope: { tenant: 'demo-eu-dev' }, type: 'database', database: { isolation: 'pool' } },
        ),
      ].join('\n---\n'),
    );
    const ok = await cli('apply', '-f', file, '--wait', '--timeout', '60');
    expect(ok.stderr).toContain('Ready 5/5');
    expect(ok.code).toBe(0);
    expect(fs.statSync(path.join(dataDir, 'blobs', 'demo-eu-dev-plan')).isDirectory()).toBe(true);
    const db = JSON.parse(
      (await cli('-o', 'json', 'get', 'integrationresource', 'demo-eu-dev.database')).stdout,
    );
    expect(db.status.conditions[0].message).toContain('secretRef=resource-secrets/');
    // Without a Kafka cluster the Circle K topics cannot be made; --wait says so instead of hanging.
    const topics = await cli('apply', '-f', EXAMPLE_DIR, '--wait', '--timeout', '60');
    expect(topics.code).toBe(1);
    // Every object that is not Ready gets a line with its reason: all six topics, and the objects
    // waiting on them; the progress is line by line (no carriage returns) when not on a terminal.
    const failed = topics.stderr.match(
      /^integrationresource\/\S+ Failed: ProviderNotConfigured .*TENANTRY_KAFKA_BROKERS/gm,
    );
    expect(failed).toHaveLength(6);
    expect(topics.stderr).toMatch(/^tenant\/circlek-eu-prod Provisioning: DependentsNotReady /m);
    expect(topics.stderr).toContain('error: ');
    expect(topics.stderr).not.toContain('\r');
  }, 120_000);

  it('diffs exactly the edited field', async () => {
    const file = path.join(dataDir, 'edited.yaml');
    fs.writeFileSync(
      file,
      fs
        .readFileSync(path.join(EXAMPLE_DIR, '20-circlek-north-america.yaml'), 'utf8')
        .replace('displayName: Circle K North America', 'displayName: Circle K NA'),
    );
    const d = await cli('diff', '-f', file);
    // As `kubectl diff`: 1 when something would change, 0 when nothing would.
    expect(d.code).toBe(1);
    expect(d.stdout).toContain(
      'customer/circlek-north-america (changed)\n  ~ /spec/displayName: "Circle K North America" -> "Circle K NA"\n1 object(s) would change',
    );
    const same = await cli('diff', '-f', path.join(EXAMPLE_DIR, '20-circlek-north-america.yaml'));
    expect(same.stdout).toContain('no changes');
    expect(same.code).toBe(0);
    const broken = await cli('diff', '-f', path.join(dataDir, 'missing.yaml'));
    expect(broken.code).toBeGreaterThan(1);
  });

  it('asks before deleting, and refuses without a terminal unless --yes', async () => {
    const refused = await cli('delete', 'deployment', 'circlek-us-prod-plan');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('refused: not a terminal; add --yes');
    expect((await cli('get', 'deployment', 'circlek-us-prod-plan')).code).toBe(0);
    const deleted = await cli('delete', 'deployment', 'circlek-us-prod-plan', '--yes');
    expect(deleted.stdout.trim()).toBe('deployment/circlek-us-prod-plan deleted');
  });

  it('gets, describes, suspends, and fails with a non-zero exit and the field path', async () => {
    const list = await cli('get', 'tenants', '--filter', 'region=eu');
    // The phase is the controller's (serve runs it): Pending, then Provisioning (its topics need Kafka).
    expect(list.stdout).toMatch(
      /circlek-eu-prod\s+6846a7a4-4e09-41a8-918c-9c8e2aa938ac\s+Active\s+(Pending|Provisioning)/,
    );
    expect(list.stdout).not.toContain('circlek-us-prod');
    const json = JSON.parse(
      (await cli('-o', 'json', 'get', 'deployment', 'circlek-eu-prod-store-pl')).stdout,
    );
    expect(json.metadata.uuid).toBe('a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d');
    expect((await cli('suspend', 'circlek-eu-uat')).stdout.trim()).toBe('tenant/circlek-eu-uat suspended');
    // A suspended tenant is where it should be: --wait does not wait for it to become Ready.
    const started = Date.now();
    // (Only Europe: a deployment of North America was deleted above, and a UUID is never reused.)
    const again = await cli(
      'apply',
      '-f',
      path.join(EXAMPLE_DIR, '10-circlek-europe.yaml'),
      '--wait',
      '--timeout',
      '60',
    );
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(again.code).toBe(1);
    expect(again.stderr).not.toMatch(/^tenant\/circlek-eu-uat /m);
    expect(again.stderr).toMatch(/^tenant\/circlek-eu-prod Provisioning: DependentsNotReady /m);
    expect(again.stderr.match(/^integrationresource\/\S+ Failed: ProviderNotConfigured/gm)).toHaveLength(5);
    const described = await cli('describe', 'tenant', 'circlek-eu-uat');
    expect(described.stdout).toMatch(/Lineage:[\s\S]*2\s+suspend\s+local-operator/);
    const missing = await cli('get', 'tenant', 'nope');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('[tenant.not_found]');
    const bad = path.join(dataDir, 'bad.yaml');
    fs.writeFileSync(
      bad,
      'apiVersion: tenantry.dev/v1\nkind: Tenant\nmetadata: {}\nspec: {customer: circlek-europe, region: mars, environmentType: prod}\n',
    );
    const refused = await cli('apply', '-f', bad);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`${bad} (document 1) /spec/region`);
  });

  it('stops PostgreSQL on Ctrl-C and reuses the data on the next start', async () => {
    expect(postgresPids()).toHaveLength(1);
    expect(await stop(server!)).toBe(0);
    expect(postgresPids()).toEqual([]);
    const again = await serve();
    server = again.child;
    url = again.url;
    const r = await cli('get', 'tenant', 'circlek-eu-uat');
    expect(r.stdout).toContain('Suspended');
  });

  it('verifies, searches and exports the audit log, and verifies the export offline', async () => {
    // The stop above signed a last checkpoint with the key kept in the data folder.
    const verified = await cli('audit', 'verify');
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(
      /^audit verified: \d+ records in \d+ chains; [1-9]\d*\/\d+ checkpoints valid/,
    );
    const found = await cli('audit', 'search', '--tenant', 'circlek-eu-uat', '--action', 'tenant.*');
    expect(found.stdout).toMatch(/tenant\.suspend\s+success\s+local-operator\s+Tenant\/circlek-eu-uat/);
    const key = path.join(dataDir, 'audit-key.pem');
    fs.writeFileSync(key, (await cli('audit', 'public-key')).stdout);
    const file = path.join(dataDir, 'audit.jsonl');
    expect((await cli('audit', 'export', '-f', file)).code).toBe(0);
    const offline = await cli('audit', 'verify', '--file', file, '--public-key', key);
    expect(offline.code).toBe(0);
    // One altered byte in a record and the offline check names it.
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    const i = lines.findIndex((l) => l.includes('"action":"tenant.suspend"'));
    lines[i] = lines[i]!.replace('"outcome":"success"', '"outcome":"denied"');
    fs.writeFileSync(file, lines.join('\n'));
    const tampered = await cli('audit', 'verify', '--file', file, '--public-key', key);
    expect(tampered.code).toBe(1);
    expect(tampered.stdout).toMatch(
      /\[record\.altered\] chain 8c9646e0-b9ce-426a-8849-a047e29afa9d seq \d+ record/,
    );
  });
});
