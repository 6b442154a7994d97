import { describe, expect, it } from 'vitest';
import { assignWaves, budgetSpent, windowEnd } from './promotion-waves.js';
import { bumpOf, judgeRelease, type ReleaseInterfaces } from './release-compatibility.js';

const v1: ReleaseInterfaces = {
  produces: {
    events: [
      {
        type: 'order.placed',
        version: 1,
        fields: { orderId: { type: 'string', required: true }, total: { type: 'number' } },
      },
    ],
    apis: [{ name: 'orders', version: 1, operations: ['GET /orders', 'POST /orders'] }],
  },
};
const clone = (x: ReleaseInterfaces): ReleaseInterfaces => structuredClone(x);

describe('release compatibility', () => {
  it('bumps: patch, minor, major, pre-releases', () => {
    expect(bumpOf('1.2.3', '1.2.4')).toBe('patch');
    expect(bumpOf('1.2.3', '1.3.0')).toBe('minor');
    expect(bumpOf('1.2.3', '2.0.0')).toBe('major');
    expect(bumpOf('1.2.3', '2.0.0-rc.1')).toBe('major');
  });

  it('a patch that only changes artifacts passes', () => {
    expect(
      judgeRelease({ version: '1.0.0', spec: v1 }, { version: '1.0.1', spec: clone(v1) }).refused,
    ).toEqual([]);
  });

  it('removing a field of a published event is refused whatever the bump, naming the field', () => {
    const next = clone(v1);
    delete next.produces!.events![0]!.fields.total;
    for (const version of ['1.0.1', '1.1.0', '2.0.0']) {
      const v = judgeRelease({ version: '1.0.0', spec: v1 }, { version, spec: next });
      expect(v.refused).toHaveLength(1);
      expect(v.refused[0]).toMatchObject({
        code: 'release.event_field_removed',
        pointer: '/spec/produces/events/0/fields',
      });
      expect(v.refused[0]!.message).toContain('"total"');
      expect(v.refused[0]!.message).toContain('order.placed v2');
    }
  });

  it('a type change or a required field made optional is refused', () => {
    const next = clone(v1);
    next.produces!.events![0]!.fields.total = { type: 'string' };
    next.produces!.events![0]!.fields.orderId = { type: 'string' };
    const v = judgeRelease({ version: '1.0.0', spec: v1 }, { version: '2.0.0', spec: next });
    expect(v.refused.map((f) => f.code)).toEqual([
      'release.event_field_changed',
      'release.event_field_changed',
    ]);
  });

  it('additions need a minor; a new event version beside the old is fine', () => {
    const next = clone(v1);
    next.produces!.events![0]!.fields.currency = { type: 'string' };
    next.produces!.events!.push({ type: 'order.placed', version: 2, fields: {} });
    next.produces!.apis![0]!.operations.push('DELETE /orders/{id}');
    const patch = judgeRelease({ version: '1.0.0', spec: v1 }, { version: '1.0.1', spec: next });
    expect(patch.required).toBe('minor');
    expect(patch.refused.map((f) => f.code).sort()).toEqual([
      'release.api_operation_added',
      'release.event_added',
      'release.event_field_added',
    ]);
    expect(judgeRelease({ version: '1.0.0', spec: v1 }, { version: '1.1.0', spec: next }).refused).toEqual(
      [],
    );
  });

  it('dropping an event version or an API operation needs a major', () => {
    const next = clone(v1);
    next.produces!.events = [];
    next.produces!.apis![0]!.operations = ['GET /orders'];
    const minor = judgeRelease({ version: '1.0.0', spec: v1 }, { version: '1.1.0', spec: next });
    expect(minor.required).toBe('major');
    expect(minor.refused.map((f) => f.code).sort()).toEqual([
      'release.api_operation_removed',
      'release.event_removed',
    ]);
    expect(judgeRelease({ version: '1.0.0', spec: v1 }, { version: '2.0.0', spec: next }).refused).toEqual(
      [],
    );
  });
});

describe('promotion waves', () => {
  const t = (id: string, labels: Record<string, string> = {}, plan: string | null = null, region = 'eu') => ({
    id,
    region,
    plan,
    labels,
  });
  it('first matching wave, unmatched in the last', () => {
    const waves = [
      { name: 'canary', selector: { earlyAccess: true } },
      { name: 'gold', selector: { plans: ['gold'] } },
      { name: 'rest' },
    ];
    const m = assignWaves(waves, [
      t('a', { 'tenantry.dev/early-access': 'true' }, 'gold'),
      t('b', {}, 'gold'),
      t('c', {}, 'free'),
    ]);
    expect([...m.entries()]).toEqual([
      ['a', 0],
      ['b', 1],
      ['c', 2],
    ]);
    expect([...assignWaves([{ name: 'eu', selector: { regions: ['us'] } }], [t('x')]).values()]).toEqual([0]);
  });
  it('budget: default none, count, percent', () => {
    expect(budgetSpent(undefined, 0, 10)).toBe(false);
    expect(budgetSpent(undefined, 1, 10)).toBe(true);
    expect(budgetSpent({ maxFailures: 1 }, 1, 10)).toBe(false);
    expect(budgetSpent({ maxFailures: 1 }, 2, 10)).toBe(true);
    expect(budgetSpent({ maxFailurePercent: 10 }, 1, 10)).toBe(false);
    expect(budgetSpent({ maxFailurePercent: 10 }, 2, 10)).toBe(true);
  });
  it('window in force: the latest end of overlapping windows', () => {
    expect(
      windowEnd(
        [
          { startsAt: 0, endsAt: 10 },
          { startsAt: 5, endsAt: 20 },
        ],
        7,
      ),
    ).toBe(20);
    expect(windowEnd([{ startsAt: 0, endsAt: 10 }], 10)).toBeUndefined();
  });
});
