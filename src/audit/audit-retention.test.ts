import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, tamper } from '../../test/helpers/audit.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, inScope } from '../db/database.js';
import { createAuditCheckpoint } from './audit-checkpoint.js';
import { applyAuditRetention } from './audit-retention.js';
import { chainCheckpoint, chainConsistency, recordInclusion } from './audit-tree.js';
import { AuditSigner } from './checkpoint-signer.js';
import { leafHash, verifyConsistency, verifyInclusion } from './merkle.js';
import { verifyAudit } from './verify-audit.js';

let t: TestDatabase;
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const keys = [signer.publicKeyPem];
const ctx = systemContext('retention-job');

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

describe('audit retention', () => {
  it('is refused from a tenant context, and for records younger than the minimum age', async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 3);
    const cp = await createAuditCheckpoint(t.db, signer);
    await new Promise((r) => setTimeout(r, 10));
    const cutoff = new Date().toISOString();
    await expect(
      inScope(t.db, { kind: 'tenant', tenantId: tenant }, (trx) =>
        sql`select * from tenantry_audit_apply_retention(${cp.id}::uuid, ${cutoff}::timestamptz)`.execute(
          trx,
        ),
      ),
      // The tenant role may not even call it (migration 0013); the function checks the scope as well.
    ).rejects.toThrow(/permission denied for function tenantry_audit_apply_retention/);
    await expect(
      asPlatform(t.db, (trx) =>
        sql`select * from tenantry_audit_apply_retention(${cp.id}::uuid, ${cutoff}::timestamptz)`.execute(
          trx,
        ),
      ),
    ).rejects.toThrow(/younger than the minimum age/);
    // The application role cannot lower the minimum age.
    await expect(
      asPlatform(t.db, (trx) => sql`update audit_retention_policy set min_age = interval '0'`.execute(trx)),
    ).rejects.toThrow(/permission denied/);
    const { rows } = await t.owner.query('select count(*)::int as n from audit_records where chain = $1', [
      tenant,
    ]);
    expect(rows[0].n).toBe(3);
  });

  it('skips a chain under a legal hold, which the application role cannot remove, and audits the run', async () => {
    const held = randomUUID();
    const free = randomUUID();
    await appendMany(t.db, held, 2);
    await appendMany(t.db, free, 2);
    await createAuditCheckpoint(t.db, signer);
    await asPlatform(t.db, (trx) =>
      sql`insert into audit_legal_holds (chain, reason) values (${held}, 'litigation 42')`.execute(trx),
    );
    await expect(asPlatform(t.db, (trx) => sql`delete from audit_legal_holds`.execute(trx))).rejects.toThrow(
      /permission denied/,
    );
    await t.owner.query(`update audit_retention_policy set min_age = interval '0'`);
    await new Promise((r) => setTimeout(r, 10));
    const result = await applyAuditRetention(t.db, ctx, { olderThan: new Date(), publicKeys: keys });
    const chains = result.segments.map((s) => s.chain);
    expect(chains).toContain(free);
    expect(chains).not.toContain(held);
    expect(result.record).toMatchObject({ chain: 'platform', action: 'audit.retention' });
    const { rows } = await t.owner.query('select count(*)::int as n from audit_records where chain = $1', [
      held,
    ]);
    expect(rows[0].n).toBe(2);
  });

  it("keeps the pruned leaves' hashes: the pruned log has the same tree, consistent with a witness's checkpoint", async () => {
    const tenant = randomUUID();
    await appendMany(t.db, tenant, 6);
    const witnessed = await chainCheckpoint(t.db, signer, tenant);
    await createAuditCheckpoint(t.db, signer);
    const later = await appendMany(t.db, tenant, 3);
    await t.owner.query(`update audit_retention_policy set min_age = interval '0'`);
    await new Promise((r) => setTimeout(r, 10));
    const result = await applyAuditRetention(t.db, ctx, { olderThan: new Date(), publicKeys: keys });
    expect(result.segments.find((s) => s.chain === tenant)).toMatchObject({ throughSeq: 6, deleted: 6 });
    const now = await chainCheckpoint(t.db, signer, tenant);
    expect(now.size).toBe(9);
    const hex = (h: string) => Buffer.from(h, 'hex');
    const consistent = async () => {
      const p = await chainConsistency(t.db, signer, tenant, 6, 9);
      return verifyConsistency(6, 9, p.proof.map(hex), hex(witnessed.rootHash), hex(p.checkpoint.rootHash));
    };
    expect(await consistent()).toBe(true);
    const rec = later[0]!;
    const incl = await recordInclusion(t.db, signer, rec.id, { chain: tenant, seq: rec.seq });
    expect(verifyInclusion(leafHash(hex(rec.hash)), 6, 9, incl.proof.map(hex), hex(now.rootHash))).toBe(true);
    expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).ok).toBe(true);
    // The kept hashes are append-only: not the application role, not the owner without disabling triggers.
    await expect(
      asPlatform(t.db, (trx) => sql`delete from audit_pruned_leaves`.execute(trx)),
    ).rejects.toThrow(/permission denied/);
    await expect(t.owner.query('update audit_pruned_leaves set hash = hash')).rejects.toThrow(/append-only/);
    // A rewritten pruned leaf no longer gives the tree the witness saw.
    await tamper(
      t.owner,
      `alter table audit_pruned_leaves disable trigger user;
       update audit_pruned_leaves set hash = repeat('e', 64) where chain = '${tenant}' and seq = 2;
       alter table audit_pruned_leaves enable trigger user;`,
    );
    expect(await consistent()).toBe(false);
  });
});
