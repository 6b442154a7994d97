/**
 * 14. Release promotion (issue 21): a release promoted across 1,000 tenants (one deployment with one
 * Service each, three waves) by the promotion workflow, end to end — request, gates, wave plan, and
 * per tenant the update (deployment_releases, the Service's image and version through the change
 * path, target state, audit record, event), the hold check (maintenance windows, freezes),
 * verification (the runtime's health report) and its settlement (state, audit record), then the
 * evidence record — beside the bare runtime update measured in the same run: the same Service
 * update of every tenant through the same change path (`rollOutRelease`, one transaction per
 * tenant: lineage, audit, event, reconcile job), one tenant after another as the promotion goes.
 * Goal: the promotion takes ≤ 10 % longer than the bare updates (rate ratio ≥ 1 / 1.1).
 *
 * Two sizes, because replicas are real processes on the embedded target (local-process):
 * - The issue's 1,000 tenants with TENANTRY_RUNTIME=none (no controller): 1,000 tenants × real
 *   processes are beyond this 2-core machine, so both sides are the control plane's cost only.
 *   Health is reported for every deployment on the new version before the promotion starts (stamped
 *   ahead, so the real verifier — `reportedHealth`, a read of deployment_health — finds it at its
 *   first look): verification's read is counted, the wait for replicas is not.
 * - A subset on the local-process target (a controller rolls each tenant's replica, a real Node
 *   process, examples/circlek/replica.mjs; a monitor reports health through the API's service once
 *   every replica is ready on the Service's version): here both sides wait, tenant after tenant, for
 *   the runtime's health report of the new version (`reportedHealth`, as verification does).
 *   BENCH_PROMOTION_TENANTS (default 1,000), BENCH_PROMOTION_RUNTIME_TENANTS (default 30: about
 *   1.4 GB of replica processes, so the whole bench stays under 15 minutes; 0 skips it).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { createRegistry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { systemContext } from '../../src/context/request-context.js';
import { Controller } from '../../src/controller/controller.js';
import {
  closeProviders,
  createProviders,
  defaultDataplaneUrl,
  type ProviderSet,
} from '../../src/controller/providers.js';
import { asPlatform, createDb } from '../../src/db/database.js';
import { EventNotifier } from '../../src/events/event-notifier.js';
import { reportedHealth, withPromotions } from '../../src/releases/promotion-workflow.js';
import { PromotionsService } from '../../src/releases/promotions.service.js';
import { rollOutRelease } from '../../src/releases/release-rollout.js';
import { WorkflowEngine } from '../../src/workflows/workflow-engine.js';
import { BENCH_CUSTOMER, manifest } from '../lib/manifests.js';
import type { BenchPostgres } from '../lib/postgres.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';
import { ENGINE_CONFIG } from './workflows.js';

const TENANTS = Number(process.env.BENCH_PROMOTION_TENANTS ?? 1000);
const RUNTIME_TENANTS = Number(process.env.BENCH_PROMOTION_RUNTIME_TENANTS ?? 30);
const SYSTEM = 'shop';
const IMAGE = 'registry.example.com/shop/api';
const digest = (c: string) => `sha256:${c.repeat(64)}`;
const tenantSlug = (i: number) => `bench-eu-dev-p${i}`;

const release = (version: string, c: string) =>
  manifest('Release', undefined, {
    system: SYSTEM,
    version,
    artifacts: [{ service: 'api', image: IMAGE, digest: digest(c) }],
    configuration: [],
    produces: { events: [], apis: [] },
    provenance: {
      commit: c.repeat(40),
      repository: 'https://git.example.com/shop',
      pipelineRunId: `run-${version}`,
      builder: 'ci.example.com',
      lineage: [c.repeat(40)],
    },
    validations: [{ name: 'unit-tests', passed: true }],
  });

export async function promotionBenchmark(server: BenchPostgres): Promise<Row[]> {
  const rows: Row[] = [];
  const none = await promoteAcross(server, 'bench_promotion', TENANTS, 'none');
  rows.push(
    row(
      `Promote a release across ${TENANTS} tenants vs bare Service updates (same change path)`,
      none.promoted,
      none.bare,
      { ratioAtLeast: 1 / 1.1 },
      'promotion ≤ 10% over bare; TENANTRY_RUNTIME=none: no replicas run on either side, health pre-reported',
    ),
  );
  if (RUNTIME_TENANTS > 0) {
    const local = await promoteAcross(server, 'bench_promotion_local', RUNTIME_TENANTS, 'local');
    rows.push(
      row(
        `Promote across ${RUNTIME_TENANTS} tenants on real replicas vs bare update + wait for health`,
        local.promoted,
        local.bare,
        { ratioAtLeast: 1 / 1.1 },
        `promotion ≤ 10% over bare; local-process target, 1 replica per tenant; subset: ${TENANTS} processes do not fit 2 cores`,
      ),
    );
  }
  return rows;
}

/** Observed replicas of a Service, as the runtime reconciler records them. */
interface ObservedReplicas {
  replicas?: { items?: { ready: boolean; version: string }[] };
}

