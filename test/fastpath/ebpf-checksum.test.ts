// The eBPF program's rewrite (src/fastpath/ebpf/ice_ingress.bpf.c) leaves valid checksums. The
// program's steps are applied here to real IPv4/UDP bytes exactly as the kernel executes them on
// a little-endian machine (x86-64, arm64): the new fields stored, the TTL decremented, then
//   csum_replace_by_diff(IP check, l3_diff)   (in the program, as bpf_l3_csum_replace(…, 0) runs it)
//   bpf_l4_csum_replace(UDP check, 0, addr_diff, PSEUDO_HDR | MARK_MANGLED_0)
//   bpf_l4_csum_replace(UDP check, 0, port_diff, MARK_MANGLED_0)   (when port_diff ≠ 0)
// with the differences taken from the map value's bytes as the program reads them (host-order
// u32), the 16-bit fields read in host order as the kernel's csum code does (net/core/filter.c,
// net/core/utils.c inet_proto_csum_replace_by_diff; include/net/checksum.h). For each of the
// skb's checksum states: NONE (a checksum in the field), PARTIAL (the field holds the
// pseudo-header seed, completed on transmit) and COMPLETE (skb->csum, the sum of the received
// bytes, must follow). The result is checked by recomputing everything from scratch in network
// byte order (RFC 1071, RFC 768), independent of both. The namespace suite checks the same with
// the real kernel.
import { describe, expect, it } from 'vitest';
import {
  encodeValue,
  hostDiff,
  type Rewrite,
  rewrites,
  VALUE,
  VALUE_BYTES,
  wireDiff,
} from '../../src/fastpath/ebpf/map-layout.ts';
import {
  addrText,
  complete,
  datagram,
  natFlow,
  randomFlow,
  rng,
  rtpPayload,
  u16,
  valid,
} from './ipv4-udp.ts';

type State = 'none' | 'partial' | 'complete';

// ---- the kernel's csum arithmetic, 32-bit __wsum in host (little-endian) order -------------------
const csumAdd = (a: number, b: number): number => {
  const s = (a >>> 0) + (b >>> 0);
  return (s + (s > 0xffffffff ? 1 : 0)) >>> 0;
};
const csumSub = (a: number, b: number): number => csumAdd(a, ~b >>> 0);
/** csum_fold: fold 32 → 16 bits, then complement. */
const csumFold = (a: number): number => {
  let s = (a & 0xffff) + (a >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
};
const u16le = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const put16le = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v & 0xff;
  b[o + 1] = v >> 8;
};

/** The sum the kernel keeps for CHECKSUM_COMPLETE: all received bytes, host-order words, unfolded. */
function completeSum(d: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < d.length; i += 2) s = csumAdd(s, i + 1 < d.length ? u16le(d, i) : d[i]!);
  return s;
}

interface Skb {
  d: Uint8Array;
  state: State;
  /** skb->csum for CHECKSUM_COMPLETE. */
  csum: number;
}

/** csum_replace_by_diff, as the program's own copy of it and bpf_l3_csum_replace(skb, off, 0, diff, 0) run it. */
function l3Replace(skb: Skb, off: number, diff: number): void {
  put16le(skb.d, off, csumFold(csumAdd(diff, ~u16le(skb.d, off) >>> 0)));
}

/** bpf_l4_csum_replace(skb, off, 0, diff, flags) with BPF_F_MARK_MANGLED_0, as net/core/filter.c. */
function l4Replace(skb: Skb, off: number, diff: number, pseudo: boolean): void {
  const old = u16le(skb.d, off);
  if (old === 0) return; // MARK_MANGLED_0: a null checksum is left untouched
  if (skb.state !== 'partial') {
    put16le(skb.d, off, csumFold(csumAdd(diff, ~old >>> 0)));
    if (skb.state === 'complete' && pseudo) skb.csum = ~csumSub(diff, skb.csum) >>> 0;
  } else if (pseudo) {
    put16le(skb.d, off, ~csumFold(csumAdd(diff, old)) & 0xffff);
  }
  if (u16le(skb.d, off) === 0) put16le(skb.d, off, 0xffff); // CSUM_MANGLED_0
}

/** The program, from the lookup on: the value's bytes are read as the program reads them. */
function program(skb: Skb, value: Uint8Array): void {
  const v = new DataView(value.buffer, value.byteOffset, VALUE_BYTES);
  const d = skb.d;
  d.set(value.subarray(VALUE.saddr, VALUE.saddr + 8), 12); // saddr, daddr
  d[8] = d[8]! - 1; // ttl--
  d.set(value.subarray(VALUE.sport, VALUE.sport + 4), 20); // sport, dport
  l3Replace(skb, 10, v.getUint32(VALUE.l3Diff, true));
  l4Replace(skb, 26, v.getUint32(VALUE.addrDiff, true), true);
  const ports = v.getUint32(VALUE.portDiff, true);
  if (ports !== 0) l4Replace(skb, 26, ports, false);
}

