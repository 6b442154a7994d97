import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendMany, SEQUENCED, sequenceAudit } from '../../test/helpers/audit.js';
import { circleK } from '../../test/helpers/examples.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { asPlatform, asTenant, platformDb, setScope } from '../db/database.js';
import { TenantryError } from '../errors/errors.js';
import type { RegistryService } from '../registry/registry.service.js';
import { appendAudit, appendAuditAlone, appendAudits, recordAuditAttempt } from './append-audit.js';
import { AuditCheckpointer, createAuditCheckpoint } from './audit-checkpoint.js';
import { AuditSigner } from './checkpoint-signer.js';
import { searchAudit } from './search-audit.js';
import { verifyAudit } from './verify-audit.js';

let t: TestDatabase;
let registry: RegistryService;
const ctx = systemContext('test-operator');
const signer = new AuditSigner(generateKeyPairSync('ed25519').privateKey);
const keys = [signer.publicKeyPem];

async function count(table: string): Promise<number> {
  const r = await t.owner.query(`select count(*)::int as n from ${table}`);
  return r.rows[0].n;
}
const tenantDoc = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Tenant',
  metadata: { name },
  spec,
});

beforeAll(async () => {
  t = await createTestDatabase();
  registry = createRegistry(t.db, t.config);
  await registry.apply(ctx, circleK());
  await sequenceAudit(t.db);
});
afterAll(async () => t?.destroy());

