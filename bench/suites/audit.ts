/**
 * 8. Audit log (issue 17: append >= 5,000 records/s beside raw INSERT, verify >= 100k records/s over
 *    >= 1M records, integration delay p99 <= 1 s, one tenant >= 80% of 8 tenants).
 *  (a) Append, at the concurrency a server gives it: SERVER_WRITERS connections, as many as the
 *      server's database pool (src/app.ts), because with fsync on a commit costs a disk flush and
 *      concurrent commits share flushes (group commit): one writer at a time measures the disk, not
 *      the log. Each writer on its own tenant's chain, while the sequencer integrates and a
 *      checkpoint is signed every second:
 *      - appendAuditAlone, one record per transaction, as the product writes a record that has a
 *        transaction of its own (a refused or failed attempt, a disclosure: one statement, its own
 *        implicit transaction; a change's record goes in the change's own statement instead), against
 *        raw single-row INSERTs (autocommit) into a plain table on as many connections;
 *      - appendAudits, PER_TX records per transaction in one statement (as a change writing many),
 *        against raw PER_TX-row INSERTs of the same documents in one statement; both in records/s.
 *      Then 8 writers all on one tenant's chain against 8 writers on 8 tenants (appends must not
 *      serialise per chain), and the sequencer's integration delay (write to sequenced) p99 under
 *      each load.
 *  (b) Verify: BENCH_AUDIT_RECORDS (default 1,000,000) records in 200 valid chains, built here
 *      (hashes computed as the sequencer does) and bulk-loaded, then verifyAudit recomputes every
 *      hash, link, seq, head and checkpoint signature (its worker threads, one per core, each
 *      reading part of the chains); against reading the same records in the same keyset batches
 *      through the same driver without checking anything. The same verification in one thread is
 *      printed beside it.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import pg from 'pg';
import { type AuditEntry, appendAuditAlone, appendAudits } from '../../src/audit/append-audit.js';
import { createAuditCheckpoint } from '../../src/audit/audit-checkpoint.js';
import {
  type AuditDocument,
  type AuditRecord,
  GENESIS_HASH,
  hashAuditDocument,
} from '../../src/audit/audit-hash.js';
import { AuditSequencer } from '../../src/audit/audit-sequencer.js';
import { AuditSigner } from '../../src/audit/checkpoint-signer.js';
import { verifyAudit } from '../../src/audit/verify-audit.js';
import { asPlatform, createDb } from '../../src/db/database.js';
import { closedLoop, compare, type Side } from '../lib/load.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

const RECORDS = Number(process.env.BENCH_AUDIT_RECORDS ?? 1_000_000);
const CHAINS = 200;
const BATCH = 5000;
/** The server's database pool for API work (src/app.ts: createDb(appUrl, 20)). */
const SERVER_WRITERS = 20;
/** Records per transaction of a change that writes many. */
const PER_TX = 50;

/** A side that does `perOp` records per operation, counted in records. */
const inRecords = (side: Side, perOp: number): Side => ({
  ...side,
  unit: 'records/s',
  run: async (seconds) => {
    const r = await side.run(seconds);
    return { ...r, count: r.count * perOp };
  },
});

