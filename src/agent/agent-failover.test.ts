import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusingProviders } from '../../test/helpers/agent-processes.js';
import { type AgentRegions, startAgentRegions } from '../../test/helpers/agent-regions.js';
import { until } from '../../test/helpers/controller.js';
import { finished, stepsOf } from '../../test/helpers/workflows.js';
import { azuriteUnavailableReason } from '../../test/infra/azurite.js';
import { skipReason } from '../../test/infra/engines.js';
import type { Consistency } from '../tenant-migrations/failover.js';
import { FAILOVER_STEPS } from '../tenant-migrations/failover.service.js';
import { workflowKey } from '../tenant-migrations/migration-records.js';
import type { StandbyPlan } from '../tenant-migrations/standby.js';
import { StandbyKeeper } from '../tenant-migrations/standby-keeper.js';
import { markLostAgents } from './lease-monitor.js';

/**
 * A region standby and its failover eu → us between two cells held by `tenantry agent` processes,
 * each region's data plane its own (an embedded PostgreSQL server and an Azurite account per agent;
 * the control plane's providers refuse any call): the eu agent hands the us agent a reader (sealed
 * for it), the us PostgreSQL subscribes, the keeper measures the lag through the eu agent and has
 * the blobs copied by the us agent; with the eu PostgreSQL really stopped, the failover promotes
 * the standby and rotates its credentials through the us agent (before that, a killed eu agent makes
 * the primary unreachable as soon as its lease runs out). eu comes back: the keeper fences it
 * through the eu agent. Failback is a region migration back, through both agents.
 */
const unavailable = skipReason(
  'a standby and a failover through two agents on Azurite',
  azuriteUnavailableReason(),
);

