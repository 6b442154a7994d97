import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  deploymentManifests,
  startController,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { finished, startWorkflowEngine, stepsOf } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { secretCipherFor } from '../secrets/index.js';
import { lifecycleWorkflowId } from './start-lifecycle-workflow.js';

// Roles and databases belong to the whole server: names unique to this run.
const customer = `lc${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const resource = (spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'IntegrationResource',
  metadata: {},
  spec,
});

const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    ...deploymentManifests(customer, 'plan'),
    resource({ scope: { tenant }, type: 'database', database: { isolation: 'pool' } }),
    resource({ scope: { deployment }, type: 'database', database: { isolation: 'silo' } }),
    resource({ scope: { deployment }, type: 'blob-container' }),
  ]),
);

async function resourceIds(): Promise<Record<string, string>> {
  const r = await fx.t.owner.query<{ slug: string; id: string }>(
    'select slug, id from integration_resources',
  );
  return Object.fromEntries(r.rows.map((x) => [x.slug, x.id]));
}

/** Logs in as a database resource's own role, with its password from the secret store. */
async function connectAs(resourceId: string, database?: string): Promise<pg.Client> {
  const s = await new SecretStore(fx.t.db, secretCipherFor(fx.t.db, fx.t.config)).get(resourceId);
  if (!s) throw new Error('no secret');
  const url = new URL(defaultDataplaneUrl(fx.t.ownerUrl));
  url.username = s.username ?? '';
  url.password = s.password ?? '';
  if (database) url.pathname = `/${database}`;
  const c = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 5_000 });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

const refused = (p: Promise<unknown>) =>
  p.then(
    () => 'connected',
    (e: Error) => e.message,
  );

async function transition(action: 'suspend' | 'resume' | 'activate') {
  const obj = await fx.registry.transition(fx.ctx, tenant, action);
  return lifecycleWorkflowId(obj.metadata.uuid, obj.metadata.generation);
}

describe('suspend and resume on the real PostgreSQL provider', () => {
  it('suspension takes LOGIN from the pool and silo roles and ends their sessions; resume gives it back', async () => {
    const c = await startController(fx.t);
    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    try {
      await until('resources Ready', async () => {
        const r = await fx.t.owner.query(
          `select count(*)::int as n from integration_resources where phase = 'Ready'`,
        );
        return r.rows[0].n === 3;
      });
      const ids = await resourceIds();
      const pool = ids[`${tenant}.database`]!;
      const silo = ids[`${deployment}.database`]!;
      const siloDb = `tenantry_${deployment.replace(/-/g, '_')}`;
      const open = await connectAs(silo, siloDb);
      expect((await open.query('select 1 as one')).rows[0].one).toBe(1);
      (await connectAs(pool)).end();

      const suspendId = await transition('suspend');
      const s = await finished(fx.t, suspendId);
      expect(s).toMatchObject({ state: 'Succeeded', error: null });
      expect((await stepsOf(fx.t, suspendId)).map((x) => `${x.name}:${x.state}`)).toEqual([
        'record-access:Completed',
        'pause-webhooks:Completed',
        'revoke-database-logins:Completed',
        'deny-kafka-principals:Completed',
        'revoke-blob-access:Completed',
      ]);
      expect(await refused(connectAs(pool))).toMatch(/not permitted to log in/);
      expect(await refused(connectAs(silo, siloDb))).toMatch(/not permitted to log in/);
      // The session opened before the suspension was ended.
      expect(await refused(open.query('select 1'))).not.toBe('connected');

      // Drift: LOGIN given back behind Tenantry's back is taken away again by the reconcile.
      const dp = new pg.Client({ connectionString: defaultDataplaneUrl(fx.t.ownerUrl) });
      await dp.connect();
      const role = (
        await dp.query<{ rolname: string }>(`select rolname from pg_roles where rolname = $1`, [
          `t_${tenant.replace(/-/g, '_')}`,
        ])
      ).rows[0]!.rolname;
      await dp.query(`alter role ${pg.escapeIdentifier(role)} login`);
      // Nudged as the product enqueues (src/controller/queue/enqueue-job.ts): the ticket moves too,
      // so a reconcile still running from the suspension (it enqueued every resource) leaves the
      // job due when it completes, instead of pushing it to the next resync a minute away.
      await fx.t.owner.query(
        `update reconcile_jobs set run_after = now(), ticket = ticket + 1 where object_kind = 'IntegrationResource' and object_id = $1`,
        [pool],
      );
      await until('LOGIN taken back', async () => {
        const r = await dp.query('select rolcanlogin from pg_roles where rolname = $1', [role]);
        return r.rows[0].rolcanlogin === false;
      });
      await dp.end();

      const resumeId = await transition('resume');
      expect(await finished(fx.t, resumeId)).toMatchObject({ state: 'Succeeded' });
      const again = await connectAs(silo, siloDb);
      expect((await again.query('select 1 as one')).rows[0].one).toBe(1);
      await again.end();
      (await connectAs(pool)).end();
      const held = await fx.t.owner.query('select count(*)::int as n from tenant_suspensions');
      expect(held.rows[0].n).toBe(0);
    } finally {
      await e.stop();
      await c.stop();
    }
  });

  it('a second lifecycle request while one runs gets 409 workflow.in_progress naming it', async () => {
    // No engine runs: the suspend workflow stays Pending.
    const id = await transition('suspend');
    const err = await fx.registry.transition(fx.ctx, tenant, 'resume').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'workflow.in_progress', status: 409, details: { workflowId: id } });
    const t = await fx.t.owner.query('select lifecycle from tenants where slug = $1', [tenant]);
    expect(t.rows[0].lifecycle).toBe('Suspended');
    const e = startWorkflowEngine(fx.t);
    try {
      expect(await finished(fx.t, id)).toMatchObject({ state: 'Succeeded' });
    } finally {
      await e.stop();
    }
  });
});
