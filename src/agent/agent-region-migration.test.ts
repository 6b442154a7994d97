import { randomBytes } from 'node:crypto';
import { ContainerSASPermissions } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AgentRegions, startAgentRegions } from '../../test/helpers/agent-regions.js';
import { until } from '../../test/helpers/controller.js';
import { finished, stepsOf } from '../../test/helpers/workflows.js';
import { azuriteUnavailableReason } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import { REGION_STEPS } from '../tenant-migrations/migrations.service.js';

/**
 * A region migration eu → us between two cells held by `tenantry agent` processes, each region's
 * data plane its own (an embedded PostgreSQL server and an Azurite account per agent): every
 * data-plane step runs as a command of the agent holding the cell it acts on (the eu agent for the
 * source side, the us agent for the target side); the us PostgreSQL subscribes to the eu one with
 * the reader the eu agent handed out, and the us agent copies the blobs with the eu agent's SAS
 * URL. The control plane's providers record and refuse any call and its workflow engine's
 * data-plane URL leads nowhere (port 1). Checked on the us engines; then retired on eu.
 */
const unavailable = skipReason('region migration through two agents on Azurite', azuriteUnavailableReason());

const customer = `ar${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const euCell = `${customer}-eu`;
const usCell = `${customer}-us`;

describe.skipIf(unavailable)('a region migration through agents', () => {
  let ag: AgentRegions;

  beforeAll(async () => {
    ag = await startAgentRegions(customer);
  }, 300_000);

  afterAll(() => ag?.stop());

  /**
   * The credentials a region migration hands from one agent to the other: a reader's connection
   * string with its password, a SAS URL's signature, or either still sealed (ciphertext not yet
   * cleared). None may be found in the control plane's rows, its API's answers or the agents' logs.
   */
  const CREDENTIAL = /tenantry_r_[0-9a-f]+_\d+(_b)?:[^@"\s]+@|[?&]sig=|sealed:ey/;
  /** No credential in the rows, the migration's API answers (the source of truth and its list) or the agents' logs. */
  const noCredentialLeft = (migrationId: string) =>
    ag.noCredentialLeft(CREDENTIAL, [
      `/v1/tenants/${tenant}/migrations/${migrationId}`,
      `/v1/tenants/${tenant}/migrations`,
    ]);

  it('moves the database rows and blobs from the eu agent to the us agent, checked on the us engines; rolls back to eu with what was written in us; moves again and retires eu', {
    timeout: 300_000,
  }, async () => {
    const { schema, bucket } = await ag.readyInEu();
    await ag.onServer('eu', (c) =>
      c.query(`create table ${schema}.orders (id bigserial primary key, n integer not null, note text);
               insert into ${schema}.orders (n, note) select g, md5(g::text) from generate_series(1, 2000) g;`),
    );
    const payloads: Record<string, Buffer> = {};
    for (let i = 0; i < 3; i++) {
      payloads[`docs/${i}.bin`] = randomBytes(5_000 + i * 1_000);
      await ag
        .container('eu', bucket)
        .getBlockBlobClient(`docs/${i}.bin`)
        .uploadData(payloads[`docs/${i}.bin`]!);
    }

    const started = await ag.s.request('POST', `/v1/tenants/${tenant}/migrations`, {
      body: { region: 'us' },
    });
    expect(started.status, JSON.stringify(started.body)).toBeLessThan(300);
    const id = started.body.id as string;
    expect(await finished(ag.s.t, id, 180_000).catch(ag.explain(id))).toMatchObject({ state: 'Succeeded' });
    expect((await stepsOf(ag.s.t, id)).map((x) => `${x.name}:${x.state}`)).toEqual(
      REGION_STEPS.map((x) => `${x}:Completed`),
    );
    const m = await ag.s.t.owner.query(
      'select state, mode, plan, verification from tenant_migrations where id = $1',
      [id],
    );
    expect(m.rows[0]).toMatchObject({ state: 'CutOver', mode: 'logical-replication' });
    expect(m.rows[0].plan.sourceAgent).toEqual(expect.any(String));
    expect(m.rows[0].plan.targetAgent).toEqual(expect.any(String));
    expect(Object.values(m.rows[0].verification.databases)).toEqual([
      expect.objectContaining({ equal: true }),
    ]);
    expect(Object.values(m.rows[0].verification.blobs)).toEqual([
      expect.objectContaining({ equal: true, blobs: 3 }),
    ]);

    // On the us engines: the rows and sequence, the blobs byte for byte; nothing left replicating.
    const moved = await ag.onServer('us', async (c) => ({
      rows: (await c.query(`select count(*)::int as n, sum(n)::int as s from ${schema}.orders`)).rows[0],
      next: (await c.query(`select nextval('${schema}.orders_id_seq')::int as v`)).rows[0].v,
      subscriptions: (await c.query('select count(*)::int as n from pg_subscription')).rows[0].n,
    }));
    expect(moved).toEqual({ rows: { n: 2000, s: 2_001_000 }, next: 2001, subscriptions: 0 });
    for (const [name, body] of Object.entries(payloads))
      expect((await ag.container('us', bucket).getBlobClient(name).downloadToBuffer()).equals(body)).toBe(
        true,
      );
    // The eu reader (its role, publication and slot) is gone; the eu source is kept, NOLOGIN.
    const eu = await ag.onServer('eu', async (c) => ({
      readers: (await c.query(`select count(*)::int as n from pg_roles where rolname like 'tenantry_r_%'`))
        .rows[0].n,
      slots: (await c.query('select count(*)::int as n from pg_replication_slots')).rows[0].n,
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        ?.rolcanlogin,
    }));
    expect(eu).toEqual({ readers: 0, slots: 0, login: false });

    // Each side's steps were commands of the agent holding that side's cell.
    const commands = await ag.s.t.owner.query<{ op: string; state: string; cell: string }>(
      `select k.op, k.state, c.slug as cell from cell_agent_commands k join cells c on c.id = k.cell_id
       where k.key like $1 order by k.created_at`,
      [`${id}:%`],
    );
    const by = (cell: string) => new Set(commands.rows.filter((r) => r.cell === cell).map((r) => r.op));
    for (const op of ['inspect', 'schemaDdl', 'openReader', 'walPosition', 'trackBaseline', 'blobReader'])
      expect(by(euCell)).toContain(`region.${op}`);
    for (const op of ['createResources', 'createSchema', 'subscribe', 'verifyAgainst', 'pullBlobs'])
      expect(by(usCell)).toContain(`region.${op}`);
    expect(commands.rows.every((r) => r.state === 'Succeeded')).toBe(true);

    // The reader and the SAS URL went sealed for the us agent, and are cleared from the rows since.
    const handedOver = await ag.s.t.owner.query<{ op: string; input: unknown; result: unknown }>(
      `select op, input, result from cell_agent_commands
       where key like $1 and op in ('region.openReader', 'region.subscribe', 'region.blobReader', 'region.pullBlobs')`,
      [`${id}:%`],
    );
    for (const c of handedOver.rows) {
      const sealed = c.op === 'region.openReader' || c.op === 'region.blobReader' ? c.result : c.input;
      expect(JSON.stringify(sealed), c.op).toContain('"sealed:cleared"');
    }
    // The pattern finds what it looks for (a reader's URL and a SAS URL as they are made).
    expect(
      `postgres://tenantry_r_0123456789ab_0:${randomBytes(24).toString('base64url')}@127.0.0.1/x`,
    ).toMatch(CREDENTIAL);
    expect(
      await ag.container('eu', bucket).generateSasUrl({
        permissions: ContainerSASPermissions.parse('rl'),
        expiresOn: new Date(Date.now() + 60_000),
      }),
    ).toMatch(CREDENTIAL);
    await noCredentialLeft(id);

    // The tenant is in the us cell; the us agent keeps its resources Ready there.
    const t = await ag.s.t.owner.query(
      'select t.region, c.slug as cell from tenants t join cells c on c.id = t.cell_id where t.slug = $1',
      [tenant],
    );
    expect(t.rows[0]).toEqual({ region: 'us', cell: usCell });
    await until(
      'the resources Ready in us (by its agent)',
      async () => (await ag.resources()).every((r) => r.phase === 'Ready' && r.current),
      60_000,
    );
    const login = await ag.onServer('us', (c) =>
      c.query('select rolcanlogin from pg_roles where rolname = $1', [schema]),
    );
    expect(login.rows[0].rolcanlogin).toBe(true);

    // A row and a blob written in us, then the rollback: the us agent hands the eu agent a reader
    // and the eu agent pulls; both are in eu afterwards, the us copies are gone.
    await ag.onServer('us', (c) => c.query(`insert into ${schema}.orders (n, note) values (2001, 'in us')`));
    const late = randomBytes(3_000);
    await ag.container('us', bucket).getBlockBlobClient('docs/late.bin').uploadData(late);
    const rb = await ag.s.request('POST', `/v1/tenants/${tenant}/migrations/${id}/rollback`, { body: {} });
    expect(rb.status, JSON.stringify(rb.body)).toBeLessThan(300);
    expect(
      await finished(ag.s.t, rb.body.rollbackWorkflowId, 120_000).catch(
        ag.explain(rb.body.rollbackWorkflowId),
      ),
    ).toMatchObject({ state: 'Succeeded' });
    const back = await ag.onServer('eu', async (c) => ({
      rows: (await c.query(`select count(*)::int as n from ${schema}.orders`)).rows[0].n,
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        .rolcanlogin,
    }));
    expect(back).toEqual({ rows: 2001, login: true });
    // The rolled-back migration: the us agent's reader and SAS went sealed for the eu agent, cleared since.
    await noCredentialLeft(id);
    expect(
      (await ag.container('eu', bucket).getBlobClient('docs/late.bin').downloadToBuffer()).equals(late),
    ).toBe(true);
    expect(
      (await ag.onServer('us', (c) => c.query('select 1 from pg_namespace where nspname = $1', [schema])))
        .rowCount,
    ).toBe(0);
    expect(await ag.container('us', bucket).exists()).toBe(false);
    await until(
      'the resources Ready in eu again (by its agent)',
      async () => (await ag.resources()).every((r) => r.phase === 'Ready' && r.current),
      60_000,
    );

    // Again to us, then retired: the eu agent drops the kept schema, its role and the container.
    const again = await ag.s.request('POST', `/v1/tenants/${tenant}/migrations`, { body: { region: 'us' } });
    expect(again.status, JSON.stringify(again.body)).toBeLessThan(300);
    expect(await finished(ag.s.t, again.body.id, 180_000).catch(ag.explain(again.body.id))).toMatchObject({
      state: 'Succeeded',
    });
    const retiring = await ag.s.request('POST', `/v1/tenants/${tenant}/migrations/${again.body.id}/retire`, {
      body: {},
    });
    expect(retiring.status, JSON.stringify(retiring.body)).toBeLessThan(300);
    expect(await finished(ag.s.t, retiring.body.retireWorkflowId, 60_000)).toMatchObject({
      state: 'Succeeded',
    });
    const left = await ag.onServer('eu', (c) =>
      c.query(
        `select (select count(*) from pg_namespace where nspname = $1)::int as schemas,
                (select count(*) from pg_roles where rolname = $1)::int as roles`,
        [schema],
      ),
    );
    expect(left.rows[0]).toEqual({ schemas: 0, roles: 0 });
    expect(await ag.container('eu', bucket).exists()).toBe(false);
    expect(await ag.container('us', bucket).exists()).toBe(true);
    const kept = await ag.onServer('us', (c) => c.query(`select count(*)::int as n from ${schema}.orders`));
    expect(kept.rows[0].n).toBe(2001);
    expect(ag.controlPlaneCalls).toEqual([]);
    await noCredentialLeft(again.body.id);
  });
});
