import { describe, expect, it } from 'vitest';
import { SourceShares, sourceKeyHash } from '../../src/admission/source-shares.ts';
import { NegativeUfrags } from '../../src/admission/ufrag-caches.ts';
import { tokenBits, tokenFor, ufragTokenBits } from '../../src/backends/token.ts';
import { BudgetClass } from '../../src/defs/interfaces.ts';
import { hashBytes } from '../../src/stun/hash.ts';

/** The fixed-size tables admission consults (docs/architecture.md, "Admission"). */

describe('sourceKeyHash: the fairness unit', () => {
  it('is the whole IPv4 address', () => {
    expect(sourceKeyHash('192.0.2.1')).not.toBe(sourceKeyHash('192.0.2.2'));
    expect(sourceKeyHash('192.0.2.1')).toBe(sourceKeyHash('192.0.2.1'));
  });

  it('is the IPv6 /64, however the address is compressed', () => {
    const a = sourceKeyHash('2001:db8:1:2::1');
    expect(sourceKeyHash('2001:db8:1:2:ffff:eeee:dddd:cccc')).toBe(a);
    expect(sourceKeyHash('2001:db8:1:2:0:0:0:9')).toBe(a);
    expect(sourceKeyHash('2001:db8:1:3::1')).not.toBe(a);
    // '::' inside the /64: 2001:db8::5:0:0:0:1 expands to 2001:db8:0:5:0:0:0:1 (RFC 5952 text).
    expect(sourceKeyHash('2001:db8::5:0:0:0:1')).toBe(sourceKeyHash('2001:db8:0:5::77'));
    expect(sourceKeyHash('2001:db8::5:0:0:0:1')).not.toBe(sourceKeyHash('2001:db8::6:0:0:0:1'));
    // ... and 2001:db8::5:0:0:1 to 2001:db8:0:0:5:0:0:1: the /64 is 2001:db8:0:0.
    expect(sourceKeyHash('2001:db8::5:0:0:1')).toBe(sourceKeyHash('2001:db8::'));
    expect(sourceKeyHash('::1')).toBe(sourceKeyHash('::2'));
  });

  it('counts an IPv4-mapped IPv6 address as the IPv4 address', () => {
    expect(sourceKeyHash('::ffff:192.0.2.1')).toBe(sourceKeyHash('192.0.2.1'));
  });
});

describe('SourceShares', () => {
  it('gives one source the whole budget, and K sources a K-th each', () => {
    const one = new SourceShares(64, [100, 100]);
    const s = one.slotOf('192.0.2.1', 0);
    let got = 0;
    // Asking every millisecond for a second: the activation credit (8 rounds), then the whole rate.
    for (let t = 0; t <= 1000; t++) if (one.take(s, BudgetClass.Fanout, 1, t)) got++;
    expect(got).toBeGreaterThanOrEqual(8 + 99);
    expect(got).toBeLessThanOrEqual(8 + 101);

    const many = new SourceShares(1024, [100, 100]);
    // As admission does: a source's slot is taken from right after it is looked up (a slot
    // claimed but not yet taken from still counts as idle).
    const slots = Array.from({ length: 10 }, (_, i) => {
      const slot = many.slotOf(`198.51.100.${i}`, 0);
      many.take(slot, BudgetClass.Fanout, 0, 0);
      return slot;
    });
    expect(new Set(slots).size).toBe(10);
    many.sweep(0);
    expect(many.active).toBe(10);
    const per = new Map<number, number>();
    for (let t = 1; t <= 1000; t++) {
      for (const slot of slots)
        if (many.take(slot, BudgetClass.Fanout, 1, t)) per.set(slot, (per.get(slot) ?? 0) + 1);
    }
    const total = [...per.values()].reduce((x, y) => x + y, 0);
    // The refills add up to the global rate: 100 in the second, 10 each.
    expect(total).toBeLessThanOrEqual(101);
    for (const n of per.values()) expect(n).toBeGreaterThanOrEqual(9);
  });

  it('finds a source in the same slot every time (whatever its tag; the seed is per process)', () => {
    for (const seed of [0, 1, 0x80000000, 0xdeadbeef]) {
      const t = new SourceShares(1024, [100, 100], seed);
      for (let i = 0; i < 64; i++) {
        const a = `192.0.2.${i}`;
        const first = t.slotOf(a, 0);
        t.take(first, BudgetClass.Fanout, 1, 0);
        expect(t.slotOf(a, 0), `${a} seed ${seed}`).toBe(first);
        expect(t.slotOf(a, 500), `${a} seed ${seed}`).toBe(first);
      }
      t.sweep(0);
      expect(t.active).toBe(64);
    }
  });

  it('keeps the classes apart: a fan-out flood leaves the directed share untouched', () => {
    const t = new SourceShares(64, [10, 10]);
    const s = t.slotOf('203.0.113.5', 0);
    while (t.take(s, BudgetClass.Fanout, 2, 0)) {}
    expect(t.take(s, BudgetClass.Fanout, 2, 0)).toBe(false);
    expect(t.take(s, BudgetClass.Directed, 1, 0)).toBe(true);
  });

  it('lets a new source in among flooders at once', () => {
    const t = new SourceShares(4096, [5000, 5000]);
    const flooders = Array.from({ length: 250 }, (_, i) => t.slotOf(`127.1.${i >> 8}.${i & 255}`, 0));
    for (let now = 0; now < 3000; now += 1) {
      for (const f of flooders) t.take(f, BudgetClass.Fanout, 2, now);
      if (now % 1000 === 0) t.sweep(now);
    }
    const victim = t.slotOf('127.0.0.1', 0);
    expect(t.take(victim, BudgetClass.Fanout, 2, 3000)).toBe(true);
  });

  it('never grows: spoofed sources share the fixed slots', () => {
    const t = new SourceShares(16, [100, 100]);
    const slots = new Set<number>();
    for (let i = 0; i < 10_000; i++) slots.add(t.slotOf(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, 0));
    expect(slots.size).toBeLessThanOrEqual(16);
  });
});

describe('NegativeUfrags', () => {
  it('remembers for the TTL, forgets on clear', () => {
    const n = new NegativeUfrags(1024, 10_000);
    n.add(0xdeadbeef, 0);
    expect(n.has(0xdeadbeef, 9_999)).toBe(true);
    expect(n.has(0xdeadbeef, 10_000)).toBe(false);
    n.add(0xdeadbeef, 20_000);
    n.clear();
    expect(n.has(0xdeadbeef, 20_001)).toBe(false);
  });

  it('holds a fixed number of entries whatever is added', () => {
    const n = new NegativeUfrags(256, 60_000);
    for (let i = 0; i < 100_000; i++) n.add(hashBytes(Buffer.from(`ufrag${i}`), 0, 10), 0);
    expect(n.count(1)).toBeLessThanOrEqual(256);
  });
});

describe('token bits', () => {
  it('reads the token of a ufrag from its bytes as the router does', () => {
    const token = tokenFor('jvb-0');
    const ufrag = Buffer.from(`${token}abcdefgh`);
    expect(ufragTokenBits(ufrag, 0, ufrag.length)).toBe(tokenBits(token));
    expect(ufragTokenBits(ufrag, 0, 6)).toBe(-1); // not longer than a token
    const notBase32 = Buffer.from('0189abcdefgh');
    expect(ufragTokenBits(notBase32, 0, notBase32.length)).toBe(-1);
    expect(tokenBits('ABCDEF')).toBe(-1);
  });
});
