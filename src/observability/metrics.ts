import type pg from 'pg';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Every Prometheus series Tenantry exposes, in one place. Labels are bounded sets (route templates,
 * kinds, outcomes, categories), never a tenant, an object or a request: per-tenant views come from
 * SQL (`GET /v1/tenants/{id}/activity`), not from metrics. A test fails if any series grows a
 * tenant label.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly httpDuration = new Histogram({
    name: 'tenantry_http_request_duration_seconds',
    help: 'HTTP request duration by route template, method and status code.',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly reconcileDuration = new Histogram({
    name: 'tenantry_reconcile_duration_seconds',
    help: 'Duration of one reconcile of one object, by kind and outcome (ready, retry, failed).',
    labelNames: ['kind', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly controllerErrors = new Counter({
    name: 'tenantry_controller_errors_total',
    help: 'Reconcile errors by category (provider_retryable, provider_permanent, internal).',
    labelNames: ['kind', 'category'] as const,
    registers: [this.registry],
  });

  readonly queueJobs = new Counter({
    name: 'tenantry_queue_jobs_total',
    help: 'Reconcile jobs taken from the queue, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly webhookDuration = new Histogram({
    name: 'tenantry_webhook_delivery_duration_seconds',
    help: 'Duration of one webhook delivery attempt, by outcome.',
    labelNames: ['outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly webhookAttempts = new Counter({
    name: 'tenantry_webhook_delivery_attempts_total',
    help: 'Webhook delivery attempts by outcome (delivered, retry, dead_letter, endpoint_gone).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly policyDuration = new Histogram({
    name: 'tenantry_policy_evaluation_duration_seconds',
    help: 'Duration of one authorization decision, by decision (allow, deny, error).',
    labelNames: ['decision'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [this.registry],
  });

  readonly policyDecisions = new Counter({
    name: 'tenantry_policy_decisions_total',
    help: 'Authorization decisions by decision (allow, deny, error).',
    labelNames: ['decision'] as const,
    registers: [this.registry],
  });

  readonly auditCheckpoints = new Counter({
    name: 'tenantry_audit_checkpoints_total',
    help: 'Signed audit checkpoints written.',
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: 'tenantry_' });
      // Gauges that prom-client names *_total, which `promtool check metrics` rejects.
      for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total'])
        this.registry.removeSingleMetric(`tenantry_nodejs_${name}`);
    }
  }

  private readonly pools = new Set<pg.Pool>();

  readonly poolConnections = (() => {
    const pools = this.pools;
    return new Gauge({
      name: 'tenantry_db_pool_connections',
      help: 'Application database pool connections by state (total, idle, waiting clients).',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect() {
        let total = 0;
        let idle = 0;
        let waiting = 0;
        for (const p of pools) {
          total += p.totalCount;
          idle += p.idleCount;
          waiting += p.waitingCount;
        }
        this.set({ state: 'total' }, total);
        this.set({ state: 'idle' }, idle);
        this.set({ state: 'waiting' }, waiting);
      },
    });
  })();

  /** Adds a pool to `tenantry_db_pool_connections` (read at scrape time, summed over pools). */
  observePool(pool: pg.Pool): void {
    this.pools.add(pool);
  }

  forgetPool(pool: pg.Pool): void {
    this.pools.delete(pool);
  }

  private readonly readers = new Map<string, () => Promise<number>>();

  /** Gauges computed at scrape time by a reader the composition root sets (see `read`). */
  readonly queueDepth = this.scrapeGauge(
    'tenantry_queue_depth',
    'Reconcile jobs due now and not taken by a worker.',
  );
  readonly eventBacklog = this.scrapeGauge(
    'tenantry_event_backlog',
    'Webhook deliveries of events not yet made (pending, retrying or parked).',
  );

  /** Sets how a scrape-time gauge reads its value (the latest caller wins: tests start several servers). */
  read(gauge: Gauge, reader: () => Promise<number>): void {
    this.readers.set((gauge as unknown as { name: string }).name, reader);
  }

  private scrapeGauge(name: string, help: string): Gauge {
    const readers = this.readers;
    const errors = () => this.collectErrors;
    return new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        const reader = readers.get(name);
        if (!reader) return;
        try {
          this.set(await reader());
        } catch {
          // A failing read leaves the last value and is counted.
          errors().inc({ metric: name });
        }
      },
    });
  }

  private readonly collectErrors = new Counter({
    name: 'tenantry_metric_collect_errors_total',
    help: 'Scrape-time gauge reads that failed, by metric.',
    labelNames: ['metric'] as const,
    registers: [this.registry],
  });
}
