/**
 * Audit log benchmark: `npx tsx bench/audit.bench.ts`
 *
 *  1. sustained append rate through the change path (RegistryService.apply of one small Tenant
 *     manifest per transaction), and through appendAudit directly, on many tenants and on one;
 *  2. verify rate over >= 1M records: the records are built in Node as valid chains (hashes
 *     computed here) and inserted in batches with unnest(), then verifyAudit recomputes everything.
 *
 * Uses DATABASE_URL (a server URL; a scratch database is created and dropped) or starts an
 * embedded PostgreSQL in a temporary folder. BENCH_RECORDS (default 1,000,000), BENCH_SECONDS
 * (default 8 per append phase), BENCH_WRITERS (default 8) tune it.
 */
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { type AuditEntry, appendAudit } from '../src/audit/append-audit.js';
import { createAuditCheckpoint } from '../src/audit/audit-checkpoint.js';
import {
  type AuditDocument,
  type AuditRecord,
  GENESIS_HASH,
  hashAuditDocument,
} from '../src/audit/audit-hash.js';
import { AuditSigner } from '../src/audit/checkpoint-signer.js';
import { verifyAudit } from '../src/audit/verify-audit.js';
import { systemContext } from '../src/changes/request-context.js';
import { loadConfig } from '../src/config/config.js';
import { asPlatform, createDb, ensureAppRole, migrate } from '../src/db/database.js';
import { EmbeddedDatabase } from '../src/db/embedded-postgres.js';
import { RegistryService } from '../src/registry/registry.service.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const WRITERS = Number(process.env.BENCH_WRITERS ?? 8);
const CHAINS = 200;
const BATCH = 5000;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const log = (...args: unknown[]) => console.log(...args);

async function main() {
  const started = Date.now();
  let embedded: EmbeddedDatabase | undefined;
  let tmp: string | undefined;
  let serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-'));
    await fs.chmod(tmp, 0o755);
    embedded = new EmbeddedDatabase({
      clusterDir: path.join(tmp, 'pg'),
      credentialsFile: path.join(tmp, 'pg-password'),
      ephemeral: true,
    });
    await embedded.start();
    serverUrl = embedded.url;
  }
  const name = `tenantry_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const ownerUrl = url.toString();
  await migrate(ownerUrl);
  const appUrl = await ensureAppRole(ownerUrl);
  const db = createDb(appUrl, WRITERS + 4);
  const owner = new pg.Pool({ connectionString: ownerUrl, max: 2 });
  const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
  log(`PostgreSQL ready in ${((Date.now() - started) / 1000).toFixed(1)} s; ${os.cpus().length} CPUs`);

  try {
    // 1a. The change path: one Tenant manifest per apply (object row + lineage + audit + outbox + job).
    const config = loadConfig({}, { TENANTRY_DATA_DIR: tmp ?? os.tmpdir() });
    const registry = new RegistryService(db, config);
    const ctx = systemContext('bench');
    await registry.apply(ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'Customer',
        metadata: { name: 'bench' },
        spec: { displayName: 'Bench', shortCode: 'bench' },
      },
    ]);
    let counter = 0;
    const applied = await sustained(SECONDS, WRITERS, async () => {
      const q = `q${counter++}`;
      await registry.apply(ctx, [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Tenant',
          metadata: { name: `bench-eu-dev-${q}` },
          spec: { customer: 'bench', region: 'eu', environmentType: 'dev', qualifier: q },
        },
      ]);
    });
    log(`change path (RegistryService.apply, ${WRITERS} writers, new tenants): ${fmt(applied)} changes/s`);

    // 1b. appendAudit alone, each writer on its own tenant, then all on one tenant.
    const tenants = Array.from({ length: WRITERS }, () => randomUUID());
    let w = 0;
    const own = await sustained(SECONDS / 2, WRITERS, async (writer) => {
      w++;
      await asPlatform(db, (trx) => appendAudit(trx, entry(tenants[writer]!, w)));
    });
    log(`appendAudit, ${WRITERS} writers on ${WRITERS} tenants: ${fmt(own)} records/s`);
    const one = randomUUID();
    const shared = await sustained(SECONDS / 2, WRITERS, async () => {
      w++;
      await asPlatform(db, (trx) => appendAudit(trx, entry(one, w)));
    });
    log(`appendAudit, ${WRITERS} writers on 1 tenant:  ${fmt(shared)} records/s`);

    // 2. Bulk: RECORDS records in CHAINS valid chains, built here and inserted in batches.
    // As any bulk load: the search indexes are dropped and rebuilt afterwards (the primary key and
    // the (chain, seq) unique index stay, so the chain constraints hold during the load).
    const t0 = Date.now();
    const { rows: indexes } = await owner.query<{ name: string; def: string }>(
      `select i.indexname as name, i.indexdef as def from pg_indexes i
       where i.tablename = 'audit_records'
         and not exists (select from pg_constraint c where c.conname = i.indexname)`,
    );
    for (const ix of indexes) await owner.query(`drop index ${ix.name}`);
    const inserted = await bulkInsert(owner, RECORDS);
    const loadSecs = (Date.now() - t0) / 1000;
    await Promise.all(indexes.map((ix) => owner.query(ix.def)));
    const insertSecs = (Date.now() - t0) / 1000;
    log(
      `bulk insert of ${fmt(inserted)} chained records: ${insertSecs.toFixed(1)} s with index rebuild ` +
        `(${fmt(inserted / loadSecs)} records/s loading, ${fmt(inserted / insertSecs)} records/s overall)`,
    );
    await owner.query('analyze audit_records');
    await createAuditCheckpoint(db, signer);

    const t1 = Date.now();
    const v = await verifyAudit(db, { publicKeys: [signer.publicKey] });
    const verifySecs = (Date.now() - t1) / 1000;
    if (!v.ok) throw new Error(`verification failed: ${JSON.stringify(v.firstProblem)}`);
    log(
      `verifyAudit over ${fmt(v.records)} records in ${v.chains.length} chains: ${verifySecs.toFixed(1)} s (${fmt(v.records / verifySecs)} records/s)`,
    );
    const big = tenantOfBulk(0);
    const t2 = Date.now();
    const vt = await verifyAudit(db, { tenant: big, publicKeys: [signer.publicKey] });
    const oneSecs = (Date.now() - t2) / 1000;
    log(
      `verifyAudit of one tenant (${fmt(vt.records)} records): ${oneSecs.toFixed(2)} s (${fmt(vt.records / oneSecs)} records/s)`,
    );
  } finally {
    await db.destroy();
    await owner.end();
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
    await embedded?.stop();
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
    log(`total ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}

