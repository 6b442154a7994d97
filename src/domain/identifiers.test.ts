import { describe, expect, it } from 'vitest';
import { diff } from './diff.js';
import { deploymentSlug, isLabel, isUuid, kafkaTopicName, newObjectId, tenantSlug } from './identifiers.js';
import { nextState } from './lifecycle.js';

describe('identifiers', () => {
  it('derives seed-000 slugs', () => {
    expect(tenantSlug({ prefix: 'circlek', region: 'eu', environmentType: 'uat', qualifier: 'dev' })).toBe(
      'circlek-eu-uat-dev',
    );
    expect(tenantSlug({ prefix: 'circlek', region: 'eu', environmentType: 'prod' })).toBe('circlek-eu-prod');
    expect(deploymentSlug('circlek-eu-prod', 'store', 'pl')).toBe('circlek-eu-prod-store-pl');
    expect(deploymentSlug('circlek-eu-prod', 'internal-abs')).toBe('circlek-eu-prod-internal-abs');
  });

  it('names Kafka topics exactly as seed 000', () => {
    expect(
      kafkaTopicName('f1a2b3c4-d5e6-4f7a-8b9c-0d1e2f3a4b5c', {
        domain: 'supply-chain',
        subdomain: 'transactions',
        event: 'order-proposals',
        version: 'v1',
        access: 'pub',
      }),
    ).toBe('f1a2b3c4-d5e6-4f7a-8b9c-0d1e2f3a4b5c.supply-chain.transactions.order-proposals.v1.pub');
  });

  it('gives new objects UUIDv7 keys, each after the one before in the order PostgreSQL sorts uuids', () => {
    const ids = Array.from({ length: 5000 }, newObjectId);
    for (const id of ids) {
      expect(isUuid(id)).toBe(true);
      expect(id[14]).toBe('7');
    }
    // PostgreSQL compares uuids byte by byte: the order of their lowercase hexadecimal spelling.
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('accepts seed-000 UUIDs that are well formed and refuses the malformed ones', () => {
    for (const ok of [
      '20546a6f-d08c-4c8d-8121-50c01f4be6b0',
      'c3d4e5f6-a7b8-4c9d-0e1f-2a3b4c5d6e7f',
      'DBA0F5E5-EA44-48CF-8320-46A1E5908BBF',
    ])
      expect(isUuid(ok)).toBe(true);
    for (const bad of [
      '9d0746f1-cace-537b-9950-b158f30bgb0e',
      'e5f6g7h8-c9d0-5e2f-3a4b-5c6d7e8f9a0b',
      'afa6e0d2-b9ce-426a-8849-a047e29afdf',
      'a8fc694g73h0a',
      '00000000-0000-0000-0000-000000000000',
      '',
    ])
      expect(isUuid(bad)).toBe(false);
  });

  it('applies DNS label rules', () => {
    for (const ok of ['circlek-eu-prod-store-pl', 'a', 'x1-2']) expect(isLabel(ok)).toBe(true);
    for (const bad of ['Circlek', '-a', 'a-', 'a_b', 'a.b', 'ä', 'a'.repeat(64), ''])
      expect(isLabel(bad)).toBe(false);
  });
});

describe('lifecycle', () => {
  it('allows only the designed transitions', () => {
    expect(nextState('Draft', 'activate')).toBe('Active');
    expect(nextState('Active', 'suspend')).toBe('Suspended');
    expect(nextState('Suspended', 'resume')).toBe('Active');
    expect(nextState('Suspended', 'archive')).toBe('Archived');
    expect(nextState('Archived', 'delete')).toBe('Deleted');
    expect(nextState('Active', 'delete')).toBeUndefined();
    expect(nextState('Archived', 'resume')).toBeUndefined();
    expect(nextState('Deleted', 'activate')).toBeUndefined();
  });
});

describe('diff', () => {
  it('reports changed leaves as JSON pointers with old and new values', () => {
    expect(diff({ a: 1, b: { c: 'x' } }, { a: 1, b: { c: 'y' }, d: true })).toEqual([
      { op: 'replace', path: '/b/c', from: 'x', to: 'y' },
      { op: 'add', path: '/d', to: true },
    ]);
    expect(diff({ a: [1, 2] }, { a: [1, 2] })).toEqual([]);
  });
});
