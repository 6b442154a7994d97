import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { startController, until, useControllerTestDatabase } from '../../test/helpers/controller.js';
import { finished, startWorkflowEngine } from '../../test/helpers/workflows.js';
import { systemContext } from '../context/request-context.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { RetentionService } from './retention.js';
import { lifecycleWorkflowId } from './start-lifecycle-workflow.js';

// Roles belong to the whole server: names unique to this run.
const customer = `px${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const role = `t_${tenant.replace(/-/g, '_')}`;
const DAY = 86_400_000;
const doc = (kind: string, metadata: { name?: string }, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});

const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    doc('Customer', { name: customer }, { displayName: 'Px', shortCode: customer }),
    doc('Tenant', {}, { customer, region: 'eu', environmentType: 'dev' }),
    doc('IntegrationResource', {}, { scope: { tenant }, type: 'database', database: { isolation: 'pool' } }),
  ]),
);

const roleExists = async () => {
  const c = new pg.Client({ connectionString: defaultDataplaneUrl(fx.t.ownerUrl) });
  await c.connect();
  try {
    return (await c.query('select 1 from pg_roles where rolname = $1', [role])).rows.length > 0;
  } finally {
    await c.end();
  }
};
const refusal = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: { code?: string; status?: number }) => ({ code: e.code, status: e.status }),
  );

describe('governance exception to the retention window (four eyes), on the real PostgreSQL provider', () => {
  it('a purge inside the window runs only with an exception approved by a second principal, never under a legal hold, and is recorded', async () => {
    const c = await startController(fx.t);
    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    const retention = new RetentionService(fx.t.db);
    const alice = systemContext('alice@example.com');
    const bob = systemContext('bob@example.com');
    try {
      await until('database Ready', async () => {
        const r = await fx.t.owner.query(
          `select count(*)::int as n from integration_resources where phase = 'Ready'`,
        );
        return r.rows[0].n === 1;
      });
      const archived = await fx.registry.transition(fx.ctx, tenant, 'archive');
      expect(
        await finished(fx.t, lifecycleWorkflowId(archived.metadata.uuid, archived.metadata.generation)),
      ).toMatchObject({ state: 'Succeeded' });
      const deleted = await fx.registry.delete(fx.ctx, 'Tenant', tenant);
      expect(
        await finished(fx.t, lifecycleWorkflowId(deleted.metadata.uuid, deleted.metadata.generation)),
      ).toMatchObject({ state: 'Succeeded' });
      expect(await roleExists()).toBe(true);

      // Inside the window, nothing approved: refused.
      expect(await refusal(retention.purge(alice, tenant))).toMatchObject({
        code: 'tenant.retention_active',
        status: 409,
      });
      // Nothing to approve yet; then Alice requests, and may not approve her own request.
      expect(await refusal(retention.approveException(bob, tenant, 'ok'))).toMatchObject({
        code: 'purge_exception.not_found',
        status: 404,
      });
      const requested = await retention.requestException(
        alice,
        tenant,
        'customer contract ended: GDPR erasure',
      );
      expect(requested.exception).toMatchObject({
        requestedBy: { principal: 'alice@example.com' },
        approvedAt: null,
      });
      expect(await refusal(retention.requestException(bob, tenant, 'again'))).toMatchObject({
        code: 'purge_exception.exists',
        status: 409,
      });
      expect(await refusal(retention.approveException(alice, tenant, 'mine'))).toMatchObject({
        code: 'purge_exception.self_approval',
        status: 403,
      });
      // The database holds the same rule, whoever writes.
      await expect(
        fx.t.owner.query(
          `update purge_exceptions set approved_by = requested_by, approved_at = now() where tenant_id = $1`,
          [deleted.metadata.uuid],
        ),
      ).rejects.toThrow(/purge_exceptions_four_eyes/);
      // Requested but not approved: still refused.
      expect(await refusal(retention.purge(alice, tenant))).toMatchObject({
        code: 'tenant.retention_active',
      });

      const approved = await retention.approveException(bob, tenant, 'legal confirmed the erasure request');
      expect(approved.exception).toMatchObject({ approvedBy: { principal: 'bob@example.com' } });
      expect(await refusal(retention.approveException(bob, tenant, 'twice'))).toMatchObject({
        code: 'purge_exception.approved',
        status: 409,
      });

      // A legal hold still wins over an approved exception.
      await retention.placeHold(fx.ctx, tenant, 'subpoena 2026-9');
      expect(await refusal(retention.purge(alice, tenant))).toMatchObject({
        code: 'tenant.legal_hold',
        status: 423,
      });
      await retention.releaseHold(fx.ctx, tenant, 'withdrawn');

      // Approved, no hold: the purge runs now, 89 days before the window ends.
      const { workflowId } = await retention.purge(alice, tenant);
      expect(await finished(fx.t, workflowId, 60_000)).toMatchObject({ state: 'Succeeded' });
      expect(await roleExists()).toBe(false);
      const standing = await retention.get(fx.ctx, tenant);
      expect(standing.retention?.purgedAt).not.toBeNull();
      expect(new Date(standing.retention!.purgeAfter).getTime() - Date.now()).toBeGreaterThan(80 * DAY);
      expect(standing.exception).toBeNull(); // used by the purge
      const used = await fx.t.owner.query(
        `select used_by_workflow from purge_exceptions where tenant_id = $1`,
        [deleted.metadata.uuid],
      );
      expect(used.rows).toEqual([{ used_by_workflow: workflowId }]);

      const audit = await fx.t.owner.query(
        `select action, after from audit_records where target_id = $1 order by time, id`,
        [deleted.metadata.uuid],
      );
      const actions = audit.rows.map((r) => r.action);
      expect(actions).toEqual(
        expect.arrayContaining([
          'tenant.purge_exception.request',
          'tenant.purge_exception.approve',
          'tenant.purge',
        ]),
      );
      const record = audit.rows.find((r) => r.action === 'tenant.purge')!.after;
      expect(record.exception).toMatchObject({
        reason: 'customer contract ended: GDPR erasure',
        requestedBy: { principal: 'alice@example.com' },
        approvedBy: { principal: 'bob@example.com' },
      });
      expect(record.resources).toHaveLength(1);
    } finally {
      await e.stop();
      await c.stop();
    }
  });
});
