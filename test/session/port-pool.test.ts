import { describe, expect, it } from 'vitest';
import { PortPool } from '../../src/session/port-pool.ts';

describe('PortPool', () => {
  it('hands out every port of the range once before any reuse', () => {
    const pool = new PortPool(30000, 30003, 60_000);
    const got = [pool.acquire(0), pool.acquire(0), pool.acquire(0), pool.acquire(0)];
    expect(got.sort()).toEqual([30000, 30001, 30002, 30003]);
    expect(pool.acquire(0)).toBe(-1);
  });

  it('does not reuse a port within the quarantine, and reuses the longest-rested port first', () => {
    const pool = new PortPool(30000, 30002, 60_000);
    const a = pool.acquire(0);
    const b = pool.acquire(0);
    const c = pool.acquire(0);
    pool.release(b, 1_000);
    pool.release(a, 2_000);
    expect(pool.acquire(30_000)).toBe(-1); // b rests until 61 000
    expect(pool.acquire(60_999)).toBe(-1);
    expect(pool.acquire(61_000)).toBe(b);
    expect(pool.acquire(61_500)).toBe(-1); // a rests until 62 000
    expect(pool.acquire(62_000)).toBe(a);
    pool.release(c, 62_000);
    expect(pool.available).toBe(1);
  });

  it('ignores ports outside its range', () => {
    const pool = new PortPool(30000, 30000, 0);
    expect(pool.acquire(0)).toBe(30000);
    pool.release(12345, 0);
    expect(pool.available).toBe(0);
    pool.release(30000, 0);
    expect(pool.acquire(0)).toBe(30000);
  });
});

describe('PortPool: quarantine only after a success', () => {
  it('reuses at once a port on which no backend answered, before any rested port', () => {
    const pool = new PortPool(30000, 30002, 60_000);
    const a = pool.acquire(0);
    const b = pool.acquire(0);
    pool.release(a, 1_000, true); // answered: rests until 61 000
    pool.release(b, 1_000, false); // never answered: free now
    expect(pool.acquire(1_000)).toBe(b);
    expect(pool.acquire(1_000)).toBe(30002);
    expect(pool.acquire(1_000)).toBe(-1); // only a is left, resting
    expect(pool.acquire(61_000)).toBe(a);
  });

  it('keeps the range whole under a flood of unanswered flows', () => {
    const pool = new PortPool(30000, 30099, 60_000);
    for (let i = 0; i < 100_000; i++) {
      const p = pool.acquire(i);
      expect(p).toBeGreaterThanOrEqual(30000);
      pool.release(p, i, false);
    }
    expect(pool.available).toBe(100);
  });
});
