import type { KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { sql } from 'kysely';
import type pg from 'pg';
import { type Db, platformDb, poolOf, setScope } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { ValidationError } from '../errors/errors.js';
import { countUnsequenced, loadHeads, loadRetention, streamRecords } from './audit.repository.js';
import { loadCheckpoints } from './audit-checkpoint.js';
import { PLATFORM_CHAIN } from './audit-hash.js';
import { type AuditVerification, AuditVerifier, type LinkedChain } from './audit-verifier.js';
import { trustedKeys } from './checkpoint-signer.js';
import { type ChainRange, copyRecords } from './copy-records.js';
import type { VerifyPart, VerifyPartMessage } from './verify-worker.js';

export interface VerifyAuditOptions {
  /** A tenant id, or 'platform': verify that chain only. Absent: every chain. */
  tenant?: string;
  /** Keys trusted to have signed checkpoints (PEM text or key objects): at least the signer's public key. */
  publicKeys: ReadonlyArray<KeyObject | string>;
  batchSize?: number;
  maxProblems?: number;
  /**
   * Worker threads that read and hash parts of the chains in parallel (each on its own connection,
   * in the same snapshot). Default: one per core when the log holds at least PARALLEL_FROM records
   * and more than one chain; 0 reads and hashes in this thread.
   */
  workers?: number;
}

/** Below this many records a verification is over before worker threads would have started. */
export const PARALLEL_FROM = 50_000;

export function parseChainFilter(tenant: string | undefined): string | undefined {
  if (tenant === undefined || tenant === PLATFORM_CHAIN) return tenant;
  if (!isUuid(tenant))
    throw ValidationError.field(
      '/tenant',
      'tenant.invalid',
      `"${tenant}" is not a tenant id (UUID) or "platform".`,
    );
  return tenant.toLowerCase();
}

/**
 * Recomputes every chain (or one tenant's) from one consistent snapshot: each record's hash, each
 * link, gap-free seq; every checkpoint's signature and that every head it signed is still there
 * (so deleting the newest records is detected); that retention only removed checkpointed segments;
 * and that the stored chain heads match the last records. Entries the sequencer has not integrated
 * yet are counted, not verified (they have no position or hash yet). Reads as the platform.
 *
 * Over a large log (PARALLEL_FROM records) the records are read, parsed and hashed by worker
 * threads, one per core, each COPYing a range of chains on its own connection in this
 * transaction's exported snapshot and linking them; this thread takes each chain's outcome
 * (AuditVerifier.addLinkedChains) and checks heads, checkpoints and retention over all of them.
 */
export async function verifyAudit(db: Db, opts: VerifyAuditOptions): Promise<AuditVerification> {
  const chain = parseChainFilter(opts.tenant);
  const verifier = new AuditVerifier(trustedKeys(opts.publicKeys), {
    ...(chain !== undefined ? { chain } : {}),
    ...(opts.maxProblems !== undefined ? { maxProblems: opts.maxProblems } : {}),
  });
  return platformDb(db)
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx) => {
      // The snapshot begins with this first statement: everything below sees the same moment.
      await setScope(trx, { kind: 'platform' }, db);
      for (const m of await loadRetention(trx, chain)) verifier.addRetention(m);
      for (const c of await loadCheckpoints(trx)) verifier.addCheckpoint(c);
      const heads = await loadHeads(trx, chain);
      for (const h of heads) verifier.addHead(h.chain, h.seq, h.hash);
      const pending = await countUnsequenced(trx, chain);
      verifier.addUnsequenced(pending.records, pending.oldest);
      const scope = {
        ...(chain !== undefined ? { chain } : {}),
        ...(opts.batchSize ? { batchSize: opts.batchSize } : {}),
      };
      const pool = poolOf(platformDb(db));
      if (!pool) {
        for await (const batch of streamRecords(trx, scope)) for (const r of batch) verifier.addRecord(r);
        return verifier.finish();
      }
      // The records come by COPY on a second connection that shares this transaction's snapshot
      // (pg_export_snapshot, as pg_dump's parallel workers do): one stream instead of a query per page.
      const { rows } = await sql<{ id: string }>`select pg_export_snapshot() as id`.execute(trx);
      const parts = chainParts(heads, opts.workers);
      if (parts.length > 1 || opts.workers) {
        const part = {
          snapshot: rows[0]!.id,
          connection: connectionOf(pool),
          basis: verifier.linkingBasis(),
        };
        const linked = await Promise.all(
          parts.map((range) =>
            runPart({ ...part, range: { ...range, ...(chain !== undefined ? { chain } : {}) } }),
          ),
        );
        for (const chains of linked) verifier.addLinkedChains(chains);
        return verifier.finish();
      }
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('begin isolation level repeatable read read only');
        await client.query(`set transaction snapshot '${rows[0]!.id.replace(/'/g, '')}'`);
        // The platform scope, as setScope enters it (src/db/database.ts).
        await client.query(
          "select set_config('tenantry.platform', 'on', true), set_config('tenantry.tenant_id', '', true)",
        );
        const records = heads.reduce((n, h) => n + Number(h.seq), 0);
        await copyRecords(client, { ...scope, records }, (r, matches) =>
          verifier.addLinkInAnyOrder(r, matches),
        );
        await client.query('commit');
      } catch (err) {
        await client.query('rollback').catch((e: Error) => {
          broken = e;
        });
        throw err;
      } finally {
        // A connection that could not even roll back is dropped, not returned to the pool.
        client.release(broken);
      }
      return verifier.finish();
    });
}

