import { endianness } from 'node:os';
import { ipv4Words, onesSum } from '../checksum.ts';
import type { Endpoint, KernelFlow } from '../nft-script.ts';

/**
 * The bytes of the eBPF kernel path's maps (src/fastpath/ebpf/ice_ingress.bpf.c, whose
 * _Static_asserts fix the same offsets; test/fastpath/ebpf-layout.test.ts compares the two).
 * Pure: flows in, bytes out, and counters out of the mapped array.
 *
 * `ice_flows` (hash): one entry per session and direction, keyed by the UDP 4-tuple the datagram
 * arrives with — client → listening address upstream, backend → our upstream socket downstream —
 * so one lookup serves both directions and nothing not addressed to us matches (as the nftables
 * path's verdict map: docs/fast-path.md). `ice_counts` (array, mmapable): one 64-byte counter per
 * session and direction, kept across the session's moves.
 */

export const KEY_BYTES = 12;
export const VALUE_BYTES = 40;
export const COUNTER_BYTES = 64;

/** Byte offsets of `struct flow_value` and `struct counter` (the C _Static_asserts). */
export const VALUE = {
  saddr: 0,
  daddr: 4,
  sport: 8,
  dport: 10,
  l3Diff: 12,
  addrDiff: 16,
  portDiff: 20,
  nexthop: 24,
  ifindex: 28,
  slot: 32,
  flags: 36,
} as const;
export const COUNTER = { packets: 0, bytes: 8, lastNs: 16 } as const;

/** flow_value.flags: the client → backend direction. */
export const FLOW_UP = 1;

/** The map names in the object, and its program's. */
export const FLOWS_MAP = 'ice_flows';
export const COUNTS_MAP = 'ice_counts';
export const PROGRAM = 'ice_ingress';

const LITTLE = endianness() === 'LE';

function putAddr(b: Uint8Array, at: number, address: string): void {
  const [hi, lo] = ipv4Words(address);
  b[at] = hi >> 8;
  b[at + 1] = hi & 0xff;
  b[at + 2] = lo >> 8;
  b[at + 3] = lo & 0xff;
}

function putPort(b: Uint8Array, at: number, port: number): void {
  b[at] = port >> 8;
  b[at + 1] = port & 0xff;
}

/** A 4-tuple as the program builds its key: saddr, daddr, sport, dport, network byte order. */
export function encodeKey(src: Endpoint, dst: Endpoint, out = new Uint8Array(KEY_BYTES)): Uint8Array {
  putAddr(out, 0, src.address);
  putAddr(out, 4, dst.address);
  putPort(out, 8, src.port);
  putPort(out, 10, dst.port);
  return out;
}

/** The key as text, for userspace's own index of who owns which entry. */
export const keyText = (src: Endpoint, dst: Endpoint): string =>
  `${src.address}:${src.port}>${dst.address}:${dst.port}`;

const neg = (w: number): number => ~w & 0xffff;
const words = (...addresses: string[]): number[] => addresses.flatMap((a) => ipv4Words(a));

/**
 * The one's-complement difference (RFC 1624: Σ ~old + Σ new, RFC 1071 arithmetic) of the
 * 16-bit words `from` → `to`, folded, as the big-endian words read off the wire.
 */
export function wireDiff(from: readonly number[], to: readonly number[]): number {
  return onesSum([...from.map(neg), ...to]);
}

/**
 * A difference as the kernel's csum helpers take it (__wsum): they sum 16-bit words in the host's
 * byte order, and a one's-complement sum of byte-swapped words is the byte-swapped sum (RFC 1071
 * §2(B)), so on a little-endian host the wire value is swapped.
 */
export function hostDiff(wire: number, littleEndian = LITTLE): number {
  return littleEndian ? ((wire & 0xff) << 8) | (wire >> 8) : wire;
}

/**
 * The IPv4 header word of TTL and protocol loses 0x0100 when the program decrements the TTL:
 * ~w + (w − 0x100) ≡ −0x100 ≡ 0xfeff whatever w is.
 */
export const TTL_DECREMENT = 0xfeff;

/** One direction of a session: the datagram arrives as `from → to` and leaves as `newFrom → newTo`. */
export interface Rewrite {
  readonly from: Endpoint;
  readonly to: Endpoint;
  readonly newFrom: Endpoint;
  readonly newTo: Endpoint;
  readonly nexthop: string;
  readonly ifindex: number;
  readonly slot: number;
  readonly up: boolean;
}

