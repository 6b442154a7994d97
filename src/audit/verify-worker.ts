import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import { type ChainRange, copyRecords, type RecordBatch } from './copy-records.js';

/** What verifyAudit gives a worker: where to connect, the snapshot to read in, which chains. */
export interface VerifyPart {
  connection: pg.ClientConfig;
  /** pg_export_snapshot() of the verifying transaction, still open while the worker reads. */
  snapshot: string;
  range: ChainRange;
  batchSize: number;
}

/**
 * What a worker posts: batches of records in (chain, seq) order, each with whether its content
 * matches its hash, then `done` with the count; or the error that stopped it.
 */
export type VerifyPartMessage = { batch: RecordBatch } | { done: number } | { error: string };

/**
 * One part of `audit verify` in a worker thread (verify-audit.ts starts one per part of the chains):
 * reads its chains by COPY on its own connection in the verifying transaction's snapshot, as the
 * platform, recomputes each record's v1 hash from its content, and hands the main thread only what
 * the chain checks need. So reading, parsing and hashing use every core, and the main thread links.
 */
async function verifyPart(part: VerifyPart, post: (m: VerifyPartMessage) => void): Promise<number> {
  const client = new pg.Client(part.connection);
  await client.connect();
  let n = 0;
  try {
    await client.query('begin isolation level repeatable read read only');
    await client.query(`set transaction snapshot '${part.snapshot.replace(/'/g, '')}'`);
    // The platform scope, as setScope enters it (src/db/database.ts).
    await client.query(
      "select set_config('tenantry.platform', 'on', true), set_config('tenantry.tenant_id', '', true)",
    );
    for await (const batch of copyRecords(client, { ...part.range, batchSize: part.batchSize })) {
      n += batch.ids.length;
      post({ batch });
    }
    await client.query('commit');
  } finally {
    await client.end();
  }
  return n;
}

if (parentPort && workerData) {
  const port = parentPort;
  verifyPart(workerData as VerifyPart, (m) => port.postMessage(m)).then(
    (done) => port.postMessage({ done } satisfies VerifyPartMessage),
    (err: unknown) =>
      port.postMessage({
        error: err instanceof Error ? err.message : String(err),
      } satisfies VerifyPartMessage),
  );
}
