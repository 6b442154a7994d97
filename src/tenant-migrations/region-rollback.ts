import { sql } from 'kysely';
import { clearSealedOf } from '../agent/agent-commands.js';
import { asPlatform } from '../db/database.js';
import type { AccessGrant } from '../providers/access.js';
import { ProviderError } from '../providers/provider.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { type MigrationDeps, migrationRow } from './migration-records.js';
import type { Verification } from './pg-copy.js';
import {
  copyBlobs,
  dropRegionCopy,
  type RegionMigrationPlan,
  regionSides,
  renameAgentSecrets,
} from './region-migration.js';
import { type Switched, switchTenantRegion } from './region-switch.js';

export const ROLLBACK_REGION = 'migration.region-rollback';

export interface RegionRollbackInput {
  migrationId: string;
  tenantSlug: string;
}

type Plan = RegionMigrationPlan & { blobGrants?: Record<string, AccessGrant> };

/**
 * Rolling a region migration back within its window (issue 19), while the source region's
 * resources are kept (not retired): the tenant's writes are frozen in the target region, what it
 * holds now (writes since the cut-over included) is copied back into the kept source database and
 * blob container and verified there (row counts and checksums, blob MD5s), the source's access is
 * given back, the registry returns to the source region (secrets, placement, cell, event
 * `tenant.migration_rolled_back`, audit), and the target region's copies are dropped. Messages
 * produced to the target region's topics after the cut-over are not carried back (the source's
 * topics were kept as they were).
 */
