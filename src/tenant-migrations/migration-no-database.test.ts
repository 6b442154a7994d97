import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { cellManifest, startController, useControllerTestDatabase } from '../../test/helpers/controller.js';
import { doc } from '../../test/helpers/runtime.js';
import { finished, startWorkflowEngine } from '../../test/helpers/workflows.js';
import { defaultDataplaneUrl } from '../controller/providers.js';
import { type Migration, MigrationsService } from './migrations.service.js';
import { databaseUrl, withClient } from './pg-copy.js';

// Circle K's circlek-eu-prod on a fresh installation: a pool tenant with blobs and topics but no
// database resource, so the data plane's own database was never created.
const customer = `nd${randomBytes(3).toString('hex')}`;
const tenant = `${customer}-eu-dev`;
const fx = useControllerTestDatabase((f) =>
  f.registry.apply(f.ctx, [
    cellManifest(`${customer}-pool`),
    cellManifest(`${customer}-silo`, 'dedicated'),
    doc('Customer', { name: customer }, { displayName: 'No database', shortCode: customer }),
    doc('Tenant', {}, { customer, region: 'eu', environmentType: 'dev', isolation: 'pool' }),
  ]),
);

describe('pool → silo migration of a tenant without databases', () => {
  it('moves the placement on a data plane whose database does not exist yet', async () => {
    const dataplane = new URL(defaultDataplaneUrl(fx.t.ownerUrl));
    const name = decodeURIComponent(dataplane.pathname.slice(1));
    await withClient(databaseUrl(fx.t.ownerUrl, 'postgres'), (c) =>
      c.query(`drop database if exists "${name}" with (force)`),
    );
    const c = await startController(fx.t);
    const e = startWorkflowEngine(fx.t, { providers: c.providers });
    try {
      const service = new MigrationsService(fx.t.db);
      const m = (await service.start(fx.ctx, tenant, { isolation: 'silo' }, { dryRun: false })) as Migration;
      expect(await finished(fx.t, m.id, 60_000)).toMatchObject({ state: 'Succeeded' });
      expect(await service.get(fx.ctx, tenant, m.id)).toMatchObject({
        state: 'CutOver',
        to: { isolation: 'silo', cell: `${customer}-silo` },
      });
      const t = await fx.t.owner.query(
        `select spec->>'isolation' as isolation from tenants where slug = $1`,
        [tenant],
      );
      expect(t.rows[0].isolation).toBe('silo');
    } finally {
      await e.stop();
      await c.stop();
    }
  });
});
