// Real IPv4/UDP datagram bytes and checksums computed from scratch in network byte order
// (RFC 1071, RFC 768), independent of the code under test: the checksum tests of both kernel
// paths (checksum.test.ts: nftables; ebpf-checksum.test.ts) build datagrams and judge results
// with these.
import type { KernelFlow, NextHop } from '../../src/fastpath/nft-script.ts';

/** RFC 1071 sum of a byte range, folded. */
export function sum(b: Uint8Array, from = 0, to = b.length, start = 0): number {
  let s = start;
  for (let i = from; i < to; i += 2) s += (b[i]! << 8) | (i + 1 < to ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
export const neg = (a: number): number => ~a & 0xffff;
export const ip4 = (a: string): number[] => a.split('.').map(Number);
export const u16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;
export const put16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v >> 8;
  b[o + 1] = v & 0xff;
};
export const addrText = (b: Uint8Array, o: number): string => [...b.subarray(o, o + 4)].join('.');

/** The UDP pseudo-header's sum (RFC 768) for the datagram as it is now. */
export function pseudoSum(d: Uint8Array): number {
  const p = new Uint8Array(12);
  p.set(d.subarray(12, 20), 0);
  p[9] = 17;
  p.set(d.subarray(24, 26), 10);
  return sum(p);
}

/**
 * An IPv4/UDP datagram (no options) with valid checksums; `partial`: the UDP field is the
 * pseudo-header seed (CHECKSUM_PARTIAL, to be completed on transmit).
 */
export function datagram(
  src: [string, number],
  dst: [string, number],
  payload: number[],
  partial: boolean,
  ttl = 63,
): Uint8Array {
  const d = new Uint8Array(28 + payload.length);
  d.set([0x45, 0xb8], 0); // DSCP EF, as WebRTC audio may carry
  put16(d, 2, d.length);
  put16(d, 4, 0x1c2d);
  d.set([0x40, 0, ttl, 17], 6);
  d.set(ip4(src[0]), 12);
  d.set(ip4(dst[0]), 16);
  put16(d, 10, neg(sum(d, 0, 20)));
  put16(d, 20, src[1]);
  put16(d, 22, dst[1]);
  put16(d, 24, 8 + payload.length);
  d.set(payload, 28);
  if (partial) put16(d, 26, pseudoSum(d));
  else put16(d, 26, neg(sum(d, 20, d.length, pseudoSum(d))) || 0xffff);
  return d;
}

/** The device completing a CHECKSUM_PARTIAL datagram: the sum over the UDP part, seed included. */
export function complete(d: Uint8Array): void {
  put16(d, 26, neg(sum(d, 20, d.length)) || 0xffff);
}

export function valid(d: Uint8Array): { ip: boolean; udp: boolean } {
  return { ip: sum(d, 0, 20) === 0xffff, udp: sum(d, 20, d.length, pseudoSum(d)) === 0xffff };
}

/** A small deterministic generator (xorshift32): the same flows on every run. */
export function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}
export const octet = (r: () => number): number => Math.floor(r() * 256);
export const addr = (r: () => number): string => [octet(r), octet(r), octet(r), octet(r)].join('.');

/**
 * A random flow for test `i` of a run: every other one's backend listens on `listenPort` (JVB's
 * case: one port rewrite per direction), the rest on a random port (both ports rewritten).
 */
export function randomFlow(r: () => number, i: number, listenPort: number, hop: NextHop): KernelFlow {
  return {
    client: { address: addr(r), port: 1 + Math.floor(r() * 65535) },
    backend: { address: addr(r), port: i % 2 === 0 ? listenPort : 1 + Math.floor(r() * 65535) },
    upstreamPort: 16384 + Math.floor(r() * 16384),
    source: addr(r),
    toBackend: hop,
    toClient: hop,
  };
}

/** 1-60 random bytes that start like RTP (0x80: not STUN, RFC 7983). */
export function rtpPayload(r: () => number): number[] {
  const payload = Array.from({ length: 1 + Math.floor(r() * 60) }, () => octet(r));
  payload[0] = 0x80;
  return payload;
}

/** A client behind a NAT and a JVB on the listening port 10000, reached through `hop`. */
export function natFlow(hop: NextHop): KernelFlow {
  return {
    client: { address: '203.0.113.7', port: 40000 },
    backend: { address: '10.77.2.11', port: 10000 },
    upstreamPort: 16384,
    source: '10.77.2.1',
    toBackend: hop,
    toClient: hop,
  };
}
