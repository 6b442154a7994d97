import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { nextAttemptDelay, parseRetryAfter } from './retry-schedule.js';
import { signatureHeader } from './sign-webhook.js';
import { applySecret, generateWebhookSecret, secretRef, signingSecrets } from './webhook-secrets.js';

describe('retry schedule', () => {
  it('draws full jitter under the ceiling, honours Retry-After as a floor, and ends', () => {
    const schedule = [1000, 60_000];
    expect(nextAttemptDelay(1, schedule, null, () => 0)).toBe(0);
    expect(nextAttemptDelay(1, schedule, null, () => 0.999)).toBe(999);
    expect(nextAttemptDelay(2, schedule, null, () => 0.5)).toBe(30_000);
    expect(nextAttemptDelay(1, schedule, 5_000, () => 0.5)).toBe(5_000);
    expect(nextAttemptDelay(3, schedule, null)).toBeNull();
  });
  it('parses Retry-After seconds and dates', () => {
    expect(parseRetryAfter('120')).toBe(120_000);
    expect(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())).toBeGreaterThan(8_000);
    expect(parseRetryAfter('soon')).toBeNull();
    expect(parseRetryAfter(null)).toBeNull();
    expect(parseRetryAfter('999999999')).toBe(86_400_000);
  });
});

describe('secrets and signatures', () => {
  it('signs so that the standardwebhooks package verifies, with any of several secrets', () => {
    const a = generateWebhookSecret();
    const b = generateWebhookSecret();
    const ts = Math.floor(Date.now() / 1000);
    const body = '{"hello":"world"}';
    const headers = {
      'webhook-id': 'msg_1',
      'webhook-timestamp': String(ts),
      'webhook-signature': signatureHeader([a, b], 'msg_1', ts, body),
    };
    expect(new Webhook(a).verify(body, headers)).toEqual({ hello: 'world' });
    expect(new Webhook(b).verify(body, headers)).toEqual({ hello: 'world' });
    expect(() => new Webhook(generateWebhookSecret()).verify(body, headers)).toThrow();
    expect(() => new Webhook(a).verify(`${body} `, headers)).toThrow();
  });

  it('generates once, keeps on re-apply, rotates with an overlap window, refuses a foreign ref', () => {
    const now = new Date('2026-01-01T00:00:00Z');
    const created = applySecret(null, undefined, now, 3_600_000);
    if (created.kind !== 'ok' || !created.generated) throw new Error('expected a generated secret');
    expect(created.ref).toBe(secretRef(created.generated));
    const kept = applySecret(created.secrets, created.ref, now, 3_600_000);
    expect(kept).toMatchObject({ kind: 'ok', ref: created.ref });
    expect(kept.kind === 'ok' && kept.generated).toBeFalsy();
    const next = generateWebhookSecret();
    const rotated = applySecret(created.secrets, next, now, 3_600_000);
    if (rotated.kind !== 'ok') throw new Error('expected ok');
    expect(signingSecrets(rotated.secrets, now)).toEqual([next, created.generated]);
    expect(signingSecrets(rotated.secrets, new Date(now.getTime() + 3_600_001))).toEqual([next]);
    expect(applySecret(created.secrets, 'ref:sha256:0000000000000000', now, 1)).toEqual({
      kind: 'unknown_ref',
    });
  });
});
