import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  deploymentManifests,
  startController,
  tempDataDir,
  until,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import { killingEngine, runsAfterKill, stepLog } from '../../test/helpers/killed-engines.js';
import { exited, finishedOnEngine, logged, stepRuns, stepsOf } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { SecretStore } from '../providers/postgres/secret-store.js';
import { secretCipherFor } from '../secrets/index.js';
import { lifecycleWorkflowTypes } from './lifecycle-workflows.js';
import { lifecycleWorkflowId } from './start-lifecycle-workflow.js';

const customer = `kc${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;

const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    ...deploymentManifests(customer, 'plan'),
    {
      apiVersion: 'tenantry.dev/v1',
      kind: 'IntegrationResource',
      metadata: {},
      spec: { scope: { tenant }, type: 'database', database: { isolation: 'pool' } },
    },
  ]),
);

const SUSPEND = [
  'record-access',
  'pause-webhooks',
  'revoke-database-logins',
  'deny-kafka-principals',
  'revoke-blob-access',
];
const ACTIVATE = [
  'check-policy-gates',
  'provision-resources',
  'wait-resources-ready',
  'issue-service-credentials',
  'enable-webhooks',
];

async function canLogIn(): Promise<boolean> {
  const id = (
    await fx.t.owner.query(`select id from integration_resources where slug = $1`, [`${tenant}.database`])
  ).rows[0].id;
  const s = await new SecretStore(fx.t.db, secretCipherFor(fx.t.db, fx.t.config)).get(id);
  const url = new URL(defaultDataplaneUrl(fx.t.ownerUrl));
  url.username = s?.username ?? '';
  url.password = s?.password ?? '';
  const c = new pg.Client({ connectionString: url.toString() });
  c.on('error', () => undefined);
  return c.connect().then(
    async () => {
      await c.end();
      return true;
    },
    () => false,
  );
}

describe('SIGKILL at every step boundary', () => {
  it('suspend and activate resume at the step where the process died, on another engine; nothing is done twice', {
    timeout: 600_000,
  }, async () => {
    const dataDir = await tempDataDir();
    const c = await startController(fx.t, { dataDir });
    try {
      await until('database Ready', async () => {
        const r = await fx.t.owner.query(`select phase from integration_resources`);
        return r.rows.every((x) => x.phase === 'Ready');
      });
      const cases = [
        ...SUSPEND.flatMap((step) => [`suspend before:${step}`, `suspend after:${step}`]),
        ...ACTIVATE.flatMap((step) => [`activate before:${step}`, `activate after:${step}`]),
      ];
      for (const [n, name] of cases.entries()) {
        const [action, killAt] = name.split(' ') as ['suspend' | 'activate', string];
        const [when, step] = killAt.split(':') as [string, string];
        const steps = action === 'suspend' ? SUSPEND : ACTIVATE;
        const log = stepLog(dataDir, `steps-${n}.log`);
        if (action === 'activate')
          await fx.t.owner.query(`update tenants set lifecycle = 'Draft' where slug = $1`, [tenant]);
        const child = await killingEngine(fx.t, { dataDir, log, killAt });
        const obj = await fx.registry.transition(fx.ctx, tenant, action);
        const id = lifecycleWorkflowId(obj.metadata.uuid, obj.metadata.generation);
        expect(await exited(child), name).toBe('SIGKILL');
        // Another engine (this process) takes the workflow over once the dead one's lease runs out.
        expect(
          await finishedOnEngine(fx.t, id, {
            registry: logged(lifecycleWorkflowTypes(fx.t.db, c.providers), log),
          }),
          name,
        ).toMatchObject({ state: 'Succeeded' });
        const runs = stepRuns(log);
        const at = steps.indexOf(step);
        // Steps before the kill ran once, in the dead process; the resumed engine started at the step.
        expect(
          runs.map((r) => r[1]),
          name,
        ).toEqual(runsAfterKill(steps, killAt));
        expect(
          runs.filter((r) => r[2] === String(child.pid)).map((r) => r[1]),
          name,
        ).toEqual(steps.slice(0, when === 'before' ? at : at + 1));
        expect(await stepsOf(fx.t, id), name).toEqual(
          steps.map((s) => ({ name: s, state: 'Completed', attempts: 1 })),
        );
        const events = await fx.t.owner.query(
          `select type from outbox_events where subject = $1 order by seq`,
          [`workflows/${id}`],
        );
        expect(
          events.rows.map((r) => r.type.split('.')[3]),
          name,
        ).toEqual(['started', ...steps.map(() => 'step_completed'), 'succeeded']);
        if (action === 'activate') {
          // However often activation ran or died, the tenant has one live service client.
          const clients = await fx.t.owner.query(
            `select count(*)::int as n from service_clients where tenant_id = $1 and revoked_at is null`,
            [obj.metadata.uuid],
          );
          expect(clients.rows[0].n, name).toBe(1);
        }
        if (action === 'suspend') {
          expect(await canLogIn(), name).toBe(false);
          // Back to Active for the next case (no crash here).
          const r = await fx.registry.transition(fx.ctx, tenant, 'resume');
          await finishedOnEngine(fx.t, lifecycleWorkflowId(r.metadata.uuid, r.metadata.generation), {
            providers: c.providers,
          });
          expect(await canLogIn(), name).toBe(true);
        }
      }
    } finally {
      await c.stop();
    }
  });
});