export function regionRollbackWorkflow(deps: MigrationDeps): WorkflowDefinition<RegionRollbackInput> {
  const { db } = deps;
  const planOf = (ctx: StepContext<RegionRollbackInput>) =>
    (ctx.outputs['check-window'] as { plan: Plan }).plan;
  const sides = (ctx: StepContext<RegionRollbackInput>, step: string) =>
    regionSides(deps, planOf(ctx), ctx, step);
  const roles = (p: Plan) => p.databases.map((d) => d.role);

  const steps: StepDefinition<RegionRollbackInput>[] = [
    {
      name: 'check-window',
      async run(ctx) {
        const m = await migrationRow(db, ctx.input.migrationId);
        if ((m.plan as { kind?: string }).kind !== 'region')
          throw new ProviderError('not a region migration', 'NotRegion', false);
        if (m.state !== 'CutOver')
          throw new ProviderError(`the migration is ${m.state}, not CutOver`, 'NotCutOver', false);
        if (!m.rollback_until || m.rollback_until.getTime() < Date.now())
          throw new ProviderError('the rollback window has passed', 'WindowPassed', false);
        return { plan: m.plan as unknown as Plan, rollbackUntil: m.rollback_until.toISOString() };
      },
    },
    {
      name: 'freeze-writes',
      // The tenant's role in the target region may not log in, its container's access is taken.
      async run(ctx) {
        const p = planOf(ctx);
        const target = sides(ctx, 'freeze-writes').target;
        await asPlatform(db, (trx) =>
          sql`update tenant_migrations set writes_frozen = true, updated_at = now(),
                rollback_verification = coalesce(rollback_verification, '{}'::jsonb)
                  || jsonb_build_object('frozenAt', coalesce(rollback_verification->>'frozenAt', now()::text))
              where id = ${ctx.input.migrationId}`.execute(trx),
        );
        await target().setLogin({ roles: roles(p), login: false });
        const grants: Record<string, AccessGrant> = {};
        for (const b of p.blobs) {
          // Recorded before it is taken, so a re-run (which would observe none) still knows it.
          const kept = await asPlatform(db, (trx) =>
            sql<{
              grant: AccessGrant | null;
            }>`select rollback_verification->'targetGrants'->${b.resourceId} as grant
              from tenant_migrations where id = ${ctx.input.migrationId}`.execute(trx),
          );
          const grant =
            kept.rows[0]?.grant ?? (await target(b.resourceId).observeAccess({ desired: b.desired }));
          if (!kept.rows[0]?.grant)
            await asPlatform(db, (trx) =>
              sql`update tenant_migrations set rollback_verification = jsonb_set(rollback_verification, '{targetGrants}',
                    coalesce(rollback_verification->'targetGrants', '{}'::jsonb) || jsonb_build_object(${b.resourceId}::text, ${JSON.stringify(grant)}::jsonb))
                  where id = ${ctx.input.migrationId}`.execute(trx),
            );
          await target(b.resourceId).revokeAccess({ desired: b.desired, grant });
          grants[b.resourceId] = grant;
        }
        return { grants };
      },
      async undo(ctx, output) {
        const p = planOf(ctx);
        const target = sides(ctx, 'freeze-writes:undo').target;
        await target().setLogin({ roles: roles(p), login: true });
        const grants = (output as { grants?: Record<string, AccessGrant> }).grants ?? {};
        for (const b of p.blobs) {
          const grant = grants[b.resourceId];
          if (grant) await target(b.resourceId).restoreAccess({ desired: b.desired, grant });
        }
        await asPlatform(db, (trx) =>
          sql`update tenant_migrations set writes_frozen = false where id = ${ctx.input.migrationId}`.execute(
            trx,
          ),
        );
      },
    },
    {
      name: 'copy-back',
      timeoutMs: 30 * 60_000,
      // Everything the tenant holds in the target region now, into the kept source, proven equal:
      // the target hands out a reader of the schema, the source pulls through it.
      async run(ctx) {
        const p = planOf(ctx);
        const s = sides(ctx, 'copy-back');
        // The target (us) hands out readers, the kept source pulls: sealed for the source's side.
        const sealTo = await s.sealFor('source');
        const databases: Record<string, Verification> = {};
        for (const d of p.databases) {
          const [source, target] = [s.source(d.resourceId), s.target(d.resourceId)];
          const there = { database: d.targetDatabase, schema: d.schema, tables: d.tables };
          const here = { database: d.database, schema: d.schema, tables: d.tables };
          const seen = await target.inspect({
            databases: [
              { isolation: d.desired.database?.isolation === 'silo' ? 'silo' : 'pool', name: d.role },
            ],
            blobs: [],
            topics: [],
            inventories: true,
          });
          const now = seen.inventories[0]!;
          const added = now.tables.filter((x) => !d.tables.includes(x));
          if (added.length > 0 || now.unsupported.length > 0)
            throw new ProviderError(
              `${d.schema} in ${p.toRegion} holds what the source never had (${[...added, ...now.unsupported].join(', ')}): migrate back instead`,
              'Ineligible',
              false,
            );
          const name = `${d.replication}_b`;
          const reader = await target.openReader({ ...there, name, publish: false, sealTo });
          await source.pull({ ...here, name, from: reader.connection });
          const v = await source.verifyAgainst({ ...here, source: await target.checks(there), timeoutMs: 0 });
          await target.closeReader({ ...there, name });
          databases[d.resourceId] = v;
          if (!v.equal)
            throw new ProviderError(
              `verification of the copy back of ${d.schema} failed`,
              'VerificationFailed',
              false,
            );
        }
        const blobs: Record<string, { equal: boolean; blobs: number; copied: number }> = {};
        for (const b of p.blobs) {
          const r = await copyBlobs(s.target(b.resourceId), s.source(b.resourceId), b.desired, sealTo);
          const equal = JSON.stringify(r.source) === JSON.stringify(r.target);
          blobs[b.resourceId] = { equal, blobs: r.source.length, copied: r.copied };
          if (!equal)
            throw new ProviderError(
              `blob checksums differ in ${b.desired.physicalName} after the copy back`,
              'VerificationFailed',
              false,
            );
        }
        return { databases, blobs };
      },
      async checkpoint(trx, ctx, output) {
        await sql`update tenant_migrations set rollback_verification = rollback_verification || jsonb_build_object('verification', ${JSON.stringify(output)}::jsonb)
          where id = ${ctx.input.migrationId}`.execute(trx);
      },
    },
    {
      name: 'restore-source',
      // The source's role logs in again and its container's access comes back; the agents' kept
      // credentials switch back, and the registry follows in the checkpoint.
      async run(ctx) {
        const p = planOf(ctx);
        const s = sides(ctx, 'restore-source');
        await s.source().setLogin({ roles: roles(p), login: true });
        for (const b of p.blobs) {
          const grant = p.blobGrants?.[b.resourceId];
          if (grant) await s.source(b.resourceId).restoreAccess({ desired: b.desired, grant });
        }
        // The source's databases observed (credentials still under its key) for the status the switch writes.
        const arrived = await s.source().observeArrived({
          databases: p.databases.map((d) => ({
            resourceId: d.resourceId,
            desired: { ...d.desired, id: d.sourceKey },
          })),
        });
        await renameAgentSecrets(p, s, 'back');
        return { restoredAt: new Date().toISOString(), arrived };
      },
      async checkpoint(trx, ctx, output) {
        await switchTenantRegion(trx, ctx, planOf(ctx), 'back', output as Switched);
      },
    },
    {
      name: 'drop-target',
      async run(ctx) {
        const target = sides(ctx, 'drop-target').target();
        return { dropped: await dropRegionCopy(target, planOf(ctx), 'target') };
      },
    },
  ];

  return {
    type: ROLLBACK_REGION,
    steps,
    compensated: async (trx, ctx, reason) => {
      await clearSealedOf(trx, ctx.workflowId);
      await sql`update tenant_migrations set writes_frozen = false,
            rollback_verification = coalesce(rollback_verification, '{}'::jsonb) || jsonb_build_object('error', ${reason.slice(0, 2000)}::text)
          where id = ${ctx.input.migrationId}`.execute(trx);
    },
  };
}
