// The kernel path's rewrites leave valid checksums: each flow chain's statements (as nft-script.ts
// writes them) are applied to real IPv4/UDP bytes the way the kernel's nft_payload_set_eval does —
// a raw write stores bytes only; a write of a known field updates the checksums by RFC 1624's
// HC' = ~(~HC + ~m + m') over the bytes written (the IPv4 header checksum for an address, and the
// UDP checksum through the pseudo-header; the UDP checksum for a port) — and the result is checked
// by recomputing both checksums from scratch. The same for a datagram whose UDP checksum the
// kernel still has to complete (CHECKSUM_PARTIAL: the field holds the pseudo-header seed, only
// address writes move it). The namespace suite checks the same with the real kernel.
import { describe, expect, it } from 'vitest';
import { carrierWords, onesSum } from '../../src/fastpath/checksum.ts';
import { addFlowLines, type KernelFlow } from '../../src/fastpath/nft-script.ts';

/** RFC 1071 sum of a byte range, folded (written here again, independent of checksum.ts). */
function sum(b: Uint8Array, from = 0, to = b.length, start = 0): number {
  let s = start;
  for (let i = from; i < to; i += 2) s += (b[i]! << 8) | (i + 1 < to ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
const add = (a: number, b: number): number => {
  const s = a + b;
  return (s & 0xffff) + (s >>> 16);
};
const neg = (a: number): number => ~a & 0xffff;

const ip4 = (a: string): number[] => a.split('.').map(Number);
const u16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;
const put16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v >> 8;
  b[o + 1] = v & 0xff;
};
const addrText = (b: Uint8Array, o: number): string => [...b.subarray(o, o + 4)].join('.');

/** The UDP pseudo-header's sum (RFC 768) for the datagram as it is now. */
function pseudoSum(d: Uint8Array): number {
  const p = new Uint8Array(12);
  p.set(d.subarray(12, 20), 0);
  p[9] = 17;
  p.set(d.subarray(24, 26), 10);
  return sum(p);
}

/** An IPv4/UDP datagram (no options) with valid checksums; `partial`: the UDP field is the seed. */
function datagram(
  src: [string, number],
  dst: [string, number],
  payload: number[],
  partial: boolean,
): Uint8Array {
  const d = new Uint8Array(28 + payload.length);
  d.set([0x45, 0xb8], 0); // DSCP EF, as WebRTC audio may carry
  put16(d, 2, d.length);
  put16(d, 4, 0x1c2d);
  d.set([0x40, 0, 63, 17], 6);
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

/** What the kernel does for one statement of a flow chain (the forms nft-script.ts emits). */
function apply(d: Uint8Array, stmt: string, partial: boolean): void {
  const raw = /^@(nh|th),(\d+),(\d+) set 0x([0-9a-f]+)$/.exec(stmt);
  if (raw) {
    const at = (raw[1] === 'nh' ? 0 : 20) + Number(raw[2]) / 8;
    const hex = raw[4]!.padStart(Number(raw[3]) / 4, '0');
    for (let i = 0; i < hex.length / 2; i++) d[at + i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    return;
  }
  const field = /^(ip|udp) (saddr|daddr|sport|dport) set (\S+)$/.exec(stmt);
  if (!field) throw new Error(`unexpected statement ${stmt}`);
  const at = { saddr: 12, daddr: 16, sport: 20, dport: 22 }[field[2] as 'saddr']!;
  const bytes = field[1] === 'ip' ? ip4(field[3]!) : [Number(field[3]) >> 8, Number(field[3]) & 0xff];
  const before = sum(d, at, at + bytes.length);
  const after = sum(Uint8Array.from(bytes));
  // RFC 1624 eqn. 3 for each checksum the write covers.
  const update = (o: number): void => put16(d, o, neg(add(add(neg(u16(d, o)), neg(before)), after)));
  if (field[1] === 'ip') {
    update(10);
    // The pseudo-header: a seed (CHECKSUM_PARTIAL) moves by the plain difference.
    if (partial) put16(d, 26, add(add(u16(d, 26), neg(before)), after));
    else update(26);
  } else if (!partial) {
    update(26); // a port is not in the pseudo-header: a seed needs nothing
  }
  d.set(bytes, at);
}

/** The device completing a CHECKSUM_PARTIAL datagram: the sum over the UDP part, seed included. */
function complete(d: Uint8Array): void {
  put16(d, 26, neg(sum(d, 20, d.length)) || 0xffff);
}

function valid(d: Uint8Array): { ip: boolean; udp: boolean } {
  return { ip: sum(d, 0, 20) === 0xffff, udp: sum(d, 20, d.length, pseudoSum(d)) === 0xffff };
}

/** The statements between the counter and `fwd` of a chain line. */
function statements(chainLine: string): string[] {
  const body = /\{ (.*); \}$/.exec(chainLine)![1]!;
  return body.split('; ').filter((s) => !s.startsWith('counter') && !s.startsWith('fwd'));
}

const LISTEN = { address: '198.18.0.1', port: 10000 };
const hop = { via: '10.77.0.1', dev: 'eth1' };

/** A small deterministic generator (xorshift32): the same flows on every run. */
function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}
const octet = (r: () => number): number => Math.floor(r() * 256);
const addr = (r: () => number): string => [octet(r), octet(r), octet(r), octet(r)].join('.');

function forward(f: KernelFlow, partial: boolean, payload: number[]) {
  const [up, down] = addFlowLines(f, 1, LISTEN);
  const toBackend = datagram(
    [f.client.address, f.client.port],
    [LISTEN.address, LISTEN.port],
    payload,
    partial,
  );
  const toClient = datagram(
    [f.backend.address, f.backend.port],
    [f.source, f.upstreamPort],
    payload,
    partial,
  );
  for (const s of statements(up!)) apply(toBackend, s, partial);
  for (const s of statements(down!)) apply(toClient, s, partial);
  if (partial) {
    complete(toBackend);
    complete(toClient);
  }
  return { toBackend, toClient, up: up!, down: down! };
}

describe('checksums after the kernel path rewrites', () => {
  for (const partial of [false, true]) {
    it(`2000 random flows, both directions, backends on the listening port and off it${partial ? ' (CHECKSUM_PARTIAL)' : ''}`, () => {
      const r = rng(partial ? 7 : 11);
      for (let i = 0; i < 2000; i++) {
        const f: KernelFlow = {
          client: { address: addr(r), port: 1 + Math.floor(r() * 65535) },
          backend: { address: addr(r), port: i % 2 === 0 ? LISTEN.port : 1 + Math.floor(r() * 65535) },
          upstreamPort: 16384 + Math.floor(r() * 16384),
          source: addr(r),
          toBackend: hop,
          toClient: hop,
        };
        const payload = Array.from({ length: 1 + Math.floor(r() * 60) }, () => octet(r));
        payload[0] = 0x80;
        const { toBackend, toClient } = forward(f, partial, payload);
        // What the backend and the client receive: addressed as Node's sockets would have sent it.
        expect([
          addrText(toBackend, 12),
          u16(toBackend, 20),
          addrText(toBackend, 16),
          u16(toBackend, 22),
        ]).toEqual([f.source, f.upstreamPort, f.backend.address, f.backend.port]);
        expect([
          addrText(toClient, 12),
          u16(toClient, 20),
          addrText(toClient, 16),
          u16(toClient, 22),
        ]).toEqual([LISTEN.address, LISTEN.port, f.client.address, f.client.port]);
        expect(valid(toBackend)).toEqual({ ip: true, udp: true });
        expect(valid(toClient)).toEqual({ ip: true, udp: true });
      }
    });
  }

  it('one raw write and one checksummed write per changing pair (two checksummed writes per direction at most)', () => {
    const f: KernelFlow = {
      client: { address: '203.0.113.7', port: 40000 },
      backend: { address: '10.77.2.11', port: 10000 },
      upstreamPort: 16384,
      source: '10.77.2.1',
      toBackend: hop,
      toClient: hop,
    };
    const { up, down } = forward(f, false, [0x80, 1, 2, 3]);
    expect(statements(up)).toHaveLength(3);
    expect(statements(down)).toHaveLength(3);
    const other = forward({ ...f, backend: { ...f.backend, port: 20000 } }, false, [0x80]);
    expect(statements(other.up).map((s) => s.split(' ')[0])).toEqual(['@nh,96,64', 'ip', '@th,0,32', 'udp']);
  });

  it('the check can fail: the same writes without the carrier (plain raw values) leave both checksums wrong', () => {
    const d = datagram(['203.0.113.7', 40000], [LISTEN.address, LISTEN.port], [0x80, 9, 9], false);
    apply(d, '@nh,96,64 set 0x0a4d02010a4d020b', false); // 10.77.2.1 → 10.77.2.11, no checksum update
    expect(valid(d)).toEqual({ ip: false, udp: false });
  });

  it('carrierWords: first + second − first′, folded (RFC 1071 arithmetic)', () => {
    // 0x0001 + 0x0002 − 0x0004 = −1 ≡ 0xfffe in one's complement.
    expect(carrierWords([0x0001], [0x0002], [0x0004])).toEqual([0xfffe]);
    expect(carrierWords([0xc612, 0x0002], [0xc612, 0x0001], [0x0a4d, 0x0201])).toEqual([
      onesSum([0xc612, 0x0002, 0xc612, 0x0001, ~0x0a4d & 0xffff, ~0x0201 & 0xffff]),
      0,
    ]);
    expect(onesSum([0xffff, 0x0001])).toBe(0x0001);
  });
});
