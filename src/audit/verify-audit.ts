import type { KeyObject } from 'node:crypto';
import { sql } from 'kysely';
import { type Db, platformDb, poolOf, setScope } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { ValidationError } from '../errors/errors.js';
import { countUnsequenced, loadHeads, loadRetention, streamRecords } from './audit.repository.js';
import { loadCheckpoints } from './audit-checkpoint.js';
import { PLATFORM_CHAIN } from './audit-hash.js';
import { type AuditVerification, AuditVerifier } from './audit-verifier.js';
import { trustedKeys } from './checkpoint-signer.js';
import { copyRecords } from './copy-records.js';

export interface VerifyAuditOptions {
  /** A tenant id, or 'platform': verify that chain only. Absent: every chain. */
  tenant?: string;
  /** Keys trusted to have signed checkpoints (PEM text or key objects): at least the signer's public key. */
  publicKeys: ReadonlyArray<KeyObject | string>;
  batchSize?: number;
  maxProblems?: number;
}

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
      for (const h of await loadHeads(trx, chain)) verifier.addHead(h.chain, h.seq, h.hash);
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
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('begin isolation level repeatable read read only');
        await client.query(`set transaction snapshot '${rows[0]!.id.replace(/'/g, '')}'`);
        // The platform scope, as setScope enters it (src/db/database.ts).
        await client.query(
          "select set_config('tenantry.platform', 'on', true), set_config('tenantry.tenant_id', '', true)",
        );
        for await (const batch of copyRecords(client, scope)) for (const r of batch) verifier.addRecord(r);
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
