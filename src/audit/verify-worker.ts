import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import { AuditVerifier, type LinkedChain, type LinkingBasis } from './audit-verifier.js';
import { type ChainRange, copyRecords } from './copy-records.js';

/** What verifyAudit gives a worker: where to connect, the snapshot to read in, which chains, how to link them. */
export interface VerifyPart {
  connection: pg.ClientConfig;
  /** pg_export_snapshot() of the verifying transaction, still open while the worker reads. */
  snapshot: string;
  range: ChainRange;
  basis: LinkingBasis;
}

/** What a worker posts once: its chains as it linked them; or the error that stopped it. */
export type VerifyPartMessage = { chains: LinkedChain[] } | { error: string };

/**
 * One part of `audit verify` in a worker thread (verify-audit.ts starts one per part of the chains):
 * reads its chains by COPY on its own connection in the verifying transaction's snapshot, as the
 * platform, recomputes each record's v1 hash from its content and links its chains (each chain is
 * whole in one part) with a verifier of that part (AuditVerifier.forPart). The main thread gets
 * each chain's outcome, not its records: reading, parsing, hashing and linking use every core.
 */
async function verifyPart(part: VerifyPart): Promise<LinkedChain[]> {
  const verifier = AuditVerifier.forPart(part.basis);
  const client = new pg.Client(part.connection);
  await client.connect();
  try {
    await client.query('begin isolation level repeatable read read only');
    await client.query(`set transaction snapshot '${part.snapshot.replace(/'/g, '')}'`);
    // The platform scope, as setScope enters it (src/db/database.ts).
    await client.query(
      "select set_config('tenantry.platform', 'on', true), set_config('tenantry.tenant_id', '', true)",
    );
    await copyRecords(client, part.range, (r, matches) => verifier.addLinkInAnyOrder(r, matches));
    await client.query('commit');
  } finally {
    await client.end();
  }
  return verifier.linkedChains();
}

if (parentPort && workerData) {
  const port = parentPort;
  verifyPart(workerData as VerifyPart).then(
    (chains) => port.postMessage({ chains } satisfies VerifyPartMessage),
    (err: unknown) =>
      port.postMessage({
        error: err instanceof Error ? err.message : String(err),
      } satisfies VerifyPartMessage),
  );
}
