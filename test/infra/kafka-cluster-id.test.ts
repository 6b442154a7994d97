import { describe, expect, it } from 'vitest';
import { kafkaClusterId } from './kafka-broker.js';

describe('the test broker cluster id', () => {
  it('never starts with "-", which kafka-storage format would read as an option', () => {
    // 0xf8… encodes to a leading "-" in base64url: the first candidate is refused, the second taken.
    const candidates = [Buffer.alloc(16, 0xf8), Buffer.alloc(16, 0x01)];
    expect(Buffer.alloc(16, 0xf8).toString('base64url').startsWith('-')).toBe(true);
    expect(kafkaClusterId(() => candidates.shift()!)).toBe(Buffer.alloc(16, 0x01).toString('base64url'));
    for (let i = 0; i < 20_000; i++) {
      const id = kafkaClusterId();
      expect(id).toHaveLength(22);
      expect(id.startsWith('-')).toBe(false);
    }
  });
});
