import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cellManifest,
  deploymentManifests,
  startController,
  type TestController,
  useControllerTestDatabase,
} from '../../test/helpers/controller.js';
import {
  expectRefused,
  expectWorking,
  kafkaAndAzuriteUnavailable,
  startTenantEngines,
  type TenantEngines,
  topicAndContainer,
} from '../../test/helpers/tenant-access.js';
import { finishedOnEngine } from '../../test/helpers/workflows.js';
import { lifecycleWorkflowId } from './start-lifecycle-workflow.js';

// Suspend and resume (issue 18) on a real Kafka broker and on Azurite: a real consumer of the
// tenant's and its SAS token are refused while the tenant is suspended, and work again after resume.
const unavailable = await kafkaAndAzuriteUnavailable('suspend/resume on Kafka and Azurite');

const customer = `se${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const deployment = `${tenant}-plan`;
const fx = useControllerTestDatabase();

describe.skipIf(unavailable)('suspend and resume on a real Kafka broker and Azurite', () => {
  let engines: TenantEngines;
  let c: TestController;

  beforeAll(async () => {
    engines = await startTenantEngines(deployment);
    await fx.registry.apply(fx.ctx, [
      cellManifest(`${customer}-cell`),
      ...deploymentManifests(customer, 'plan'),
      ...topicAndContainer(deployment),
    ]);
    c = await startController(fx.t, {
      env: engines.env,
    });
  }, 300_000);

  afterAll(async () => {
    await c?.stop();
    await engines?.stop();
  });

  async function transition(action: 'suspend' | 'resume'): Promise<void> {
    const obj = await fx.registry.transition(fx.ctx, tenant, action);
    const id = lifecycleWorkflowId(obj.metadata.uuid, obj.metadata.generation);
    expect(await finishedOnEngine(fx.t, id, { providers: c.providers }, 60_000)).toMatchObject({
      state: 'Succeeded',
    });
  }

  it('while suspended a real consumer and a SAS token are refused; after resume both work again', {
    timeout: 300_000,
  }, async () => {
    const probe = await engines.probe(fx.t.owner);

    await transition('suspend');
    await expectRefused(probe);
    await transition('resume');
    // Resume gave back exactly the policy that was there.
    await expectWorking(probe);

    // The embedded default: the cell's agent is the in-process one, which runs these same providers
    // (`npm start`; Circle K's circlek-eu-prod kept its Kafka readers while suspended).
    await fx.t.owner.query(
      `insert into cell_agents (cell_id, session_id, name, embedded, credential_expires_at, heartbeat_interval_ms)
       select id, 'embedded-test', 'embedded', true, now() + interval '1 hour', 10000 from cells where slug = $1`,
      [`${customer}-cell`],
    );
    await transition('suspend');
    await expectRefused(probe);
    await transition('resume');
    await expectWorking(probe);
  });
});