describe('audit through the change path', () => {
  it('chains the change path records per tenant, and they verify', async () => {
    const v = await verifyAudit(t.db, { publicKeys: keys });
    expect(v.problems).toEqual([]);
    expect(v.records).toBe(38);
    // Customers and systems are the platform's; each of the four tenants has its own chain.
    expect(v.chains.map((c) => c.chain)).toContain('platform');
    expect(v.chains).toHaveLength(5);
    const { rows } = await t.owner.query(
      `select chain, count(*)::int as n, max(seq)::int as max from ${SEQUENCED} r group by chain`,
    );
    for (const r of rows) expect(r.max).toBe(r.n);
    const tenant = await registry.get(ctx, 'Tenant', 'circlek-eu-prod');
    const mine = await verifyAudit(t.db, { tenant: tenant.metadata.uuid, publicKeys: keys });
    expect(mine.chains).toHaveLength(1);
    expect(mine.ok).toBe(true);
  });

  it('writes nothing of a change whose audit record cannot be written', async () => {
    await t.owner.query(`
      create function fail_audit() returns trigger language plpgsql as $$
      begin
        if new.target_slug = 'circlek-eu-qa' then raise exception 'injected audit failure'; end if;
        return new;
      end $$;
      create trigger fail_audit before insert on audit_records for each row execute function fail_audit();`);
    const tables = [
      'tenants',
      'object_versions',
      'audit_records',
      'outbox_events',
      'reconcile_jobs',
      'audit_chain_heads',
    ];
    const before = await Promise.all(tables.map(count));
    const heads = (await t.owner.query('select chain, seq, hash from audit_chain_heads order by chain')).rows;
    const err = await registry
      .apply(ctx, [
        tenantDoc('circlek-eu-qa', { customer: 'circlek-europe', region: 'eu', environmentType: 'qa' }),
      ])
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(String((err as Error)?.message)).toContain('injected audit failure');
    expect(await Promise.all(tables.map(count))).toEqual(before);
    expect(
      (await t.owner.query('select chain, seq, hash from audit_chain_heads order by chain')).rows,
    ).toEqual(heads);
    await t.owner.query('drop trigger fail_audit on audit_records; drop function fail_audit()');
    // The same change goes through once the audit record can be written, at the next seq.
    const [ok] = await registry.apply(ctx, [
      tenantDoc('circlek-eu-qa', { customer: 'circlek-europe', region: 'eu', environmentType: 'qa' }),
    ]);
    expect(ok?.action).toBe('created');
    await sequenceAudit(t.db);
    const { rows } = await t.owner.query(`select seq::int from ${SEQUENCED} r where chain = $1`, [ok?.uuid]);
    expect(rows).toEqual([{ seq: 1 }]);
    expect((await verifyAudit(t.db, { publicKeys: keys })).ok).toBe(true);
  });

  it('does not serialise appends: a chain takes writers in parallel, and is sequenced in commit order', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    await appendMany(t.db, a, 1);
    await appendMany(t.db, b, 1);
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let written!: () => void;
    const isWritten = new Promise<void>((r) => {
      written = r;
    });
    let open!: string;
    const holder = asPlatform(t.db, async (trx) => {
      open = (await appendAudit(trx, entry(a))).id;
      written();
      await held;
    });
    await isWritten;
    // Another tenant and the same tenant both append while a's transaction is open.
    const race = (p: Promise<unknown>) =>
      Promise.race([p.then(() => 'done'), new Promise((r) => setTimeout(() => r('blocked'), 2000))]);
    expect(await race(appendMany(t.db, b, 1))).toBe('done');
    const [same] = await appendMany(t.db, a, 1);
    expect(same).toMatchObject({ chain: a, seq: 2 });
    // The open transaction's entry is not sequenced (nor visible) until it commits.
    await sequenceAudit(t.db);
    release();
    await holder;
    expect((await verifyAudit(t.db, { tenant: a, publicKeys: keys })).unsequenced.records).toBe(1);
    await sequenceAudit(t.db);
    const { rows } = await t.owner.query(`select seq::int from ${SEQUENCED} r where id = $1`, [open]);
    expect(rows).toEqual([{ seq: 3 }]);
    const v = await verifyAudit(t.db, { tenant: a, publicKeys: keys });
    expect(v.chains[0]).toMatchObject({ records: 3, lastSeq: 3, ok: true });
    expect(v.unsequenced).toEqual({ records: 0, oldest: null });
  });

  it('keeps chains gap-free under concurrency: 8 writers on 8 tenants and 8 writers on one tenant', async () => {
    const shared = randomUUID();
    const own = Array.from({ length: 8 }, () => randomUUID());
    const perWriter = 20;
    const writer = async (tenant: string) => {
      for (let i = 0; i < perWriter; i++) {
        // Some transactions roll back after appending: their seq must be reused, never skipped.
        const rollback = i % 7 === 3;
        await asPlatform(t.db, async (trx) => {
          await appendAudit(trx, entry(tenant));
          if (rollback) throw new Error('rollback');
        }).catch((e: Error) => {
          if (e.message !== 'rollback') throw e;
        });
      }
    };
    await Promise.all([...own.map((id) => writer(id)), ...own.map(() => writer(shared))]);
    await sequenceAudit(t.db);
    await createAuditCheckpoint(t.db, signer);
    const v = await verifyAudit(t.db, { publicKeys: keys });
    expect(v.problems).toEqual([]);
    const committed = perWriter - Math.floor((perWriter - 4) / 7 + 1);
    const report = new Map(v.chains.map((c) => [c.chain, c]));
    expect(report.get(shared)).toMatchObject({ records: 8 * committed, firstSeq: 1, lastSeq: 8 * committed });
    for (const id of own) expect(report.get(id)).toMatchObject({ records: committed, lastSeq: committed });
    // Concurrent applies through the registry (the change path) on different tenants, too.
    await Promise.all(
      ['dev', 'qa', 'staging'].map((env) =>
        registry.apply(ctx, [
          tenantDoc(`circlek-us-${env}`, {
            customer: 'circlek-north-america',
            region: 'us',
            environmentType: env,
          }),
        ]),
      ),
    );
    await sequenceAudit(t.db);
    expect((await verifyAudit(t.db, { publicKeys: keys })).ok).toBe(true);
  });

  it('records denied attempts outside any change, on the tenant chain', async () => {
    const tenant = randomUUID();
    const rec = await recordAuditAttempt(t.db, ctx, {
      tenantId: tenant,
      action: 'tenant.suspend',
      outcome: 'denied',
      target: { kind: 'Tenant', id: tenant },
      decision: { code: 'policy.forbidden', reason: 'role viewer may not suspend tenants' },
    });
    expect(rec).toMatchObject({ chain: tenant, outcome: 'denied' });
    await sequenceAudit(t.db);
    const page = await searchAudit(t.db, { kind: 'platform' }, { outcome: 'denied' });
    expect(page.items.map((r) => r.id)).toEqual([rec.id]);
    expect(page.items[0]).toMatchObject({ chain: tenant, seq: 1 });
    expect(page.items[0]?.decision).toEqual({
      code: 'policy.forbidden',
      reason: 'role viewer may not suspend tenants',
    });
    expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).ok).toBe(true);
  });

  it('appends a record alone in one statement: committed with its queue entry, or not at all, as the platform only', async () => {
    const tenant = randomUUID();
    const rec = await appendAuditAlone(t.db, {
      ...entry(tenant.toUpperCase()),
      id: randomUUID().toUpperCase(),
    });
    expect(rec).toMatchObject({ chain: tenant, tenantId: tenant, outcome: 'success' });
    // Committed when it resolves: seen from another connection, queued for the sequencer.
    const queued = await t.owner.query('select chain from audit_queue where record_id = $1', [rec.id]);
    expect(queued.rows).toEqual([{ chain: tenant }]);
    const platformRec = await appendAuditAlone(t.db, { ...entry(tenant), tenantId: null });
    expect(platformRec.chain).toBe('platform');
    await sequenceAudit(t.db);
    expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).chains[0]).toMatchObject({
      records: 1,
      ok: true,
    });
    // A record that cannot be written leaves nothing behind (no record, no queue entry).
    const bad = randomUUID();
    await expect(
      appendAuditAlone(t.db, { ...entry(tenant), id: bad, outcome: 'maybe' as 'success' }),
    ).rejects.toThrow(/audit_records_outcome_check/);
    const left = await t.owner.query(
      'select (select count(*) from audit_records where id = $1)::int + (select count(*) from audit_queue where record_id = $1)::int as n',
      [bad],
    );
    expect(left.rows[0].n).toBe(0);
    // The platform scope is the function's only: in a tenant transaction of the platform role, it ends
    // with the call.
    const other = randomUUID();
    await appendMany(t.db, other, 1);
    const seen = await platformDb(t.db)
      .transaction()
      .execute(async (trx) => {
        await setScope(trx, { kind: 'tenant', tenantId: tenant }, t.db);
        await sql`select tenantry_audit_append(${randomUUID()}, ${tenant}, null, 'w', 'service', null, 'tenant.update',
        'Tenant', null, null, null, null, 'success', null, 'r', 'c')`.execute(trx);
        const { rows } = await sql<{ tenant_id: string; n: number }>`
          select tenant_id, count(*)::int as n from audit_records
          where tenant_id in (${tenant}, ${other}) group by tenant_id`.execute(trx);
        return rows;
      });
    // Its own two records (the one appended in this transaction too), none of the other tenant's.
    expect(seen).toEqual([{ tenant_id: tenant, n: 2 }]);
    // The tenant role may not call it, whatever it sets.
    const app = new pg.Client({ connectionString: t.appUrl });
    await app.connect();
    try {
      await app.query('begin');
      await app.query(`select set_config('tenantry.platform', 'on', true)`);
      await expect(
        app.query(
          `select tenantry_audit_append(gen_random_uuid(), $1, null, 'w', 'service', null, 'x', 'Tenant',
          null, null, null, null, 'success', null, 'r', 'c')`,
          [other],
        ),
      ).rejects.toThrow(/permission denied/);
      await app.query('rollback');
    } finally {
      await app.end();
    }
  });

  it('searches by tenant, actor, action, target, time and correlation id, with cursor pagination', async () => {
    const tenant = randomUUID();
    const start = new Date(Date.now() - 1000).toISOString();
    const corr = randomUUID();
    await appendMany(t.db, tenant, 7, { actor: 'bob', action: 'deployment.update', correlationId: corr });
    await appendMany(t.db, tenant, 3, { actor: 'carol', action: 'tenant.suspend' });
    const platform = { kind: 'platform' } as const;

    const all: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await searchAudit(t.db, platform, { tenant, limit: 3, ...(cursor ? { cursor } : {}) });
      expect(page.items.length).toBeLessThanOrEqual(3);
      all.push(...page.items.map((r) => `${r.seq}`));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(all).toEqual(['10', '9', '8', '7', '6', '5', '4', '3', '2', '1']);

    expect((await searchAudit(t.db, platform, { tenant, actor: 'carol' })).items).toHaveLength(3);
    expect((await searchAudit(t.db, platform, { tenant, action: 'deployment.*' })).items).toHaveLength(7);
    expect(
      (await searchAudit(t.db, platform, { action: 'tenant.suspend', actor: 'carol' })).items,
    ).toHaveLength(3);
    expect((await searchAudit(t.db, platform, { correlationId: corr })).items).toHaveLength(7);
    expect((await searchAudit(t.db, platform, { tenant, targetSlug: 't-0' })).items).toHaveLength(2);
    expect((await searchAudit(t.db, platform, { tenant, from: start })).items).toHaveLength(10);
    expect((await searchAudit(t.db, platform, { tenant, to: start })).items).toHaveLength(0);
    const dep = await registry.get(ctx, 'Deployment', 'circlek-eu-prod-store-pl');
    const byTarget = await searchAudit(t.db, platform, { targetId: dep.metadata.uuid });
    expect(byTarget.items.map((r) => r.action)).toEqual(['deployment.create']);

    // A tenant sees its own records only, whatever it asks for.
    const asOther = await searchAudit(t.db, { kind: 'tenant', tenantId: randomUUID() }, { tenant });
    expect(asOther.items).toEqual([]);
    const asSelf = await searchAudit(t.db, { kind: 'tenant', tenantId: tenant }, {});
    expect(asSelf.items).toHaveLength(10);
    expect(asSelf.items.every((r) => r.tenantId === tenant)).toBe(true);
    // It appends to its own chain in its own scope (the change path in a tenant's scope does) ...
    const own = await asTenant(t.db, tenant, (trx) => appendAudit(trx, entry(tenant)));
    // Searchable at once, without a position until the sequencer integrates it.
    const pending = await searchAudit(t.db, platform, { tenant, limit: 1 });
    expect(pending.items[0]).toMatchObject({ id: own.id, seq: null, hash: null });
    await sequenceAudit(t.db);
    const [sequenced] = (await searchAudit(t.db, platform, { tenant, limit: 1 })).items;
    expect(sequenced).toMatchObject({ id: own.id, chain: tenant, seq: 11 });
    // ... and cannot write into another tenant's chain.
    await expect(asTenant(t.db, randomUUID(), (trx) => appendAudit(trx, entry(tenant)))).rejects.toThrow(
      /row-level security/,
    );

    for (const bad of [{ limit: 0 }, { tenant: 'nope' }, { from: 'yesterday' }, { cursor: 'garbage' }]) {
      const e = await searchAudit(t.db, platform, bad).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TenantryError);
      expect((e as TenantryError).status).toBe(400);
    }
  });

  it('stores upper-case UUIDs so that the record still verifies', async () => {
    const tenant = randomUUID();
    const rec = await asPlatform(t.db, (trx) =>
      appendAudit(trx, { ...entry(tenant.toUpperCase()), id: randomUUID().toUpperCase() }),
    );
    expect(rec.chain).toBe(tenant);
    await sequenceAudit(t.db);
    expect((await verifyAudit(t.db, { tenant, publicKeys: keys })).ok).toBe(true);
  });

  it('appends many records in one statement, on several chains, and they verify', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    const recs = await asPlatform(t.db, (trx) =>
      appendAudits(trx, [
        entry(a),
        entry(b),
        { ...entry(a.toUpperCase()), before: { n: 1 } },
        { ...entry(a), tenantId: null },
      ]),
    );
    expect(recs.map((r) => r.chain)).toEqual([a, b, a, 'platform']);
    // A tenant writes only its own chain, in a batch as alone.
    await expect(asTenant(t.db, a, (trx) => appendAudits(trx, [entry(a), entry(b)]))).rejects.toThrow(
      /row-level security/,
    );
    await sequenceAudit(t.db);
    const v = await verifyAudit(t.db, { tenant: a, publicKeys: keys });
    expect(v.problems).toEqual([]);
    expect(v.chains[0]).toMatchObject({ records: 2, lastSeq: 2 });
    expect((await verifyAudit(t.db, { tenant: b, publicKeys: keys })).chains[0]).toMatchObject({
      records: 1,
    });
  });

  it('takes a checkpoint only when a chain has moved', async () => {
    const checkpointer = new AuditCheckpointer(t.db, signer, 60_000);
    const before = (await createAuditCheckpoint(t.db, signer)).heads.platform?.seq ?? 0;
    await appendMany(t.db, null, 1);
    const first = await checkpointer.tick();
    expect(first?.heads.platform).toMatchObject({ seq: before + 1 });
    expect(await checkpointer.tick()).toBeUndefined();
    await appendMany(t.db, null, 1);
    expect((await checkpointer.tick())?.heads.platform).toMatchObject({ seq: before + 2 });
    checkpointer.start();
    await checkpointer.stop();
  });

  it('refuses a record whose chain does not match its tenant', async () => {
    await expect(
      asPlatform(t.db, (trx) =>
        sql`insert into audit_records (id, actor_principal, actor_kind, action, target_kind, outcome, request_id,
          correlation_id, chain) values (${randomUUID()}, 'x', 'user', 'x', 'x', 'success', 'r', 'c',
          ${randomUUID()})`.execute(trx),
      ),
    ).rejects.toThrow(/audit_records_chain_tenant/);
  });
});

function entry(tenantId: string) {
  const id = randomUUID();
  return {
    tenantId,
    appId: 'test',
    actor: { principal: 'writer', kind: 'service' },
    sessionId: null,
    action: 'tenant.update',
    target: { kind: 'Tenant', id: tenantId, slug: null },
    after: { at: Date.now() },
    outcome: 'success' as const,
    requestId: id,
    correlationId: id,
  };
}
