// The eBPF maps' layout as src/fastpath/ebpf/map-layout.ts writes and reads it, against the C
// structs of src/fastpath/ebpf/ice_ingress.bpf.c: clang enforces the C file's _Static_asserts
// when it builds the object (npm run build:bpf), and this test holds the TypeScript constants to
// the same numbers, so neither side can move without the other. Then the encodings themselves,
// byte by byte.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  COUNTER,
  COUNTER_BYTES,
  clearCounter,
  encodeKey,
  encodeValue,
  FLOW_UP,
  KEY_BYTES,
  keyText,
  readCounter,
  rewrites,
  TTL_DECREMENT,
  VALUE,
  VALUE_BYTES,
} from '../../src/fastpath/ebpf/map-layout.ts';

const C = readFileSync(resolve(import.meta.dirname, '../../src/fastpath/ebpf/ice_ingress.bpf.c'), 'utf8');

/** `_Static_assert(sizeof(struct X) == N` and `_Static_assert(offsetof(struct X, f) == N` lines. */
function asserted(): { sizes: Map<string, number>; offsets: Map<string, number> } {
  const sizes = new Map<string, number>();
  const offsets = new Map<string, number>();
  for (const m of C.matchAll(/_Static_assert\(sizeof\(struct (\w+)\) == (\d+)/g))
    sizes.set(m[1]!, Number(m[2]));
  for (const m of C.matchAll(/_Static_assert\(offsetof\(struct (\w+), (\w+)\) == (\d+)/g))
    offsets.set(`${m[1]}.${m[2]}`, Number(m[3]));
  return { sizes, offsets };
}

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

describe('eBPF map layout', () => {
  it('the TypeScript offsets are the C structs’ (as the C file asserts them)', () => {
    const { sizes, offsets } = asserted();
    expect(sizes.get('flow_key')).toBe(KEY_BYTES);
    expect(sizes.get('flow_value')).toBe(VALUE_BYTES);
    expect(sizes.get('counter')).toBe(COUNTER_BYTES);
    // Every field past the first of each struct is asserted in C and matches here.
    for (const [field, at] of Object.entries(VALUE)) {
      if (at < VALUE.l3Diff) continue; // saddr … dport: packed from 0, fixed by the C field order
      expect(offsets.get(`flow_value.${snake(field)}`), field).toBe(at);
    }
    expect(offsets.get('counter.bytes')).toBe(COUNTER.bytes);
    expect(offsets.get('counter.last_ns')).toBe(COUNTER.lastNs);
    // The leading fields in declaration order.
    const value = /struct flow_value \{([^}]*)\};/.exec(C)![1]!;
    const fields = [...value.matchAll(/^\s*__(?:be|u)(?:16|32) (\w+)(?:, (\w+))?;/gm)].flatMap((m) =>
      m[2] === undefined ? [m[1]!] : [m[1]!, m[2]],
    );
    expect(fields).toEqual(Object.keys(VALUE).map(snake));
    expect(C).toMatch(/#define FLOW_UP 1\n/);
    expect(FLOW_UP).toBe(1);
  });

  it('a key is the 4-tuple as it arrives: saddr, daddr, sport, dport, network byte order', () => {
    const k = encodeKey({ address: '203.0.113.7', port: 40000 }, { address: '198.18.0.1', port: 10000 });
    expect([...k]).toEqual([203, 0, 113, 7, 198, 18, 0, 1, 0x9c, 0x40, 0x27, 0x10]);
    expect(keyText({ address: '203.0.113.7', port: 40000 }, { address: '198.18.0.1', port: 10000 })).toBe(
      '203.0.113.7:40000>198.18.0.1:10000',
    );
  });

  it('a value: the new 4-tuple, the differences, next hop, interface, slot and direction', () => {
    const flow = {
      client: { address: '203.0.113.7', port: 40000 },
      backend: { address: '10.77.2.11', port: 10000 },
      upstreamPort: 16384,
      source: '10.77.2.1',
      toBackend: { via: '10.77.2.11', dev: 'eth1' },
      toClient: { via: '198.18.0.254', dev: 'eth0' },
    };
    const idx = new Map([
      ['eth0', 2],
      ['eth1', 7],
    ]);
    const [up, down] = rewrites(flow, { address: '198.18.0.1', port: 10000 }, (d) => idx.get(d) ?? 0, {
      up: 10,
      down: 11,
    });
    expect(up).toMatchObject({
      from: flow.client,
      to: { address: '198.18.0.1', port: 10000 },
      newFrom: { address: '10.77.2.1', port: 16384 },
      newTo: flow.backend,
      nexthop: '10.77.2.11',
      ifindex: 7,
      slot: 10,
      up: true,
    });
    expect(down).toMatchObject({
      from: flow.backend,
      to: { address: '10.77.2.1', port: 16384 },
      newFrom: { address: '198.18.0.1', port: 10000 },
      newTo: flow.client,
      nexthop: '198.18.0.254',
      ifindex: 2,
      slot: 11,
      up: false,
    });
    const v = encodeValue(up, new Uint8Array(VALUE_BYTES), true);
    const dv = new DataView(v.buffer);
    expect([...v.subarray(0, 12)]).toEqual([10, 77, 2, 1, 10, 77, 2, 11, 0x40, 0x00, 0x27, 0x10]);
    expect([...v.subarray(VALUE.nexthop, VALUE.nexthop + 4)]).toEqual([10, 77, 2, 11]);
    expect(dv.getUint32(VALUE.ifindex, true)).toBe(7);
    expect(dv.getUint32(VALUE.slot, true)).toBe(10);
    expect(dv.getUint32(VALUE.flags, true)).toBe(FLOW_UP);
    // The differences fit 16 bits (folded) and the header's is the pseudo-header's plus the TTL's.
    const l3 = dv.getUint32(VALUE.l3Diff, true);
    const addr = dv.getUint32(VALUE.addrDiff, true);
    expect(l3).toBeLessThan(0x10000);
    expect(addr).toBeLessThan(0x10000);
    const swap = (x: number): number => ((x & 0xff) << 8) | (x >> 8);
    let s = swap(addr) + TTL_DECREMENT;
    s = (s & 0xffff) + (s >>> 16);
    expect(swap(l3)).toBe(s);
    // Downstream on the listening port from the backend's 10000: only dport changes, a difference.
    const dvDown = new DataView(encodeValue(down, new Uint8Array(VALUE_BYTES), true).buffer);
    expect(dvDown.getUint32(VALUE.portDiff, true)).not.toBe(0);
    expect(dvDown.getUint32(VALUE.flags, true)).toBe(0);
    // A direction whose ports stay as they are has no ports' difference (the program skips it).
    const same = encodeValue(
      { ...up, newFrom: { ...up.newFrom, port: 40000 } },
      new Uint8Array(VALUE_BYTES),
      true,
    );
    expect(new DataView(same.buffer).getUint32(VALUE.portDiff, true)).toBe(0);
  });

  it('counters: 64 bytes per slot, 64-bit fields, read whole; cleared for the next session', () => {
    const mem = new ArrayBuffer(4 * COUNTER_BYTES);
    const u32 = new Uint32Array(mem);
    const dv = new DataView(mem);
    dv.setBigUint64(2 * COUNTER_BYTES + COUNTER.packets, 5_000_000_000n, true);
    dv.setBigUint64(2 * COUNTER_BYTES + COUNTER.bytes, 123n, true);
    dv.setBigUint64(2 * COUNTER_BYTES + COUNTER.lastNs, 987_654_321_000n, true);
    dv.setBigUint64(3 * COUNTER_BYTES + COUNTER.packets, 1n, true);
    const r = readCounter(u32, 2, { packets: 0, bytes: 0, lastNs: 0 }, true);
    expect(r).toEqual({ packets: 5_000_000_000, bytes: 123, lastNs: 987_654_321_000 });
    clearCounter(u32, 2);
    expect(readCounter(u32, 2, r, true)).toEqual({ packets: 0, bytes: 0, lastNs: 0 });
    expect(readCounter(u32, 3, r, true).packets).toBe(1);
  });
});
