import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploymentManifests } from './helpers/controller.js';
import { EXAMPLE_DIR } from './helpers/examples.js';

/**
 * The built `tenantry` executable end to end: `serve` on its embedded PostgreSQL in a fresh data
 * folder, the client commands against it, Ctrl-C, and a second start on the same data.
 */
const BIN = path.resolve(import.meta.dirname, '../bin/tenantry.js');
const run = promisify(execFile);
let dataDir: string;
let server: ChildProcess | undefined;
let current: Awaited<ReturnType<typeof serve>> | undefined;
let url = '';
let token = '';

async function serve(): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that a test can Ctrl-C it as a terminal does (SIGINT to the group).
    detached: true,
    // The embedded default's own secrets key file in the data folder (not the test run's shared one).
    env: { ...process.env, TENANTRY_LOG_LEVEL: 'warn', TENANTRY_SECRETS_KEY_FILE: '' },
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
  current = s;
  url = s.url;
  expect(s.output()).toContain(`data:      ${dataDir}`);
  // The banner says which providers are on (here: none configured, so local disk and the embedded data plane).
  expect(s.output()).toMatch(/ {2}kafka: {5}off \(set TENANTRY_KAFKA_BROKERS/);
  expect(s.output()).toContain(`  blobs:     local disk ${path.join(dataDir, 'blobs')}`);
  expect(s.output()).toContain('  databases: data-plane PostgreSQL');
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
    // 38 objects of the hierarchy and placement, 13 of the runtime inventory (40-runtime.yaml).
    expect(first.stdout.trim().split('\n')).toHaveLength(51);
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
    // Its connection, from `tenantry credentials`: the tenant's own role logs in with it.
    const creds = JSON.parse((await cli('-o', 'json', 'credentials', 'demo-eu-dev.database')).stdout);
    expect(creds).toMatchObject({ name: 'demo-eu-dev.database', isolation: 'pool', schema: 't_demo_eu_dev' });
    const session = new pg.Client({ connectionString: creds.url });
    await session.connect();
    expect((await session.query('select current_user as u')).rows[0].u).toBe(creds.username);
    await session.end();
    const env = await cli('credentials', 'demo-eu-dev.database', '--env');
    expect(env.stdout).toContain(`export PGUSER='${creds.username}'\nexport PGPASSWORD='${creds.password}'`);
    // A blob container has none: the problem's code, exit 1.
    const none = await cli('credentials', 'demo-eu-dev-plan.blob');
    expect([none.code, none.stderr]).toEqual([1, expect.stringContaining('[credentials.not_applicable]')]);
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
    expect(list.stdout).toMatch(/^NAME\s+CUSTOMER\s+REGION\s+ENV\s+LIFECYCLE\s+PHASE\s+AGE\n/);
    expect(list.stdout).toMatch(
      /circlek-eu-prod\s+circlek-europe\s+eu\s+prod\s+Active\s+(Pending|Provisioning)\s/,
    );
    expect(list.stdout).not.toContain('circlek-us-prod');
    // -o wide adds the UUID (and plan, cell, isolation, generation, reason).
    const wide = await cli('-o', 'wide', 'get', 'tenants', '--filter', 'region=eu');
    expect(wide.stdout).toMatch(
      /circlek-eu-prod\s+circlek-europe\s+eu\s+prod\s+Active\s+(Pending|Provisioning)\s+\S+\s+6846a7a4-4e09-41a8-918c-9c8e2aa938ac\s/,
    );
    const json = JSON.parse(
      (await cli('-o', 'json', 'get', 'deployment', 'circlek-eu-prod-store-pl')).stdout,
    );
    expect(json.metadata.uuid).toBe('a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d');
    // The suspend starts the tenant's lifecycle workflow; --wait follows its steps to the end.
    const suspended = await cli('suspend', 'circlek-eu-uat', '--wait');
    expect(suspended.code, suspended.stderr).toBe(0);
    const lines = suspended.stdout.trim().split('\n');
    const workflowId = /^tenant\/circlek-eu-uat suspended \(workflow ([0-9a-f-]{36})\)$/.exec(lines[0]!)?.[1];
    expect(workflowId, lines[0]).toBeDefined();
    // --wait prints each step as its polls see it change: a poll that catches a step while it runs
    // prints it Running first (on a loaded machine it does), then Completed.
    const steps = lines.slice(1, -1).map((l) => l.trim().split(/\s+/));
    expect(steps.filter(([, state]) => state !== 'Running')).toEqual(
      [
        'record-access',
        'pause-webhooks',
        'revoke-database-logins',
        'deny-kafka-principals',
        'revoke-blob-access',
      ].map((step) => [step, 'Completed']),
    );
    steps.forEach(([step, state], i) => {
      if (state === 'Running')
        expect(steps[i + 1], `${step} runs, then completes`).toEqual([step, 'Completed']);
    });
    expect(lines.at(-1)).toBe(`workflow ${workflowId} Succeeded`);
    const workflows = await cli('workflows', 'list', '--tenant', 'circlek-eu-uat');
    expect(workflows.stdout).toMatch(
      new RegExp(`^${workflowId}\\s+lifecycle\\.suspend\\s+Succeeded\\s`, 'm'),
    );
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

  it('shows the columns of each kind (-o wide more) and one list shape in json and yaml', async () => {
    const systems = await cli('get', 'systems');
    expect(systems.stdout).toMatch(/^NAME\s+SERVICE ID\s+DISPLAY NAME\s+PHASE\s+AGE\n/);
    expect(systems.stdout).not.toContain('UUID');
    expect((await cli('-o', 'wide', 'get', 'systems')).stdout).toMatch(/^NAME.*\s+UUID\s+GEN\s+REASON\n/);
    const resources = await cli('get', 'resources', '--filter', 'tenant=circlek-eu-prod');
    expect(resources.stdout).toMatch(/^NAME\s+TYPE\s+PHYSICAL NAME\s+PHASE\s+AGE\n/);
    // A list is {"items": [...]} even with one item; one object by name is the object.
    const listed = JSON.parse((await cli('-o', 'json', 'get', 'tenants', '--filter', 'region=eu')).stdout);
    expect(Object.keys(listed)).toEqual(['items']);
    expect(listed.items.length).toBeGreaterThan(0);
    expect(JSON.parse((await cli('-o', 'json', 'get', 'system', 'plan')).stdout).kind).toBe('System');
    expect((await cli('-o', 'yaml', 'get', 'systems')).stdout).toMatch(/^items:\n {2}- /);
    expect(Object.keys(JSON.parse((await cli('-o', 'json', 'webhooks', 'list')).stdout))).toEqual(['items']);
    expect((await cli('-o', 'yaml', 'webhooks', 'list')).stdout).toMatch(/^items:/);
    const events = JSON.parse((await cli('-o', 'json', 'events', 'tail', '--no-follow')).stdout);
    expect(events.items.length).toBeGreaterThan(0);
    expect(Object.keys(JSON.parse((await cli('-o', 'json', 'audit', 'search')).stdout))).toEqual(['items']);
  });

  it('events tail --no-follow: a header and slugs, UUIDs with -o wide', async () => {
    const tail = await cli('events', 'tail', '--no-follow', '--tenant', 'circlek-eu-uat');
    expect(tail.stdout).toMatch(/^SEQ\s+TIME\s+TYPE\s+SUBJECT\s+TENANT\n/);
    expect(tail.stdout).toMatch(/tenant\.suspended\.v1\s+tenant\/circlek-eu-uat\s+circlek-eu-uat\n/);
    const wide = await cli('-o', 'wide', 'events', 'tail', '--no-follow', '--tenant', 'circlek-eu-uat');
    expect(wide.stdout).toMatch(/tenant\.suspended\.v1\s+tenants\/[0-9a-f-]{36}\s+[0-9a-f-]{36}/);
  });

  it('webhooks: the name list shows (with --tenant), or every endpoint, filtered by --since', async () => {
    const file = path.join(dataDir, 'hooks.yaml');
    const hook = (tenant: string) =>
      JSON.stringify({
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'ops', tenant },
        spec: { url: 'https://hooks.example.com/tenantry', eventTypes: ['dev.tenantry.tenant.suspended.v1'] },
      });
    fs.writeFileSync(file, [hook('circlek-eu-prod'), hook('circlek-us-prod')].join('\n---\n'));
    expect((await cli('apply', '-f', file)).code).toBe(0);
    const list = await cli('webhooks', 'list');
    expect(list.stdout).toMatch(/ops\s+circlek-eu-prod\s+https:\/\/hooks\.example\.com\/tenantry/);
    expect((await cli('suspend', 'circlek-eu-prod')).code).toBe(0);
    // As list shows it: the name with --tenant; the full slug works too.
    const one = await cli('webhooks', 'deliveries', 'ops', '--tenant', 'circlek-eu-prod');
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(/^ENDPOINT\s+DELIVERY\s+SEQ\s+TYPE/);
    expect(one.stdout).toMatch(/circlek-eu-prod\.ops\s+[0-9a-f-]{36}\s+\d+\s+tenant\.suspended\.v1/);
    expect((await cli('webhooks', 'deliveries', 'circlek-eu-prod.ops')).stdout).toContain(
      'tenant.suspended.v1',
    );
    // A name two tenants use needs --tenant.
    const ambiguous = await cli('webhooks', 'deliveries', 'ops');
    expect(ambiguous.code).toBe(1);
    expect(ambiguous.stderr).toContain(
      '2 webhook endpoints are named "ops" (circlek-eu-prod.ops, circlek-us-prod.ops); add --tenant',
    );
    // No endpoint named: every endpoint, with --tenant and --since filters.
    const all = await cli('webhooks', 'deliveries', '--since', '1h');
    expect(all.stdout).toContain('circlek-eu-prod.ops');
    const none = await cli('webhooks', 'deliveries', '--since', '2999-01-01T00:00:00Z');
    expect(none.stdout.trim().split('\n')).toHaveLength(1);
    expect((await cli('webhooks', 'deliveries', '--tenant', 'circlek-us-prod')).stdout).not.toContain(
      'circlek-eu-prod.ops',
    );
    expect((await cli('webhooks', 'dead-letter', '--tenant', 'circlek-eu-prod')).code).toBe(0);
    const requeued = await cli('webhooks', 'requeue', '--since', '1h');
    expect(requeued.code).toBe(0);
    expect(requeued.stdout).toContain('0 deliveries requeued');
    expect((await cli('resume', 'circlek-eu-prod')).code).toBe(0);
  });

  it('refuses in sentences: an active tenant, a deleted UUID, a partition shrink before any write', async () => {
    const active = await cli('delete', 'tenant', 'circlek-eu-prod', '--yes');
    expect(active.code).toBe(1);
    expect(active.stderr).toContain('Tenant circlek-eu-prod is Active; archive it before deleting it.');
    // The deployment deleted above: the refusal names the file and document, and what to do.
    const again = await cli('apply', '-f', EXAMPLE_DIR);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(
      `${path.join(EXAMPLE_DIR, '20-circlek-north-america.yaml')} (document 3) /metadata/uuid: Deployment circlek-us-prod-plan (e5f6a7b8-c9d0-4e1f-2a3b-4c5d6e7f8a9b) was deleted and a UUID is never reused: remove this document from the manifests, or give it a new metadata.uuid to create it again [object.deleted]`,
    );
    const shrink = path.join(dataDir, 'shrink.yaml');
    const europe = fs.readFileSync(path.join(EXAMPLE_DIR, '10-circlek-europe.yaml'), 'utf8');
    const topic = europe
      .split(/^---$/m)
      .find((d) =>
        d.includes('name: circlek-eu-prod-plan.supply-chain.transactions.order-proposals.v1.pub'),
      )!;
    fs.writeFileSync(shrink, topic.replace('partitions: 3', 'partitions: 1'));
    const diff = await cli('diff', '-f', shrink);
    expect(diff.code).toBe(2);
    expect(diff.stderr).toMatch(
      /\/spec\/kafkaTopic\/partitions: topic \S+ has 3 partitions and Kafka cannot shrink a topic to 1; keep 3 or more, or delete and recreate the resource \[kafka\.partition_shrink\]/,
    );
    const dry = await cli('apply', '--dry-run', '-f', shrink);
    expect(dry.code).toBe(1);
    expect(dry.stderr).toContain('[kafka.partition_shrink]');
  });

  it('keeps the secrets key in the data folder (0600) and rotates it while serving', async () => {
    const file = path.join(dataDir, 'secrets', 'kek.json');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const before = JSON.parse(fs.readFileSync(file, 'utf8')).current;
    const r = await run(process.execPath, [BIN, 'secrets', 'rotate-key', '--data-dir', dataDir, '--retire'], {
      env: { ...process.env, TENANTRY_SECRETS_KEY_FILE: '' },
    });
    expect(r.stdout).toMatch(
      /^new key-encryption key kek-\S+ is current\nre-wrapped [1-9]\d* data key\(s\) with kek-/,
    );
    expect(r.stdout).toContain(`retired ${before}`);
    const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(doc.current).not.toBe(before);
    expect(Object.keys(doc.keys)).toEqual([doc.current]);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    // The running server seals new secrets and keeps working without a restart.
    const hook = path.join(dataDir, 'hook-after-rotation.yaml');
    fs.writeFileSync(
      hook,
      JSON.stringify({
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'after-rotation', tenant: 'circlek-eu-uat' },
        spec: { url: 'https://hooks.example.com/tenantry' },
      }),
    );
    const applied = await cli('apply', '-f', hook);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(/signing secret \(shown once, store it now\): whsec_/);
  });

  it('stops in order on Ctrl-C, PostgreSQL last, and reuses the data on the next start', async () => {
    expect(postgresPids()).toHaveLength(1);
    // A terminal's Ctrl-C: SIGINT to the whole foreground process group, PostgreSQL's too if it were in it.
    const before = current!.output().length;
    const exited = new Promise<number | null>((r) => server!.on('exit', (code) => r(code)));
    process.kill(-server!.pid!, 'SIGINT');
    expect(await exited).toBe(0);
    expect(postgresPids()).toEqual([]);
    const shutdown = current!.output().slice(before);
    expect(shutdown).not.toMatch(/error while stopping|shutting down|"level":(50|60)/);
    const again = await serve();
    server = again.child;
    current = again;
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
    const i = lines.findIndex(
      (l) => l.includes('"action":"tenant.suspend"') && l.includes('8c9646e0-b9ce-426a-8849-a047e29afa9d'),
    );
    lines[i] = lines[i]!.replace('"outcome":"success"', '"outcome":"denied"');
    fs.writeFileSync(file, lines.join('\n'));
    const tampered = await cli('audit', 'verify', '--file', file, '--public-key', key);
    expect(tampered.code).toBe(1);
    expect(tampered.stdout).toMatch(
      /\[record\.altered\] chain 8c9646e0-b9ce-426a-8849-a047e29afa9d seq \d+ record/,
    );
  });

  it('archive, legal hold, delete --wait, purge: the deletion workflow shows its steps and keeps everything under the hold', async () => {
    const file = path.join(dataDir, 'held.yaml');
    fs.writeFileSync(
      file,
      deploymentManifests('clidel', 'svc')
        .map((d) => JSON.stringify(d))
        .join('\n---\n'),
    );
    expect((await cli('apply', '-f', file)).code).toBe(0);
    const archived = await cli('archive', 'clidel-eu-dev', '--wait');
    expect(archived.code, archived.stderr).toBe(0);
    expect(archived.stdout).toMatch(/^\s+start-retention-clock\s+Completed$/m);
    const held = await cli('legal-hold', 'place', 'clidel-eu-dev', '--reason', 'case 9');
    expect(held.stdout.trim()).toBe('tenant/clidel-eu-dev under legal hold: case 9');
    const deleted = await cli('delete', 'tenant', 'clidel-eu-dev', '--yes', '--wait');
    expect(deleted.code, deleted.stderr).toBe(0);
    const lines = deleted.stdout.trim().split('\n');
    const id = /^tenant\/clidel-eu-dev deleted \(workflow ([0-9a-f-]{36})\)$/.exec(lines[0]!)?.[1];
    expect(id, lines[0]).toBeDefined();
    expect(lines.slice(1, -1).map((l) => l.trim().split(/\s+/))).toEqual(
      [
        'check-retention',
        'delete-resources',
        'verify-resources-gone',
        'delete-secrets',
        'record-deletion',
      ].map((step) => [step, 'Completed']),
    );
    expect(lines.at(-1)).toBe(`workflow ${id} Succeeded`);
    const purge = await cli('purge', 'clidel-eu-dev');
    expect(purge.code).toBe(1);
    expect(purge.stderr).toContain('under legal hold (case 9)');
  });

  it("saves a chain's tree head and later proves the grown log consistent with it (tree-head, verify --checkpoint)", async () => {
    const head = await cli('audit', 'tree-head', '--tenant', 'circlek-eu-uat');
    expect(head.code).toBe(0);
    const [origin, size] = head.stdout.split('\n');
    expect(origin).toBe('tenantry/audit/8c9646e0-b9ce-426a-8849-a047e29afa9d');
    expect(head.stdout).toMatch(
      /\n\n\u2014 tenantry\/audit\/8c9646e0-b9ce-426a-8849-a047e29afa9d [A-Za-z0-9+/=]+\n$/,
    );
    const saved = path.join(dataDir, 'uat-tree-head.txt');
    fs.writeFileSync(saved, head.stdout);
    const key = path.join(dataDir, 'audit-key.pem');
    // The log grows (the resume is audited), and is still the same log.
    expect((await cli('resume', 'circlek-eu-uat', '--wait')).code).toBe(0);
    const later = await cli('audit', 'tree-head', '--tenant', 'circlek-eu-uat');
    expect(Number(later.stdout.split('\n')[1])).toBeGreaterThan(Number(size));
    const ok = await cli('audit', 'verify', '--checkpoint', saved, '--public-key', key);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^consistent: /);
    // A saved checkpoint of another history (its root changed, so its signature no longer holds).
    const lines = head.stdout.split('\n');
    lines[2] = Buffer.alloc(32, 7).toString('base64');
    fs.writeFileSync(saved, lines.join('\n'));
    const bad = await cli('audit', 'verify', '--checkpoint', saved, '--public-key', key);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/^INCONSISTENT: /);
  });
});