export async function auditBenchmark(server: BenchPostgres): Promise<Row[]> {
  const { ownerUrl, appUrl } = await server.createDatabase('bench_audit');
  const db = createDb(appUrl, Math.max(SERVER_WRITERS, settings.connections) + 2);
  const owner = new pg.Pool({ connectionString: ownerUrl, max: settings.connections });
  owner.on('error', () => undefined);
  const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
  try {
    // (a) Append.
    await owner.query(
      `create table bench_raw_insert (id bigint generated always as identity primary key,
         tenant_id uuid not null, data jsonb not null, created_at timestamptz not null default now())`,
    );
    await owner.query('grant select, insert on bench_raw_insert to tenantry_app');
    const pool = new pg.Pool({ connectionString: appUrl, max: SERVER_WRITERS });
    pool.on('error', () => undefined);
    const tenants = Array.from({ length: Math.max(SERVER_WRITERS, settings.connections) }, () =>
      randomUUID(),
    );
    const shared = randomUUID();
    // The sequencer runs as in a server (every 200 ms, batches of 5,000); its delays are kept per
    // load: the comparisons run one after the other, each once the sequencer has caught up.
    const delays = { single: [] as number[], many: [] as number[] };
    let phase: keyof typeof delays = 'single';
    const sequencer = new AuditSequencer(db, {
      onBatch: (b) => {
        for (const d of b.delaysMs) delays[phase].push(d);
      },
    });
    const caughtUp = async () => {
      while ((await owner.query('select count(*)::int as n from audit_queue')).rows[0].n > 0)
        await new Promise((r) => setTimeout(r, 200));
    };
    sequencer.start();
    let n = 0;
    const single = `${SERVER_WRITERS} writers, 1 record per transaction`;
    const append = closedLoop(
      `appendAuditAlone, ${single}`,
      async (w) => {
        await appendAuditAlone(db, entry(tenants[w]!, n++));
      },
      SERVER_WRITERS,
    );
    const raw = closedLoop(
      `raw single-row INSERT (autocommit), ${single}`,
      async (w) => {
        await pool.query('insert into bench_raw_insert (tenant_id, data) values ($1, $2)', [
          tenants[w],
          JSON.stringify(entry(tenants[w]!, n++)),
        ]);
      },
      SERVER_WRITERS,
    );
    const many = `${SERVER_WRITERS} writers, ${PER_TX} records per transaction in one statement`;
    const appendMany = closedLoop(
      `appendAudits, ${many}`,
      async (w) => {
        const entries = Array.from({ length: PER_TX }, () => entry(tenants[w]!, n++));
        await asPlatform(db, (trx) => appendAudits(trx, entries));
      },
      SERVER_WRITERS,
    );
    const rawMany = closedLoop(
      `raw ${PER_TX}-row INSERT (autocommit), ${many}`,
      async (w) => {
        const docs = Array.from({ length: PER_TX }, () => JSON.stringify(entry(tenants[w]!, n++)));
        await pool.query(
          'insert into bench_raw_insert (tenant_id, data) select $1, d::jsonb from unnest($2::text[]) d',
          [tenants[w], docs],
        );
      },
      SERVER_WRITERS,
    );
    const appendEight = closedLoop(
      'appendAuditAlone, 8 writers on 8 tenants, 1 record per transaction',
      async (w) => {
        await appendAuditAlone(db, entry(tenants[w]!, n++));
      },
    );
    const appendShared = closedLoop(
      'appendAuditAlone, 8 writers on one tenant, 1 record per transaction',
      async () => {
        await appendAuditAlone(db, entry(shared, n++));
      },
    );
    let checkpoints = 0;
    const checkpointer = setInterval(() => {
      void createAuditCheckpoint(db, signer).then(() => checkpoints++);
    }, 1000);
    const [appended, rawInsert] = await compare(inRecords(append, 1), inRecords(raw, 1));
    await caughtUp();
    const [oneTenant, eightTenants] = await compare(appendShared, appendEight);
    await caughtUp();
    phase = 'many';
    const [appendedMany, rawInsertMany] = await compare(
      inRecords(appendMany, PER_TX),
      inRecords(rawMany, PER_TX),
    ).finally(() => {
      clearInterval(checkpointer);
      return pool.end();
    });
    await caughtUp();
    await sequencer.stop();
    await sequencer.tick();
    const integration = (list: number[], load: string): Measurement => {
      list.sort((a, b) => a - b);
      const p99 = list[Math.floor(list.length * 0.99)] ?? 0;
      const p50 = list[Math.floor(list.length * 0.5)] ?? 0;
      console.log(
        `  ${load}: ${list.length} entries sequenced, integration delay p50 ${p50.toFixed(0)} ms, ` +
          `p99 ${p99.toFixed(0)} ms, max ${(list.at(-1) ?? 0).toFixed(0)} ms`,
      );
      return {
        label: `entries integrated by the sequencer (${load})`,
        value: list.length,
        unit: 'entries',
        latencyMs: { p50, p99 },
      };
    };
    console.log(`  ${checkpoints} checkpoints signed during the append runs`);
    const singleDelay = integration(delays.single, '1 record per transaction');
    const manyDelay = integration(delays.many, `${PER_TX} records per transaction`);
    const live = await verifyAudit(db, { publicKeys: [signer.publicKey] });
    if (!live.ok) throw new Error(`appended chains do not verify: ${JSON.stringify(live.firstProblem)}`);
    if (live.unsequenced.records !== 0)
      throw new Error(`${live.unsequenced.records} entries left unsequenced`);
    // (b) Verify. As any bulk load: the indexes go, and come back afterwards (the unique ones as the
    // constraints they were, so the chain's uniqueness is still checked, once, over everything).
    // Loaded records come with their positions, so they are not queued for the sequencer.
    const t0 = performance.now();
    const { rows: indexes } = await owner.query<{
      table: string;
      name: string;
      def: string;
      constraint: string | null;
    }>(
      `select i.tablename as table, i.indexname as name, i.indexdef as def,
              (select pg_get_constraintdef(c.oid) from pg_constraint c where c.conname = i.indexname) as constraint
       from pg_indexes i where i.tablename in ('audit_records', 'audit_positions')`,
    );
    for (const ix of indexes) {
      if (ix.constraint) await owner.query(`alter table ${ix.table} drop constraint ${ix.name}`);
      else await owner.query(`drop index ${ix.name}`);
    }
    await owner.query('alter table audit_records disable trigger audit_records_enqueue');
    const loaded = await bulkLoad(owner, RECORDS);
    await owner.query('alter table audit_records enable trigger audit_records_enqueue');
    for (const ix of indexes) {
      if (ix.constraint)
        await owner.query(`alter table ${ix.table} add constraint ${ix.name} ${ix.constraint}`);
      else await owner.query(ix.def);
    }
    await owner.query('vacuum analyze audit_records');
    await owner.query('vacuum analyze audit_positions');
    console.log(
      `  bulk-loaded ${loaded.toLocaleString('en-US')} chained records in ${((performance.now() - t0) / 1000).toFixed(0)}s`,
    );
    await createAuditCheckpoint(db, signer);

    const scanned = await rawScan(owner);
    const t1 = performance.now();
    const v = await verifyAudit(db, { publicKeys: [signer.publicKey] });
    const verifySeconds = (performance.now() - t1) / 1000;
    if (!v.ok) throw new Error(`verification failed: ${JSON.stringify(v.firstProblem)}`);
    const verified: Measurement = {
      label: `verifyAudit (${v.records.toLocaleString('en-US')} records, ${v.chains.length} chains, ${availableParallelism()} worker threads)`,
      value: v.records / verifySeconds,
      unit: 'records/s',
    };
    console.log(
      `  ${verified.label}: ${verified.value.toFixed(0)} records/s in ${verifySeconds.toFixed(1)}s`,
    );
    const t2 = performance.now();
    const inline = await verifyAudit(db, { publicKeys: [signer.publicKey], workers: 0 });
    const inlineSeconds = (performance.now() - t2) / 1000;
    if (!inline.ok) throw new Error(`verification failed: ${JSON.stringify(inline.firstProblem)}`);
    console.log(
      `  verifyAudit in one thread (the same records): ${(inline.records / inlineSeconds).toFixed(0)} records/s in ${inlineSeconds.toFixed(1)}s`,
    );
    return [
      row(
        `Audit append (1 record per transaction, ${SERVER_WRITERS} writers) vs raw INSERT`,
        appended,
        rawInsert,
        {
          valueAtLeast: 5000,
        },
      ),
      row(
        `Audit append (${PER_TX} records per transaction, ${SERVER_WRITERS} writers) vs raw ${PER_TX}-row INSERT`,
        appendedMany,
        rawInsertMany,
        { valueAtLeast: 5000 },
      ),
      row('Audit append: 8 writers on one tenant vs 8 writers on 8 tenants', oneTenant, eightTenants, {
        ratioAtLeast: 0.8,
      }),
      row(
        'Audit integration delay (write to sequenced) during the 1-record-per-transaction appends',
        singleDelay,
        singleDelay,
        { p99AtMostMs: 1000 },
      ),
      row(
        `Audit integration delay (write to sequenced) during the ${PER_TX}-records-per-transaction appends`,
        manyDelay,
        manyDelay,
        { p99AtMostMs: 1000 },
      ),
      row('Audit verify (>= 1M records) vs raw keyset read', verified, scanned, { valueAtLeast: 100_000 }),
    ];
  } finally {
    await db.destroy();
    await owner.end();
  }
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

/** Reads every record in (chain, seq) keyset batches of the verifier's size, checking nothing. */
async function rawScan(owner: pg.Pool): Promise<Measurement> {
  const t0 = performance.now();
  let count = 0;
  let after = { chain: '', seq: 0 };
  for (;;) {
    const { rows } = await owner.query<{ chain: string; seq: string }>(
      `select a.*, p.seq, p.prev_hash, p.hash from audit_positions p join audit_records a on a.id = p.record_id
       where (p.chain, p.seq) > ($1, $2) order by p.chain, p.seq limit ${BATCH}`,
      [after.chain, after.seq],
    );
    count += rows.length;
    if (rows.length < BATCH) break;
    const last = rows[rows.length - 1]!;
    after = { chain: last.chain, seq: Number(last.seq) };
  }
  const seconds = (performance.now() - t0) / 1000;
  const m = { label: 'raw keyset read of the same records', value: count / seconds, unit: 'records/s' };
  console.log(`  ${m.label}: ${m.value.toFixed(0)} records/s in ${seconds.toFixed(1)}s`);
  return m;
}

/** `total` records in CHAINS valid chains, sealed here and inserted in batches with unnest(). */
export async function bulkLoad(owner: pg.Pool, total: number): Promise<number> {
  const chains = Array.from({ length: CHAINS }, () => randomUUID());
  const heads = new Map<string, { seq: number; hash: string }>();
  const base = Date.UTC(2025, 0, 1);
  let made = 0;
  let pending: Promise<unknown> = Promise.resolve();
  while (made < total) {
    const batch: AuditRecord[] = [];
    for (let i = 0; i < BATCH && made < total; i++, made++) {
      const tenant = chains[made % CHAINS]!;
      const head = heads.get(tenant) ?? { seq: 0, hash: GENESIS_HASH };
      const e = entry(tenant, made);
      // As the sequencer hashes, minus its JSON normalisation (these values are plain JSON already).
      const doc: AuditDocument = {
        v: 1,
        id: randomUUID(),
        chain: tenant,
        seq: head.seq + 1,
        time: `${new Date(base + made).toISOString().slice(0, -1)}000Z`,
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
    await pending; // one batch in the database while the next is sealed
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
    `with records as (insert into audit_records
       (id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
        target_slug, before, after, outcome, decision, request_id, correlation_id, chain)
     select id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
        target_slug, before::jsonb, after::jsonb, outcome, decision::jsonb, request_id, correlation_id, chain
     from unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                 $9::text[], $10::uuid[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                 $17::text[], $18::text[])
       as u(id, time, tenant_id, app_id, actor_principal, actor_kind, session_id, action, target_kind, target_id,
            target_slug, before, after, outcome, decision, request_id, correlation_id, chain))
     insert into audit_positions (chain, seq, record_id, prev_hash, hash)
     select * from unnest($18::text[], $19::bigint[], $1::uuid[], $20::text[], $21::text[])`,
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