/** Runs `work` in `writers` loops for `seconds`; returns completed operations per second. */
async function sustained(seconds: number, writers: number, work: (writer: number) => Promise<void>) {
  const until = Date.now() + seconds * 1000;
  let done = 0;
  const start = Date.now();
  await Promise.all(
    Array.from({ length: writers }, async (_, writer) => {
      while (Date.now() < until) {
        await work(writer);
        done++;
      }
    }),
  );
  return done / ((Date.now() - start) / 1000);
}

function entry(tenantId: string, n: number): AuditEntry {
  const id = randomUUID();
  return {
    tenantId,
    appId: 'bench',
    actor: { principal: 'bench@example.com', kind: 'user' },
    sessionId: null,
    action: 'deployment.update',
    target: { kind: 'Deployment', id, slug: `bench-eu-prod-store-${n % 100}` },
    before: { metadata: { labels: { tier: 'a' } }, spec: { replicas: n % 5 } },
    after: { metadata: { labels: { tier: 'b' } }, spec: { replicas: (n % 5) + 1 } },
    outcome: 'success',
    decision: null,
    requestId: id,
    correlationId: id,
  };
}

const bulkTenants: string[] = Array.from({ length: CHAINS }, () => randomUUID());
const tenantOfBulk = (i: number) => bulkTenants[i % CHAINS]!;

async function bulkInsert(owner: pg.Pool, total: number): Promise<number> {
  const heads = new Map<string, { seq: number; hash: string }>();
  const base = Date.UTC(2025, 0, 1);
  let made = 0;
  let pending: Promise<unknown> = Promise.resolve();
  while (made < total) {
    const batch: AuditRecord[] = [];
    for (let i = 0; i < BATCH && made < total; i++, made++) {
      const tenant = tenantOfBulk(made);
      const head = heads.get(tenant) ?? { seq: 0, hash: GENESIS_HASH };
      const time = `${new Date(base + made).toISOString().slice(0, -1)}000Z`;
      // As sealAuditRecord does, minus its JSON normalisation (these values are plain JSON already).
      const e = entry(tenant, made);
      const doc: AuditDocument = {
        v: 1,
        id: randomUUID(),
        chain: tenant,
        seq: head.seq + 1,
        time,
        tenantId: tenant,
        appId: e.appId,
        actor: e.actor,
        sessionId: e.sessionId,
        action: e.action,
        target: e.target,
        before: e.before,
        after: e.after,
        outcome: e.outcome,
        decision: null,
        requestId: e.requestId,
        correlationId: e.correlationId,
        prevHash: head.hash,
      };
      const rec: AuditRecord = { ...doc, hash: hashAuditDocument(doc) };
      heads.set(tenant, { seq: rec.seq, hash: rec.hash });
      batch.push(rec);
    }
    await pending; // one batch in the database while the next is hashed
    pending = insertBatch(owner, batch);
  }
  await pending;
  for (const [chain, h] of heads) {
    await owner.query('insert into audit_chain_heads (chain, seq, hash) values ($1, $2, $3)', [
      chain,
      h.seq,
      h.hash,
    ]);
  }
  return made;
}

function insertBatch(owner: pg.Pool, rows: AuditRecord[]) {
  const col = <T>(f: (r: AuditRecord) => T) => rows.map(f);
  return owner.query(
    `insert into audit_records
       (id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
        target_slug, before, after, outcome, decision, request_id, correlation_id, chain, seq, prev_hash, hash)
     select id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
        target_slug, before::jsonb, after::jsonb, outcome, decision::jsonb, request_id, correlation_id, chain, seq, prev_hash, hash
     from unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                 $9::text[], $10::uuid[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                 $17::text[], $18::text[], $19::bigint[], $20::text[], $21::text[])
       as u(id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
            target_slug, before, after, outcome, decision, request_id, correlation_id, chain, seq, prev_hash, hash)`,
    [
      col((r) => r.id),
      col((r) => r.time),
      col((r) => r.tenantId),
      col((r) => r.appId),
      col((r) => r.actor.principal),
      col((r) => r.actor.kind),
      col((r) => r.sessionId),
      col((r) => r.action),
      col((r) => r.target.kind),
      col((r) => r.target.id),
      col((r) => r.target.slug),
      col((r) => JSON.stringify(r.before)),
      col((r) => JSON.stringify(r.after)),
      col((r) => r.outcome),
      col((r) => JSON.stringify(r.decision)),
      col((r) => r.requestId),
      col((r) => r.correlationId),
      col((r) => r.chain),
      col((r) => r.seq),
      col((r) => r.prevHash),
      col((r) => r.hash),
    ],
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
