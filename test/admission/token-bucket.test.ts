import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/admission/token-bucket.ts';

describe('TokenBucket', () => {
  it('allows a burst, then refills at the rate', () => {
    const b = new TokenBucket(10, 10, 0);
    let taken = 0;
    for (let i = 0; i < 100; i++) if (b.take(0)) taken++;
    expect(taken).toBe(10);
    expect(b.take(50)).toBe(false); // 0.5 token after 50 ms
    expect(b.take(100)).toBe(true); // 1 token after 100 ms
    expect(b.take(100)).toBe(false);
  });

  it('takes all of n or nothing', () => {
    const b = new TokenBucket(5, 5, 0);
    expect(b.take(0, 6)).toBe(false);
    expect(b.take(0, 5)).toBe(true);
    expect(b.take(0, 1)).toBe(false);
  });
});