/**
 * The chains split into about equal parts by record count, one per worker, as ranges of chain names
 * taken from the stored heads in the database's own order. The heads only balance the parts: the
 * ranges cover every chain name whatever the heads say (the first is open below, the last above),
 * so a chain whose head was deleted is still read and verified.
 */
function chainParts(
  heads: readonly { chain: string; seq: number }[],
  workers: number | undefined,
): ChainRange[] {
  const total = heads.reduce((n, h) => n + Number(h.seq), 0);
  const count = workers ?? (total >= PARALLEL_FROM ? availableParallelism() : 0);
  if (count <= 1 || heads.length < 2) return count >= 1 ? [{ records: total }] : [];
  const bounds: string[] = [];
  const records = [0];
  let seen = 0;
  for (const [i, h] of heads.entries()) {
    if (i > 0 && seen >= (total * (bounds.length + 1)) / count && bounds.length < count - 1) {
      bounds.push(h.chain);
      records.push(0);
    }
    seen += Number(h.seq);
    records[records.length - 1]! += Number(h.seq);
  }
  return [undefined, ...bounds].map((from, i) => ({
    ...(from !== undefined ? { from } : {}),
    ...(bounds[i] !== undefined ? { to: bounds[i] } : {}),
    records: records[i]!,
  }));
}

/** What a worker needs to open its own connection like the pool's (no functions: they do not cross threads). */
function connectionOf(pool: pg.Pool): pg.ClientConfig {
  const o = pool.options;
  const config: pg.ClientConfig = {};
  if (o.connectionString !== undefined) config.connectionString = o.connectionString;
  if (o.host !== undefined) config.host = o.host;
  if (o.port !== undefined) config.port = o.port;
  if (o.user !== undefined) config.user = o.user;
  if (typeof o.password === 'string') config.password = o.password;
  if (o.database !== undefined) config.database = o.database;
  return config;
}

/**
 * The worker thread of one part. Built, it is plain JavaScript; from the sources (tsx, vitest) it is
 * TypeScript, which a worker on Node 20 cannot load through the parent's module hooks: it registers
 * tsx's require hook itself (tsx is a development dependency, as running from the sources is).
 */
function startWorker(part: VerifyPart): Worker {
  if (!import.meta.url.endsWith('.ts'))
    return new Worker(new URL('./verify-worker.js', import.meta.url), { workerData: part });
  const tsx = createRequire(import.meta.url).resolve('tsx/cjs/api');
  const file = fileURLToPath(new URL('./verify-worker.ts', import.meta.url));
  return new Worker(`require(${JSON.stringify(tsx)}).register(); require(${JSON.stringify(file)});`, {
    eval: true,
    workerData: part,
  });
}

/** One part in a worker thread: its chains as the worker linked them; rejects if the worker fails. */
function runPart(part: VerifyPart): Promise<LinkedChain[]> {
  return new Promise((resolve, reject) => {
    const worker = startWorker(part);
    let settled = false;
    const settle = (err?: Error, chains?: LinkedChain[]) => {
      if (settled) return;
      settled = true;
      void worker.terminate();
      if (chains) resolve(chains);
      else reject(err);
    };
    worker.on('message', (m: VerifyPartMessage) => {
      if ('chains' in m) settle(undefined, m.chains);
      else settle(new Error(`audit verification worker: ${m.error}`));
    });
    worker.on('error', (err) => settle(err));
    worker.on('exit', (code) =>
      settle(new Error(`audit verification worker exited (${code}) before it finished`)),
    );
  });
}