/** Two 32-bit one's-complement sums are the same number (0 and 0xffff… are both zero). */
const sameSum = (a: number, b: number): boolean => csumFold(a) === csumFold(b);

const LISTEN = { address: '198.18.0.1', port: 10000 };
const hop = { via: '10.77.0.1', dev: 'eth1' };
/** A client behind a NAT and a JVB on the listening port. */
const FLOW = natFlow(hop);

/** Runs one direction's datagram through the program; returns what leaves the device. */
function forward(rw: Rewrite, payload: number[], state: State, ttl = 64): { out: Uint8Array; skb: Skb } {
  const d = datagram(
    [rw.from.address, rw.from.port],
    [rw.to.address, rw.to.port],
    payload,
    state === 'partial',
    ttl,
  );
  const skb: Skb = { d, state, csum: completeSum(d) };
  program(skb, encodeValue(rw, new Uint8Array(VALUE_BYTES), true));
  if (state === 'partial') complete(d);
  return { out: d, skb };
}

describe('checksums after the eBPF program rewrites (little-endian kernel arithmetic)', () => {
  for (const state of ['none', 'partial', 'complete'] as const) {
    it(`2000 random flows, both directions, backends on the listening port and off it (CHECKSUM_${state.toUpperCase()})`, () => {
      const r = rng(state === 'none' ? 11 : state === 'partial' ? 7 : 5);
      for (let i = 0; i < 2000; i++) {
        const f = randomFlow(r, i, LISTEN.port, hop);
        const payload = rtpPayload(r);
        const ttl = 2 + Math.floor(r() * 254);
        const [up, down] = rewrites(f, LISTEN, () => 3, { up: 0, down: 1 });
        for (const rw of [up, down]) {
          const { out, skb } = forward(rw, payload, state, ttl);
          // Addressed as Node's sockets would have sent it, one hop further.
          expect([addrText(out, 12), u16(out, 20), addrText(out, 16), u16(out, 22)]).toEqual([
            rw.newFrom.address,
            rw.newFrom.port,
            rw.newTo.address,
            rw.newTo.port,
          ]);
          expect(out[8]).toBe(ttl - 1);
          expect(valid(out)).toEqual({ ip: true, udp: true });
          // A received datagram's skb->csum still sums what the skb now holds.
          if (state === 'complete') expect(sameSum(skb.csum, completeSum(out))).toBe(true);
        }
      }
    });
  }

  it('a UDP checksum that the update brings to zero is written as 0xffff, never 0 ("none", RFC 768)', () => {
    const [up] = rewrites(FLOW, LISTEN, () => 3, { up: 0, down: 1 });
    // Over every value of one payload word, exactly one makes the rewritten datagram's sum zero.
    const zeroes: number[] = [];
    for (let w = 0; w < 0x10000; w++) {
      const { out } = forward(up, [0x80, 0, w >> 8, w & 0xff], 'none');
      const field = u16(out, 26);
      if (field === 0 || field === 0xffff) zeroes.push(field);
      if (field === 0xffff) expect(valid(out)).toEqual({ ip: true, udp: true });
    }
    expect(zeroes).toEqual([0xffff]);
  });

  it('the check can fail: no TTL difference in l3_diff, or the ports difference left out, breaks the checksums', () => {
    const [up] = rewrites(FLOW, LISTEN, () => 3, { up: 0, down: 1 });
    const good = forward(up, [0x80, 9, 9], 'none').out;
    expect(valid(good)).toEqual({ ip: true, udp: true });

    const value = encodeValue(up, new Uint8Array(VALUE_BYTES), true);
    const v = new DataView(value.buffer);
    v.setUint32(VALUE.l3Diff, v.getUint32(VALUE.addrDiff, true), true); // the TTL's part missing
    v.setUint32(VALUE.portDiff, 0, true); // the ports' part missing
    const d = datagram(['203.0.113.7', 40000], [LISTEN.address, LISTEN.port], [0x80, 9, 9], false);
    program({ d, state: 'none', csum: 0 }, value);
    expect(valid(d)).toEqual({ ip: false, udp: false });
  });

  it('wireDiff/hostDiff: Σ~old + Σnew, folded; swapped for a little-endian kernel', () => {
    // 0x0001 → 0x0004: ~1 + 4 = 0xfffe + 4 ≡ 0x0003.
    expect(wireDiff([0x0001], [0x0004])).toBe(0x0003);
    expect(hostDiff(0x1234, true)).toBe(0x3412);
    expect(hostDiff(0x1234, false)).toBe(0x1234);
  });
});