/**
 * Called at the start and end of each timed phase (bench/profile-promotion.ts takes its profiles
 * there): with the owner's pool and the promotion's id at its end. Outside the timed spans.
 */
export type PhaseProbe = (
  phase: 'bare' | 'promotion',
  at: 'start' | 'end',
  ctx: { owner: pg.Pool; promotionId?: string },
) => Promise<void>;

export async function promoteAcross(
  server: BenchPostgres,
  database: string,
  tenants: number,
  runtime: 'none' | 'local',
  probe?: PhaseProbe,
): Promise<{ bare: Measurement; promoted: Measurement }> {
  const { ownerUrl, appUrl } = await server.createDatabase(database);
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tenantry-bench-promo-'));
  const config = loadConfig({}, { TENANTRY_RUNTIME: runtime, TENANTRY_DATA_DIR: dataDir });
  const db = createDb(appUrl, settings.connections + 4);
  const owner = new pg.Pool({ connectionString: ownerUrl, max: 3 });
  const registry = createRegistry(db, config);
  const ctx = systemContext('bench');
  const clock = { now: () => Date.now() };
  const promotions = new PromotionsService(db, clock, () => engine?.wake());
  let engine: WorkflowEngine | undefined;
  let notifier: EventNotifier | undefined;
  let providers: ProviderSet | undefined;
  let controller: Controller | undefined;
  let monitoring = false;
  let monitor: Promise<void> | undefined;
  try {
    // Setup (not timed): the system, its pipeline and three releases; the tenants, each with a
    // deployment of the system and its Service on release 1.0.0, in three rings of labels.
    await registry.apply(ctx, [
      BENCH_CUSTOMER,
      manifest('System', SYSTEM, { displayName: 'Shop', serviceId: SYSTEM }),
      manifest('Pipeline', 'shop-pipeline', {
        systems: [SYSTEM],
        stages: [
          {
            name: 'dev',
            environmentTypes: ['dev'],
            waves: [
              { name: 'canary', selector: { labels: { ring: '1' } } },
              { name: 'early', selector: { labels: { ring: '2' } } },
              { name: 'rest' },
            ],
            budget: { maxFailurePercent: 5 },
            verification: { timeoutSeconds: 60, maxErrorRate: 0.05 },
          },
        ],
      }),
      release('1.0.0', 'a'),
      release('1.1.0', 'b'),
      release('1.2.0', 'c'),
    ]);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: settings.connections }, async () => {
        for (let i = next; i < tenants; i = next) {
          next += 10;
          const docs: unknown[] = [];
          for (let j = i; j < Math.min(i + 10, tenants); j++) {
            const ring = j < tenants / 100 ? '1' : j < tenants / 10 ? '2' : '3';
            docs.push(
              {
                ...manifest('Tenant', undefined, {
                  customer: 'bench',
                  region: 'eu',
                  environmentType: 'dev',
                  qualifier: `p${j}`,
                }),
                metadata: { labels: { ring } },
              },
              manifest('Deployment', undefined, { tenant: tenantSlug(j), system: SYSTEM }),
              manifest('Service', undefined, {
                deployment: `${tenantSlug(j)}-${SYSTEM}`,
                component: 'api',
                image: `${IMAGE}@${digest('a')}`,
                version: '1.0.0',
                replicas: 1,
                ...(runtime === 'local' ? { command: ['node', 'examples/circlek/replica.mjs'] } : {}),
              }),
            );
          }
          await registry.apply(ctx, docs);
        }
      }),
    );
    const targets = (
      await owner.query<{ tenant_id: string; deployment_id: string; system_id: string }>(
        `select d.tenant_id, d.id as deployment_id, d.system_id from deployments d
         join tenants t on t.id = d.tenant_id where t.slug like 'bench-eu-dev-p%' order by t.slug`,
      )
    ).rows;
    if (targets.length !== tenants) throw new Error(`${targets.length} deployments, want ${tenants}`);
    console.log(
      `  ${runtime}: ${tenants} tenants with a deployment and a Service applied in ${((performance.now() - t0) / 1000).toFixed(0)}s`,
    );

    const reportedHealthOf = reportedHealth(db);
    if (runtime === 'local') {
      // The runtime: a controller rolling replicas on the local-process target, and the monitoring
      // that reports a deployment's health once every replica is ready on its Service's version.
      providers = createProviders({ config, db, dataplaneUrl: defaultDataplaneUrl(ownerUrl) });
      controller = new Controller({
        db,
        providers,
        logger: pino({ level: 'warn' }),
        config: { ...config.controller, workers: settings.connections, pollIntervalMs: 20 },
      });
      controller.start();
      const reported = new Map<string, string>();
      monitoring = true;
      monitor = (async () => {
        while (monitoring) {
          const r = await owner.query<{
            deployment_id: string;
            replicas: number;
            version: string;
            observed: ObservedReplicas | null;
          }>(
            `select deployment_id, (spec->>'replicas')::int as replicas, spec->>'version' as version, observed
             from services where deleted_at is null`,
          );
          for (const s of r.rows) {
            const items = s.observed?.replicas?.items ?? [];
            const ready = items.filter((x) => x.ready && x.version === s.version).length;
            if (ready !== s.replicas || items.length !== s.replicas) continue;
            if (reported.get(s.deployment_id) === s.version) continue;
            await promotions.reportHealth(ctx, s.deployment_id, {
              version: s.version,
              readyReplicas: ready,
              desiredReplicas: s.replicas,
              errorRate: 0,
            });
            reported.set(s.deployment_id, s.version);
          }
          await new Promise((res) => setTimeout(res, 50));
        }
      })();
      const s0 = performance.now();
      for (;;) {
        const n = await owner.query<{ n: number }>(
          `select count(*)::int as n from deployment_health where version = '1.0.0'`,
        );
        if (n.rows[0]?.n === tenants) break;
        if (performance.now() - s0 > 300_000) throw new Error('the replicas did not start within 5 min');
        await new Promise((res) => setTimeout(res, 200));
      }
      console.log(
        `  local: ${tenants} replicas running 1.0.0 in ${((performance.now() - s0) / 1000).toFixed(0)}s`,
      );
    }

    // Baseline (timed): the bare runtime update — every tenant's Service onto release 1.1.0 through
    // the change path, one transaction per tenant, one tenant after another; on real replicas, each
    // followed by the wait for the runtime's health report of 1.1.0 (as verification waits).
    await probe?.('bare', 'start', { owner });
    const b0 = performance.now();
    for (const t of targets) {
      const since = new Date(Date.now() - 1000);
      const changed = await asPlatform(db, (trx) =>
        rollOutRelease(trx, ctx, {
          tenantId: t.tenant_id,
          deploymentId: t.deployment_id,
          systemId: t.system_id,
          version: '1.1.0',
        }),
      );
      if (changed.length !== 1) throw new Error(`bare update changed ${changed.length} services`);
      if (runtime === 'local') {
        const [v] = await reportedHealthOf(
          [{ tenantId: t.tenant_id, deploymentId: t.deployment_id, version: '1.1.0', since }],
          { timeoutMs: 60_000, maxErrorRate: 0.05 },
          new AbortController().signal,
        );
        if (!v?.healthy) throw new Error(`bare update not healthy: ${v?.reason}`);
      }
    }
    const bareSeconds = (performance.now() - b0) / 1000;
    await probe?.('bare', 'end', { owner });
    const bare: Measurement = {
      label: `bare Service update via the change path${runtime === 'local' ? ' + wait for health' : ''}, sequential (${bareSeconds.toFixed(1)} s)`,
      value: tenants / bareSeconds,
      unit: 'tenants/s',
    };
    console.log(
      `  ${runtime}: bare updates: ${tenants} in ${bareSeconds.toFixed(1)}s, ${((bareSeconds * 1000) / tenants).toFixed(2)} ms per tenant`,
    );

    // What the runtime would report once the replicas run 1.2.0, there before verification looks.
    if (runtime === 'none')
      await owner.query(
        `insert into deployment_health (tenant_id, deployment_id, version, ready_replicas, desired_replicas, error_rate, reported_at)
       select d.tenant_id, d.id, '1.2.0', 1, 1, 0, now() + interval '1 day' from deployments d`,
      );

    // Figure (timed): the promotion of 1.2.0 to the dev stage, from the request to the workflow's end.
    engine = new WorkflowEngine({
      db,
      registry: withPromotions(new Map(), { db, clock, recheckMs: 1_000 }),
      logger: pino({ level: 'warn' }),
      config: { ...ENGINE_CONFIG, workers: settings.connections },
    });
    engine.start();
    notifier = new EventNotifier(appUrl, pino({ level: 'warn' }));
    await notifier.start();
    const unsubscribe = notifier.subscribe('tenantry_workflows', () => engine?.wake());
    await probe?.('promotion', 'start', { owner });
    const p0 = performance.now();
    const promotion = await promotions.request(ctx, { system: SYSTEM, version: '1.2.0', stage: 'dev' });
    let state = '';
    for (;;) {
      const r = await owner.query<{ state: string; error: string | null }>(
        'select state, error from promotions where id = $1',
        [promotion.id],
      );
      state = r.rows[0]?.state ?? '';
      if (state !== 'Running' && state !== 'AwaitingApproval') {
        if (state !== 'Succeeded') throw new Error(`promotion ended ${state}: ${r.rows[0]?.error}`);
        break;
      }
      await new Promise((res) => setTimeout(res, 20));
    }
    const promoSeconds = (performance.now() - p0) / 1000;
    await probe?.('promotion', 'end', { owner, promotionId: promotion.id });
    unsubscribe();
    const counts = (
      await owner.query<{ state: string; n: number }>(
        'select state, count(*)::int as n from promotion_targets where promotion_id = $1 group by state',
        [promotion.id],
      )
    ).rows;
    const verified = counts.find((c) => c.state === 'Verified')?.n ?? 0;
    if (verified !== tenants)
      throw new Error(`promotion verified ${verified} of ${tenants}: ${JSON.stringify(counts)}`);
    const steps = (
      await owner.query<{ name: string; ms: number }>(
        `select name, extract(epoch from ended_at - started_at) * 1000 as ms from workflow_steps
         where workflow_id = $1 order by position`,
        [promotion.id],
      )
    ).rows;
    const onNew = await owner.query<{ n: number }>(
      `select count(*)::int as n from services where spec->>'version' = '1.2.0' and spec->>'image' = $1`,
      [`${IMAGE}@${digest('c')}`],
    );
    if (onNew.rows[0]?.n !== tenants) throw new Error(`${onNew.rows[0]?.n} services on 1.2.0`);

    const overheadMs = ((promoSeconds - bareSeconds) * 1000) / tenants;
    const promoted: Measurement = {
      label: `promotion workflow end to end, 3 waves (${promoSeconds.toFixed(1)} s; +${overheadMs.toFixed(2)} ms per tenant)`,
      value: tenants / promoSeconds,
      unit: 'tenants/s',
    };
    console.log(
      `  ${runtime}: promotion: ${tenants} tenants verified in ${promoSeconds.toFixed(1)}s, ${((promoSeconds * 1000) / tenants).toFixed(2)} ms per tenant; ` +
        `orchestration overhead ${overheadMs.toFixed(2)} ms per tenant (${((promoSeconds / bareSeconds - 1) * 100).toFixed(0)}% over bare)`,
    );
    console.log(`  steps: ${steps.map((s) => `${s.name} ${(Number(s.ms) / 1000).toFixed(1)}s`).join(', ')}`);
    return { bare, promoted };
  } finally {
    monitoring = false;
    await monitor?.catch(() => undefined);
    await notifier?.stop();
    await engine?.stop();
    await controller?.stop();
    if (providers) await closeProviders(providers);
    await db.destroy();
    await owner.end();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}
