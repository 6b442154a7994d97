import { sql } from 'kysely';
import pg from 'pg';
import { asPlatform } from '../db/database.js';
import type { AccessGrant } from '../providers/access.js';
import type { AzureBlobProvider } from '../providers/azure-blob/azure-blob-provider.js';
import { ProviderError } from '../providers/provider.js';
import type { StepContext, StepDefinition, WorkflowDefinition } from '../workflows/workflow.js';
import { type MigrationDeps, migrationRow } from './migration-records.js';
import {
  checksums,
  compare,
  copyTables,
  databaseUrl,
  inventory,
  type Verification,
  withClient,
} from './pg-copy.js';
import {
  dataplaneOf,
  providerIn,
  type RegionDatabasePlan,
  type RegionMigrationPlan,
  syncBlobs,
} from './region-migration.js';
import { switchTenantRegion } from './region-switch.js';

const { escapeIdentifier: id } = pg;

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
  const { db, providers } = deps;
  const planOf = (ctx: StepContext<RegionRollbackInput>) =>
    (ctx.outputs['check-window'] as { plan: Plan }).plan;
  const serverOf = (region: string, database: string) =>
    databaseUrl(dataplaneOf(providers, region), database);
  const srcUrl = (p: Plan, d: RegionDatabasePlan) => serverOf(p.fromRegion, d.database);
  const dstUrl = (p: Plan, d: RegionDatabasePlan) => serverOf(p.toRegion, d.targetDatabase);
  const blobProvider = (region: string) =>
    providerIn(providers, 'blob-container', region) as AzureBlobProvider;

  const setLogin = (url: string, role: string, login: boolean) =>
    withClient(url, async (c) => {
      const exists = await c.query('select 1 from pg_roles where rolname = $1', [role]);
      if ((exists.rowCount ?? 0) === 0) return;
      await c.query(`alter role ${id(role)} ${login ? 'login' : 'nologin'}`);
      if (!login)
        await c.query(
          'select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()',
          [role],
        );
    });

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
        await asPlatform(db, (trx) =>
          sql`update tenant_migrations set writes_frozen = true, updated_at = now(),
                rollback_verification = coalesce(rollback_verification, '{}'::jsonb)
                  || jsonb_build_object('frozenAt', coalesce(rollback_verification->>'frozenAt', now()::text))
              where id = ${ctx.input.migrationId}`.execute(trx),
        );
        for (const d of p.databases) await setLogin(serverOf(p.toRegion, 'postgres'), d.role, false);
        const grants: Record<string, AccessGrant> = {};
        for (const b of p.blobs) {
          // Recorded before it is taken, so a re-run (which would observe none) still knows it.
          const kept = await asPlatform(db, (trx) =>
            sql<{
              grant: AccessGrant | null;
            }>`select rollback_verification->'targetGrants'->${b.resourceId} as grant
              from tenant_migrations where id = ${ctx.input.migrationId}`.execute(trx),
          );
          const grant = kept.rows[0]?.grant ?? (await blobProvider(p.toRegion).observeAccess(b.desired));
          if (!kept.rows[0]?.grant)
            await asPlatform(db, (trx) =>
              sql`update tenant_migrations set rollback_verification = jsonb_set(rollback_verification, '{targetGrants}',
                    coalesce(rollback_verification->'targetGrants', '{}'::jsonb) || jsonb_build_object(${b.resourceId}::text, ${JSON.stringify(grant)}::jsonb))
                  where id = ${ctx.input.migrationId}`.execute(trx),
            );
          await blobProvider(p.toRegion).revokeAccess(b.desired, grant);
          grants[b.resourceId] = grant;
        }
        return { grants };
      },
      async undo(ctx, output) {
        const p = planOf(ctx);
        for (const d of p.databases) await setLogin(serverOf(p.toRegion, 'postgres'), d.role, true);
        const grants = (output as { grants?: Record<string, AccessGrant> }).grants ?? {};
        for (const b of p.blobs) {
          const g = grants[b.resourceId];
          if (g) await blobProvider(p.toRegion).restoreAccess(b.desired, g);
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
      // Everything the tenant holds in the target region now, into the kept source, proven equal.
      async run(ctx) {
        const p = planOf(ctx);
        const databases: Record<string, Verification> = {};
        for (const d of p.databases) {
          const now = await withClient(dstUrl(p, d), (t) => inventory(t, d.schema));
          const added = now.tables.filter((x) => !d.tables.includes(x));
          if (added.length > 0 || now.unsupported.length > 0)
            throw new ProviderError(
              `${d.schema} in ${p.toRegion} holds what the source never had (${[...added, ...now.unsupported].join(', ')}): migrate back instead`,
              'Ineligible',
              false,
            );
          await withClient(dstUrl(p, d), (t) =>
            withClient(srcUrl(p, d), (s) =>
              copyTables(t, s, { fromSchema: d.schema, toSchema: d.schema, tables: d.tables }),
            ),
          );
          const [a, b] = await Promise.all([
            withClient(dstUrl(p, d), (t) => checksums(t, d.schema, d.tables)),
            withClient(srcUrl(p, d), (s) => checksums(s, d.schema, d.tables)),
          ]);
          const v = compare(a, b);
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
          const r = await syncBlobs(
            providers,
            { ...p, fromRegion: p.toRegion, toRegion: p.fromRegion },
            b.desired,
          );
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
      // The source's role logs in again and its container's access comes back; the registry follows.
      async run(ctx) {
        const p = planOf(ctx);
        for (const d of p.databases) await setLogin(serverOf(p.fromRegion, 'postgres'), d.role, true);
        for (const b of p.blobs) {
          const g = p.blobGrants?.[b.resourceId];
          if (g) await blobProvider(p.fromRegion).restoreAccess(b.desired, g);
        }
        return { restoredAt: new Date().toISOString() };
      },
      async checkpoint(trx, ctx) {
        await switchTenantRegion(trx, ctx.tenantId, ctx.input.migrationId, planOf(ctx), 'back');
      },
    },
    {
      name: 'drop-target',
      async run(ctx) {
        const p = planOf(ctx);
        const gone: string[] = [];
        for (const d of p.databases) {
          await providerIn(providers, 'database', p.toRegion).delete({ ...d.desired, id: d.targetKey });
          gone.push(`database ${p.toRegion}/${d.targetDatabase}.${d.schema}`);
        }
        for (const b of p.blobs) {
          await blobProvider(p.toRegion).delete(b.desired);
          gone.push(`blobs ${p.toRegion}/${b.desired.physicalName}`);
        }
        for (const t of p.topics) {
          await providerIn(providers, 'kafka-topic', p.toRegion).delete(t.desired);
          gone.push(`topic ${p.toRegion}/${t.desired.physicalName}`);
        }
        return { dropped: gone };
      },
    },
  ];

  return {
    type: ROLLBACK_REGION,
    steps,
    compensated: async (trx, ctx, reason) => {
      await sql`update tenant_migrations set writes_frozen = false,
            rollback_verification = coalesce(rollback_verification, '{}'::jsonb) || jsonb_build_object('error', ${reason.slice(0, 2000)}::text)
          where id = ${ctx.input.migrationId}`.execute(trx);
    },
  };
}