/** The two directions of a kernel flow (nft-script.ts's KernelFlow; `listen`: where clients send). */
export function rewrites(
  f: KernelFlow,
  listen: Endpoint,
  ifindexOf: (dev: string) => number,
  slots: { up: number; down: number },
): [Rewrite, Rewrite] {
  const upstream = { address: f.source, port: f.upstreamPort };
  return [
    {
      from: f.client,
      to: listen,
      newFrom: upstream,
      newTo: f.backend,
      nexthop: f.toBackend.via,
      ifindex: ifindexOf(f.toBackend.dev),
      slot: slots.up,
      up: true,
    },
    {
      from: f.backend,
      to: upstream,
      newFrom: listen,
      newTo: f.client,
      nexthop: f.toClient.via,
      ifindex: ifindexOf(f.toClient.dev),
      slot: slots.down,
      up: false,
    },
  ];
}

/** `struct flow_value` of one direction, with its checksum differences computed here, once. */
export function encodeValue(
  r: Rewrite,
  out = new Uint8Array(VALUE_BYTES),
  littleEndian = LITTLE,
): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, VALUE_BYTES);
  putAddr(out, VALUE.saddr, r.newFrom.address);
  putAddr(out, VALUE.daddr, r.newTo.address);
  putPort(out, VALUE.sport, r.newFrom.port);
  putPort(out, VALUE.dport, r.newTo.port);
  const addr = wireDiff(words(r.from.address, r.to.address), words(r.newFrom.address, r.newTo.address));
  const ports =
    r.from.port === r.newFrom.port && r.to.port === r.newTo.port
      ? 0
      : wireDiff([r.from.port, r.to.port], [r.newFrom.port, r.newTo.port]);
  v.setUint32(VALUE.l3Diff, hostDiff(onesSum([addr, TTL_DECREMENT]), littleEndian), littleEndian);
  v.setUint32(VALUE.addrDiff, hostDiff(addr, littleEndian), littleEndian);
  // A difference that folds to 0 (the ports moved by a multiple of 0xffff) changes nothing
  // either: the program skips the helper call for 0.
  v.setUint32(VALUE.portDiff, ports === 0xffff ? 0 : hostDiff(ports, littleEndian), littleEndian);
  putAddr(out, VALUE.nexthop, r.nexthop);
  v.setUint32(VALUE.ifindex, r.ifindex, littleEndian);
  v.setUint32(VALUE.slot, r.slot, littleEndian);
  v.setUint32(VALUE.flags, r.up ? FLOW_UP : 0, littleEndian);
  return out;
}

/** One direction's counter as read from the mapped `ice_counts` array. */
export interface CounterRead {
  packets: number;
  bytes: number;
  /** CLOCK_MONOTONIC ns of the last datagram (0: none), as a double (µs precision is plenty). */
  lastNs: number;
}

/**
 * Reads slot `slot` of the mapped counters (`u32`: a Uint32Array over the mapping). The kernel
 * adds to the 64-bit fields concurrently; each is read high word, low word, high word again until
 * the two high words agree, so a carry between the two reads cannot tear the value.
 */
export function readCounter(
  u32: Uint32Array,
  slot: number,
  out: CounterRead,
  littleEndian = LITTLE,
): CounterRead {
  const base = (slot * COUNTER_BYTES) / 4;
  out.packets = read64(u32, base + COUNTER.packets / 4, littleEndian);
  out.bytes = read64(u32, base + COUNTER.bytes / 4, littleEndian);
  out.lastNs = read64(u32, base + COUNTER.lastNs / 4, littleEndian);
  return out;
}

function read64(u32: Uint32Array, i: number, littleEndian: boolean): number {
  const lo = littleEndian ? i : i + 1;
  const hi = littleEndian ? i + 1 : i;
  for (;;) {
    const h = u32[hi]!;
    const l = u32[lo]!;
    if (u32[hi] === h) return h * 2 ** 32 + l;
  }
}

/** Zeroes a slot before it is handed to a new session (its last owner's counts were read). */
export function clearCounter(u32: Uint32Array, slot: number): void {
  const base = (slot * COUNTER_BYTES) / 4;
  u32.fill(0, base, base + COUNTER_BYTES / 4);
}
