import { type Static, Type } from '@sinclair/typebox';
import { ValidationError } from '../errors/errors.js';
import { validNetwork } from '../webhooks/url-guard.js';
import { list, nonNegativeInt } from './settings.js';

const Ms = (description: string) => Type.Integer({ minimum: 0, description });

/** Events and webhooks (src/events, src/webhooks). */
export const EventsConfigSchema = Type.Object({
  heartbeatMs: Ms('SSE heartbeat comment interval.'),
  pollMs: Ms('Poll fallback when no NOTIFY arrives (e.g. a pooler that drops LISTEN).'),
  webhookRetrySchedule: Type.Array(Type.Integer({ minimum: 0 }), {
    description:
      'Delays before attempt 2, 3, … (Standard Webhooks: 5s, 5m, 30m, 2h, 5h, 10h, 10h); full jitter applies.',
  }),
  webhookTimeoutMs: Ms('Timeout of one delivery attempt.'),
  webhookLeaseMs: Ms('How long a claimed delivery is owned by one dispatcher; must exceed the timeout.'),
  webhookConcurrency: Type.Integer({ minimum: 1 }),
  webhookSecretOverlapMs: Ms('How long a rotated-out secret keeps signing beside the new one.'),
  dispatcher: Type.Boolean({ description: 'Run the webhook dispatcher in this process.' }),
  webhookAllowedNetworks: Type.Array(Type.String(), {
    description:
      'CIDRs webhooks may call although private/loopback/link-local (SSRF guard); empty by default.',
  }),
  webhookDisableAfterMs: Ms(
    'An endpoint whose deliveries have failed for this long (none succeeding) is disabled.',
  ),
  bus: Type.Union([Type.Literal('none'), Type.Literal('kafka')], {
    description:
      '`kafka`: also publish every event to the Kafka cluster of TENANTRY_KAFKA_* (src/events/kafka-event-bus.ts).',
  }),
});
export type EventsConfig = Static<typeof EventsConfigSchema>;

const DEFAULT_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000].map((s) => s * 1000);

function eventBus(value: string | undefined): EventsConfig['bus'] {
  if (value === undefined || value === '' || value === 'none') return 'none';
  if (value === 'kafka') return 'kafka';
  throw ValidationError.field('/TENANTRY_EVENT_BUS', 'config.invalid', `"${value}" is not none or kafka.`);
}

export function parseEventsConfig(env: NodeJS.ProcessEnv): EventsConfig {
  const schedule = env.TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS
    ? env.TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS.split(',').map((v) =>
        nonNegativeInt('TENANTRY_WEBHOOK_RETRY_SCHEDULE_MS', v.trim(), 0),
      )
    : DEFAULT_RETRY_SCHEDULE;
  const networks = list(env.TENANTRY_WEBHOOK_ALLOWED_NETWORKS, []);
  for (const n of networks)
    if (!validNetwork(n))
      throw ValidationError.field(
        '/TENANTRY_WEBHOOK_ALLOWED_NETWORKS',
        'config.invalid',
        `"${n}" is not an IP address or CIDR.`,
      );
  const timeout = nonNegativeInt('TENANTRY_WEBHOOK_TIMEOUT_MS', env.TENANTRY_WEBHOOK_TIMEOUT_MS, 15_000);
  return {
    heartbeatMs: nonNegativeInt('TENANTRY_EVENT_HEARTBEAT_MS', env.TENANTRY_EVENT_HEARTBEAT_MS, 15_000),
    pollMs: nonNegativeInt('TENANTRY_EVENT_POLL_MS', env.TENANTRY_EVENT_POLL_MS, 2_000),
    webhookRetrySchedule: schedule,
    webhookTimeoutMs: timeout,
    webhookLeaseMs: Math.max(
      nonNegativeInt('TENANTRY_WEBHOOK_LEASE_MS', env.TENANTRY_WEBHOOK_LEASE_MS, 60_000),
      timeout + 1_000,
    ),
    webhookConcurrency: Math.max(
      1,
      nonNegativeInt('TENANTRY_WEBHOOK_CONCURRENCY', env.TENANTRY_WEBHOOK_CONCURRENCY, 32),
    ),
    webhookSecretOverlapMs:
      nonNegativeInt(
        'TENANTRY_WEBHOOK_SECRET_OVERLAP_SECONDS',
        env.TENANTRY_WEBHOOK_SECRET_OVERLAP_SECONDS,
        86_400,
      ) * 1000,
    dispatcher: env.TENANTRY_WEBHOOK_DISPATCHER !== 'off',
    bus: eventBus(env.TENANTRY_EVENT_BUS),
    webhookAllowedNetworks: networks,
    webhookDisableAfterMs:
      nonNegativeInt(
        'TENANTRY_WEBHOOK_DISABLE_AFTER_SECONDS',
        env.TENANTRY_WEBHOOK_DISABLE_AFTER_SECONDS,
        5 * 86_400,
      ) * 1000,
  };
}