const customer = `af${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;

describe.skipIf(unavailable)('a region standby and failover through agents', () => {
  let ag: AgentRegions;

  beforeAll(async () => {
    ag = await startAgentRegions(customer, { standby: { region: 'us' } });
  }, 300_000);

  afterAll(() => ag?.stop());

  /**
   * What a standby hands from one agent to the other: its reader's connection string with its
   * password (`tenantry_s_…`; a failback's `tenantry_r_…`), a SAS URL's signature, or either still
   * sealed (ciphertext not yet cleared).
   */
  const CREDENTIAL = /tenantry_[rs]_[0-9a-f]+_\d+(_b)?:[^@"\s]+@|[?&]sig=|sealed:ey/;
  const cellId = async (slug: string) =>
    (await ag.s.t.owner.query<{ id: string }>('select id from cells where slug = $1', [slug])).rows[0]!.id;
  const euAgent = async () =>
    (
      await ag.s.t.owner.query<{ connection: string }>(
        'select a.connection from cell_agents a join cells c on c.id = a.cell_id where c.slug = $1',
        [ag.cells.eu],
      )
    ).rows[0]!.connection;
  /** The ops of the commands of workflow or standby `prefix` that the agent of `cell` ran. */
  const opsOf = async (prefix: string, cell: string) =>
    new Set(
      (
        await ag.s.t.owner.query<{ op: string; state: string }>(
          `select k.op, k.state from cell_agent_commands k join cells c on c.id = k.cell_id
           where k.key like $1 and c.slug = $2 and k.state = 'Succeeded'`,
          [`${prefix}:%`, cell],
        )
      ).rows.map((r) => r.op),
    );

  it('keeps a standby in us through the agents, promotes it with the eu PostgreSQL stopped, fences eu when it is back, and fails back', {
    timeout: 300_000,
  }, async () => {
    const keeper = new StandbyKeeper({ db: ag.s.t.db, providers: refusingProviders(ag.controlPlaneCalls) });
    const { schema, bucket } = await ag.readyInEu();
    const resourceId = (
      await ag.s.t.owner.query<{ id: string }>(
        `select id from integration_resources where physical_name = $1 and deleted_at is null`,
        [schema],
      )
    ).rows[0]!.id;
    await ag.onServer('eu', (c) =>
      c.query(`create table ${schema}.orders (id bigserial primary key, n integer not null, note text);
               insert into ${schema}.orders (n, note) select g, md5(g::text) from generate_series(1, 2000) g;`),
    );
    const payloads: Record<string, Buffer> = {};
    for (let i = 0; i < 3; i++) {
      payloads[`docs/${i}.bin`] = randomBytes(4_000 + i * 1_000);
      await ag
        .container('eu', bucket)
        .getBlockBlobClient(`docs/${i}.bin`)
        .uploadData(payloads[`docs/${i}.bin`]!);
    }

    // The keeper starts the standby the spec names; each side runs on the agent holding its cell.
    expect((await keeper.tick()).started).toEqual([tenant]);
    const standby = (
      await ag.s.t.owner.query<{ workflow_id: string; tenant_id: string }>(
        'select s.workflow_id, s.tenant_id from tenant_standbys s join tenants t on t.id = s.tenant_id where t.slug = $1',
        [tenant],
      )
    ).rows[0]!;
    const sid = standby.workflow_id;
    expect(await finished(ag.s.t, sid, 180_000).catch(ag.explain(sid))).toMatchObject({ state: 'Succeeded' });
    const plan = (
      await ag.s.t.owner.query<{ plan: StandbyPlan }>(
        'select plan from tenant_standbys where workflow_id = $1',
        [sid],
      )
    ).rows[0]!.plan;
    expect({ source: plan.sourceAgent, target: plan.targetAgent }).toEqual({
      source: await cellId(ag.cells.eu),
      target: await cellId(ag.cells.us),
    });
    const keys = plan.databases[0]!;
    for (const op of ['inspect', 'schemaDdl', 'openReader', 'walPosition', 'blobReader'])
      expect(await opsOf(sid, ag.cells.eu)).toContain(`region.${op}`);
    for (const op of ['inspect', 'createResources', 'createSchema', 'subscribe', 'syncing', 'pullBlobs'])
      expect(await opsOf(sid, ag.cells.us)).toContain(`region.${op}`);

    // Rows written in eu meanwhile reach us by the subscription; the keeper sees it caught up.
    await ag.onServer('eu', (c) =>
      c.query(`insert into ${schema}.orders (n, note) select g, 'later' from generate_series(1, 500) g`),
    );
    const late = randomBytes(3_000);
    await ag.container('eu', bucket).getBlockBlobClient('docs/late.bin').uploadData(late);
    await until(
      'the standby caught up (lag 0) with the later rows',
      async () => {
        const m = (await keeper.tick()).measured[standby.tenant_id];
        if (!m?.caughtUp || m.lagBytes !== 0) return false;
        const v = await ag.s.request('GET', `/v1/tenants/${tenant}/standby`);
        return v.body.lastKnown?.databases?.[resourceId]?.rows?.orders === 2500;
      },
      90_000,
    );
    const view = await ag.s.request('GET', `/v1/tenants/${tenant}/standby`);
    expect(view.status).toBe(200);
    expect(view.body).toMatchObject({ region: 'us', state: 'Streaming', lagBytes: 0, error: null });
    expect(Object.values(view.body.blobs)).toEqual([expect.objectContaining({ blobs: 4, equal: true })]);
    expect(await opsOf(sid, ag.cells.eu)).toContain('region.measure');
    // The keeper's earlier measurement commands (a few every tick) go after 10 minutes.
    const aged = await ag.s.t.owner.query(
      `update cell_agent_commands set completed_at = now() - interval '11 minutes'
       where starts_with(key, $1) and state = 'Succeeded'`,
      [`${sid}:measure:`],
    );
    expect(aged.rowCount).toBeGreaterThan(0);
    await keeper.tick();
    const left = await ag.s.t.owner.query(
      `select count(*)::int as n from cell_agent_commands
       where starts_with(key, $1) and completed_at < now() - interval '10 minutes'`,
      [`${sid}:measure:`],
    );
    expect(left.rows[0].n).toBe(0);
    const onUs = await ag.onServer('us', async (c) => ({
      rows: (await c.query(`select count(*)::int as n from ${schema}.orders`)).rows[0].n,
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        .rolcanlogin,
      subscriptions: (await c.query('select count(*)::int as n from pg_subscription')).rows[0].n,
    }));
    expect(onUs).toEqual({ rows: 2500, login: false, subscriptions: 1 });
    expect(
      (await ag.container('us', bucket).getBlobClient('docs/late.bin').downloadToBuffer()).equals(late),
    ).toBe(true);

    // The eu agent is killed: once its lease has run out (Unknown) the keeper counts the primary
    // unreachable without asking it (no command waits for it); restarted, it measures again.
    const beforeKill = (await ag.s.request('GET', `/v1/tenants/${tenant}/standby`)).body.lastSyncAt;
    await ag.killAgent('eu');
    await until(
      'the eu agent Unknown',
      async () => (await markLostAgents(ag.s.t.db)).length > 0 || (await euAgent()) === 'Unknown',
      30_000,
    );
    const t0 = Date.now();
    await keeper.tick();
    expect(Date.now() - t0).toBeLessThan(10_000);
    const lost = await ag.s.request('GET', `/v1/tenants/${tenant}/standby`);
    expect(lost.body).toMatchObject({ lagBytes: null, lastSyncAt: beforeKill });
    expect(lost.body.error).toMatch(/^primary eu unreachable: the agent of its cell is Unknown since /);
    await ag.startAgent('eu');
    await until(
      'measured through the restarted eu agent',
      async () =>
        (await euAgent()) === 'Connected' && (await keeper.tick()).measured[standby.tenant_id]?.caughtUp,
      60_000,
    );

    // The eu data plane's PostgreSQL goes down (its agent stays up): the lag is unknown now.
    const synced = (await ag.s.request('GET', `/v1/tenants/${tenant}/standby`)).body.lastSyncAt;
    await ag.servers.eu.stop();
    await keeper.tick();
    const down = await ag.s.request('GET', `/v1/tenants/${tenant}/standby`);
    expect(down.body).toMatchObject({ lagBytes: null, lastSyncAt: synced });
    expect(down.body.error).toMatch(/^primary eu unreachable/);

    const started = await ag.s.request('POST', `/v1/tenants/${tenant}/failover`, { body: { region: 'us' } });
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    const fid = started.body.id as string;
    expect(await finished(ag.s.t, fid, 180_000).catch(ag.explain(fid))).toMatchObject({ state: 'Succeeded' });
    expect((await stepsOf(ag.s.t, fid)).map((x) => `${x.name}:${x.state}`)).toEqual(
      FAILOVER_STEPS.map((x) => `${x}:Completed`),
    );
    const f = await ag.s.request('GET', `/v1/tenants/${tenant}/failovers/${fid}`);
    expect(f.body).toMatchObject({ state: 'FailedOver', fencedAt: null, to: { cell: ag.cells.us } });
    expect(Object.values(f.body.fence)[0]).toMatch(/^unreachable/);
    const cons = f.body.consistency as Consistency;
    expect(cons.consistent).toBe(true);
    expect(cons.databases[resourceId]).toMatchObject({
      credentialsWork: true,
      tables: [{ table: 'orders', lastKnownRows: 2500, rows: 2500, delta: 0 }],
    });
    // Only eu's PostgreSQL is down: its agent and storage account answer, the last blobs are synced.
    expect(Object.values(cons.blobs)).toEqual([{ blobs: 4, equal: true }]);
    // The promotion, the rotation and the checks were the us agent's commands.
    for (const op of ['promote', 'createResources', 'observeArrived', 'renameSecrets', 'measure'])
      expect(await opsOf(fid, ag.cells.us)).toContain(`region.${op}`);

    // The tenant serves from us: its role logs in, the sequence continues past the rows; the us
    // agent keeps the rotated credentials as the resource's (the standby's first ones gone).
    const t = await ag.s.t.owner.query(
      'select t.region, c.slug as cell from tenants t join cells c on c.id = t.cell_id where t.slug = $1',
      [tenant],
    );
    expect(t.rows[0]).toEqual({ region: 'us', cell: ag.cells.us });
    const promoted = await ag.onServer('us', async (c) => ({
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        .rolcanlogin,
      next: Number((await c.query(`select nextval('${schema}.orders_id_seq')::text as v`)).rows[0].v),
      subscriptions: (await c.query('select count(*)::int as n from pg_subscription')).rows[0].n,
      secrets: (
        await c.query<{ id: string }>(
          'select resource_id as id from tenantry_resource_secrets where resource_id = any($1::uuid[])',
          [[resourceId, keys.targetKey, workflowKey(fid, resourceId, 'rotated')]],
        )
      ).rows.map((r) => r.id),
    }));
    expect(promoted).toMatchObject({ login: true, subscriptions: 0, secrets: [resourceId] });
    expect(promoted.next).toBeGreaterThan(2500);
    await until(
      'the resources Ready in us (by its agent)',
      async () => (await ag.resources()).every((r) => r.phase === 'Ready' && r.current),
      60_000,
    );

    // eu comes back: the keeper fences it through its agent (role NOLOGIN, the reader's slot and
    // role gone) and has it keep the old primary's credentials under the source key.
    await ag.servers.eu.start();
    await until('eu fenced', async () => (await keeper.tick()).fenced.includes(fid), 90_000);
    const fenced = await ag.onServer('eu', async (c) => ({
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        .rolcanlogin,
      slots: (await c.query('select count(*)::int as n from pg_replication_slots')).rows[0].n,
      readers: (
        await c.query(
          `select count(*)::int as n from pg_roles where rolname ~ '^tenantry_s_[0-9a-f]{12}_[0-9]+$'`,
        )
      ).rows[0].n,
      secrets: (
        await c.query<{ id: string }>(
          'select resource_id as id from tenantry_resource_secrets where resource_id = any($1::uuid[])',
          [[resourceId, keys.sourceKey]],
        )
      ).rows.map((r) => r.id),
    }));
    expect(fenced).toEqual({ login: false, slots: 0, readers: 0, secrets: [keys.sourceKey] });
    expect(
      (await ag.s.request('GET', `/v1/tenants/${tenant}/failovers/${fid}`)).body.fencedAt,
    ).not.toBeNull();

    // Failback: a region migration back to eu through both agents, with the row written in us.
    await ag.onServer('us', (c) => c.query(`insert into ${schema}.orders (n, note) values (-1, 'in us')`));
    const back = await ag.s.request('POST', `/v1/tenants/${tenant}/migrations`, { body: { region: 'eu' } });
    expect(back.status, JSON.stringify(back.body)).toBeLessThan(300);
    expect(await finished(ag.s.t, back.body.id, 180_000).catch(ag.explain(back.body.id))).toMatchObject({
      state: 'Succeeded',
    });
    const home = await ag.onServer('eu', async (c) => ({
      rows: (await c.query(`select count(*)::int as n from ${schema}.orders`)).rows[0].n,
      login: (await c.query('select rolcanlogin from pg_roles where rolname = $1', [schema])).rows[0]
        .rolcanlogin,
    }));
    expect(home).toEqual({ rows: 2501, login: true });

    // The pattern finds what it looks for (a standby reader's URL as it is made).
    expect(
      `postgres://tenantry_s_0123456789ab_0:${randomBytes(24).toString('base64url')}@127.0.0.1/x`,
    ).toMatch(CREDENTIAL);
    // Nothing handed over is readable anywhere in the control plane, its answers or the agents' logs.
    await ag.noCredentialLeft(CREDENTIAL, [
      `/v1/tenants/${tenant}/standby`,
      `/v1/tenants/${tenant}/failovers/${fid}`,
      `/v1/tenants/${tenant}/failovers`,
      `/v1/tenants/${tenant}/migrations/${back.body.id}`,
    ]);
    expect(ag.controlPlaneCalls).toEqual([]);
  });
});
